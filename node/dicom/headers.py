"""Header values as plain JSON: what the index stores and routing reads.

Multi-values become lists, sequence items their plain (non-sequence) values, bytes nothing, so
routing rules and the index see the same values whatever the source's VRs.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from myonode.dicom import multiframe

# Tags routing and measurement read from the index without opening files again.
ROUTING_TAGS = (
    "Modality",
    "SOPClassUID",
    "ImageType",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "ConvolutionKernel",
    "BodyPartExamined",
    "SeriesDescription",
    "ProtocolName",
    "ContrastBolusAgent",
    "ContrastBolusRoute",
    "ContrastBolusVolume",
    "ContrastBolusStartTime",
    "GantryDetectorTilt",
    "InstanceNumber",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionTime",
    "ViewPosition",
    "PhotometricInterpretation",
    "Manufacturer",
    "ManufacturerModelName",
    "ScanOptions",
    "SequenceName",
    "ScanningSequence",
    "EchoTime",
    "RepetitionTime",
    "MagneticFieldStrength",
    "ReconstructionDiameter",
    "FrameOfReferenceUID",
    "PatientPosition",
    "BitsStored",
    "SamplesPerPixel",
    "PixelRepresentation",
    "ContrastBolusIngredient",
    "ImageComments",
    "DiffusionBValue",
    "RescaleSlope",
    "RescaleIntercept",
    "AcquisitionNumber",
    "AcquisitionDate",
    "EchoNumbers",
    "PatientOrientation",
    "ViewCodeSequence",
    "EstimatedRadiographicMagnificationFactor",
    "PresentationIntentType",
    "FieldOfViewDimensions",
)


def json_value(value: Any) -> Any:
    """A DICOM element value as plain JSON (numbers stay numbers, multi-values become lists)."""
    if isinstance(value, MultiValue | list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, Dataset):  # a sequence item: its code triplet or other plain values
        return {
            element.keyword: json_value(element.value)
            for element in value
            if element.keyword and element.VR != "SQ"
        }
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        if isinstance(value, float):
            return float(value)
        if isinstance(value, int):
            return int(value)
        return str(value)
    if isinstance(value, bytes) or value is None:
        return None
    return str(value)


def header_values(ds: Dataset, keywords: tuple[str, ...]) -> dict[str, Any]:
    values = {}
    for keyword in keywords:
        element = ds.get(keyword)
        if element not in (None, ""):
            converted = json_value(element)
            if converted not in (None, "", []):
                values[keyword] = converted
    return values


def routing_tags(ds: Dataset) -> dict[str, Any]:
    """What routing knows of an instance: `ROUTING_TAGS`, and for an Enhanced (multi-frame)
    image the geometry its functional groups hold (`multiframe.routing_values`)."""
    values = header_values(ds, ROUTING_TAGS)
    if multiframe.is_multiframe(ds):
        values.update(multiframe.routing_values(ds))
    return values
