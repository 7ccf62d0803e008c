"""The SOP classes and transfer syntaxes the node speaks (PS3.4 Annex B, PS3.5 Section 10)."""

from __future__ import annotations

from pydicom import uid

IMAGE_CLASSES = frozenset(
    {
        uid.CTImageStorage,
        uid.EnhancedCTImageStorage,
        uid.LegacyConvertedEnhancedCTImageStorage,
        uid.MRImageStorage,
        uid.EnhancedMRImageStorage,
        uid.LegacyConvertedEnhancedMRImageStorage,
        uid.ComputedRadiographyImageStorage,
        uid.DigitalXRayImageStorageForPresentation,
        uid.DigitalXRayImageStorageForProcessing,
        uid.SecondaryCaptureImageStorage,
        uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    }
)
RESULT_CLASSES = frozenset(
    {
        uid.SegmentationStorage,
        uid.Comprehensive3DSRStorage,
        uid.ComprehensiveSRStorage,
        uid.EnhancedSRStorage,
        uid.BasicTextSRStorage,
        uid.EncapsulatedPDFStorage,
    }
)
STORAGE_CLASSES = IMAGE_CLASSES | RESULT_CLASSES

TRANSFER_SYNTAXES = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.RLELossless,
)
