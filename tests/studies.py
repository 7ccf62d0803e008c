"""Studies for routing tests: index-like rows from header values, and Dixon MR files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from myonode.core.volume import Geometry
from myonode.dicom.uids import derived_uid

STUDY = "1.2.826.0.1.3680043.10.543.1"
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def series_rows(
    name: str,
    count: int = 20,
    spacing_mm: float = 3.0,
    orientation: Sequence[float] = AXIAL,
    sop_class: str = CTImageStorage,
    study_uid: str = STUDY,
    z0: float = 0.0,
    **tags: Any,
) -> list[dict[str, Any]]:
    """Index rows of one axial series: per-instance tags as `ingest` would store them."""
    normal = np.cross(orientation[:3], orientation[3:])
    base = {
        "Modality": "CT" if sop_class == CTImageStorage else "MR",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "ImageOrientationPatient": list(orientation),
        "PixelSpacing": [0.8, 0.8],
        "Rows": 512,
        "Columns": 512,
        "SliceThickness": spacing_mm,
        "ConvolutionKernel": "B30f",
        "Manufacturer": "SIEMENS",
        "BodyPartExamined": "ABDOMEN",
        "SeriesDescription": name,
        "SeriesNumber": 1,
        "SeriesTime": "101500",
        "FrameOfReferenceUID": "1.2.3.4",
        **tags,
    }
    series_uid = derived_uid("routing-test", name)
    rows = []
    for k in range(count):
        position = (np.array([-200.0, -200.0, 0.0]) + normal * (z0 + k * spacing_mm)).tolist()
        rows.append(
            {
                "sop_uid": derived_uid("routing-test", name, str(k)),
                "series_uid": series_uid,
                "study_uid": study_uid,
                "sop_class_uid": sop_class,
                "sha256": f"{name}-{k}",
                "tags": {**base, "ImagePositionPatient": position, "InstanceNumber": k + 1},
            }
        )
    return rows


def write_mr_series(
    array: np.ndarray,
    geometry: Geometry,
    out_dir: Path,
    name: str,
    study_uid: str,
    number: int,
    description: str,
    image_type: Sequence[str],
    series_time: str,
) -> list[Path]:
    """Write `array` ([k, j, i], non-negative) as single-frame MR Image Storage files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = derived_uid("dixon-test", study_uid, name)
    stored = np.clip(np.rint(array), 0, 65535).astype(np.uint16)
    paths = []
    for k in range(array.shape[0]):
        sop_uid = derived_uid("dixon-test", study_uid, name, str(k))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = derived_uid("dixon-test", study_uid, "frame")
        ds.Modality, ds.Manufacturer = "MR", "SIEMENS"
        ds.PatientID, ds.PatientName = "DIXON-1", "Dixon^Phantom"
        ds.StudyDate = ds.SeriesDate = "20260115"
        ds.SeriesTime = series_time
        ds.SeriesNumber, ds.InstanceNumber = number, k + 1
        ds.SeriesDescription = description
        ds.ImageType = list(image_type)
        ds.BodyPartExamined = "PELVIS"
        ds.SliceThickness = f"{geometry.spacing[2]:g}"
        position = geometry.index_to_lps(np.array([0, 0, k]))[0]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [
            f"{v:.6f}" for v in (*geometry.directions[:, 0], *geometry.directions[:, 1])
        ]
        ds.PixelSpacing = [f"{geometry.spacing[1]:g}", f"{geometry.spacing[0]:g}"]
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = stored[k].tobytes()
        path = out_dir / f"MR{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
