"""Generated CT data: an analytic abdomen phantom and a writer for CT Image Storage series;
and a writer for a frontal chest radiograph (DX for presentation).

Used by `myonode demo` when no real CT is at hand and by tests that must not depend on
shared data. The writer also turns a real NIfTI volume into a DICOM series.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
)

from myonode.core.volume import Geometry
from myonode.dicom.uids import derived_uid

RESCALE_INTERCEPT = -1024


@dataclass(frozen=True)
class Patient:
    patient_id: str = "MYO-PHANTOM-1"
    name: str = "Phantom^Abdomen"
    sex: str | None = "F"
    age_years: int | None = 63
    height_m: float | None = 1.65
    weight_kg: float | None = 68.0


def abdomen_phantom(
    shape: tuple[int, int, int] = (24, 160, 160), pixel_mm: float = 2.0, slice_mm: float = 3.0
) -> tuple[np.ndarray, Geometry]:
    """An elliptical abdomen in HU: fat, a muscle wall, paraspinal and psoas muscles, a
    liver-like organ and a vertebral body. Returns (array [k, j, i], LPS geometry)."""
    nk, nj, ni = shape
    j, i = np.mgrid[0:nj, 0:ni].astype(float)
    cj, ci = nj / 2, ni / 2
    r = lambda a, b, oj=0.0, oi=0.0: ((j - cj - oj) / a) ** 2 + ((i - ci - oi) / b) ** 2  # noqa: E731
    body = r(nj * 0.36, ni * 0.45) <= 1
    inner = r(nj * 0.33, ni * 0.42) <= 1
    cavity = r(nj * 0.28, ni * 0.37) <= 1
    slice_hu = np.full((nj, ni), -1000.0)
    slice_hu[body] = -100.0  # subcutaneous fat
    slice_hu[inner & ~cavity] = 45.0  # abdominal wall muscle
    slice_hu[cavity] = -80.0  # visceral fat
    liver = r(nj * 0.14, ni * 0.15, -nj * 0.05, -ni * 0.18) <= 1
    slice_hu[liver] = 60.0
    vertebra = r(nj * 0.05, ni * 0.05, nj * 0.12, 0) <= 1
    for side in (-1, 1):
        slice_hu[r(nj * 0.06, ni * 0.05, nj * 0.2, side * ni * 0.06) <= 1] = 50.0  # erector spinae
        slice_hu[r(nj * 0.05, ni * 0.035, nj * 0.1, side * ni * 0.1) <= 1] = 42.0  # psoas
    slice_hu[vertebra] = 400.0
    rng = np.random.default_rng(0)
    array = np.repeat(slice_hu[np.newaxis], nk, axis=0)
    array += rng.normal(0, 8, size=array.shape)
    array[:, ~body] = -1000.0
    geometry = Geometry(
        origin=np.array([-(ni / 2) * pixel_mm, -(nj / 2) * pixel_mm, -nk * slice_mm]),
        directions=np.eye(3),
        spacing=np.array([pixel_mm, pixel_mm, slice_mm]),
    )
    return array.astype(np.float32), geometry


def _new_instance(
    sop_class: str, sop_uid: str, modality: str, patient: Patient, today: dt.date
) -> Dataset:
    """File meta, SOP identity, dates and the patient module every generated instance has."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = today.strftime("%Y%m%d")
    ds.Modality = modality
    ds.Manufacturer = "myonode synthetic"
    ds.ReferringPhysicianName = ""
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientSex = patient.sex or ""
    ds.PatientBirthDate = ""
    if patient.age_years is not None:
        ds.PatientAge = f"{patient.age_years:03d}Y"
    if patient.height_m is not None:
        ds.PatientSize = f"{patient.height_m:.2f}"
    if patient.weight_kg is not None:
        ds.PatientWeight = f"{patient.weight_kg:.1f}"
    return ds


def write_ct_series(
    hu: np.ndarray,
    geometry: Geometry,
    out_dir: Path,
    patient: Patient = Patient(),
    seed: str = "phantom",
    extra: Mapping[str, object] | None = None,
) -> list[Path]:
    """Write `hu` ([k, j, i]) as CT Image Storage files with valid, seed-derived UIDs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid = derived_uid(seed, "study")
    series_uid = derived_uid(seed, "series")
    frame_uid = derived_uid(seed, "frame")
    today = dt.date(2026, 1, 15)
    row_dir, col_dir = geometry.directions[:, 0], geometry.directions[:, 1]
    stored = np.clip(np.rint(hu) - RESCALE_INTERCEPT, 0, 4095).astype(np.uint16)
    paths = []
    for k in range(hu.shape[0]):
        sop_uid = derived_uid(seed, "instance", str(k))
        ds = _new_instance(CTImageStorage, sop_uid, "CT", patient, today)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
        ds.AccessionNumber = "MYO0001"
        ds.StudyDescription = "CT ABDOMEN"
        ds.SeriesDescription = "Abdomen 3.0 B30f"
        if patient.age_years is not None:
            ds.PatientBirthDate = f"{today.year - patient.age_years}0101"
        ds.BodyPartExamined = "ABDOMEN"
        ds.SliceThickness = f"{geometry.spacing[2]:g}"
        ds.KVP = "120"
        ds.ConvolutionKernel = "B30f"
        ds.PatientPosition = "FFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 3
        ds.InstanceNumber = k + 1
        position = geometry.index_to_lps(np.array([0, 0, k]))[0]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{position[2]:.4f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.PixelSpacing = [f"{geometry.spacing[1]:g}", f"{geometry.spacing[0]:g}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = str(RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)
        ds.PixelData = stored[k].tobytes()
        path = out_dir / f"CT{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_radiograph(
    image: np.ndarray,
    path: Path,
    patient: Patient = Patient(),
    seed: str = "radiograph",
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Write `image` ([rows, columns], 0..4095, bright = attenuating) as a PA chest DX for
    presentation (MONOCHROME2, 0.5 mm detector pixels) with seed-derived UIDs."""
    today = dt.date(2026, 1, 15)
    sop_uid = derived_uid(seed, "instance")
    ds = _new_instance(DigitalXRayImageStorageForPresentation, sop_uid, "DX", patient, today)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "093000"
    ds.AccessionNumber = "MYOCXR1"
    ds.StudyDescription = "XR CHEST"
    ds.SeriesDescription = "Thorax PA"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.StudyInstanceUID = derived_uid(seed, "study")
    ds.SeriesInstanceUID = derived_uid(seed, "series")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.ImagerPixelSpacing = ["0.5", "0.5"]
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = np.clip(np.rint(image), 0, 4095).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _with_spine_and_aorta(hu: np.ndarray, pixel_mm: float, aorta_hu: float) -> np.ndarray:
    """The phantom with a corticated vertebra (rim 700 HU, marrow 220 HU) and an aorta of
    `aorta_hu` just anterior to it, so image contrast evidence has something to find."""
    nk, nj, ni = hu.shape
    j, i = np.mgrid[0:nj, 0:ni].astype(float)
    cj, ci = nj / 2 + nj * 0.12, ni / 2
    radius = nj * 0.05
    distance = np.hypot(j - cj, i - ci)
    out = hu.copy()
    out[:, distance <= radius] = 700.0
    out[:, distance <= radius - 1.5] = 220.0
    aorta_r = 11.0 / pixel_mm
    aorta = np.hypot(j - (cj - radius - aorta_r - 2), i - (ci + 0.4 * aorta_r)) <= aorta_r
    noise = np.random.default_rng(1).normal(0, 8, size=(nk, int(aorta.sum())))
    out[:, aorta] = aorta_hu + noise
    return out


def write_mixed_ct_study(out_dir: Path, seed: str = "mixed-ct") -> dict[str, list[Path]]:
    """A CT study as scanners send it: a scout, a 1 mm and a sharp-kernel reconstruction, a
    3 mm unenhanced and a 3 mm portal-venous series (aorta 40 vs 190 HU). Used to show and
    test series selection; returns the files by series name."""
    pixel_mm, size, extent_mm = 3.0, 128, 45.0
    study = {
        "StudyInstanceUID": derived_uid(seed, "study"),
        "FrameOfReferenceUID": derived_uid(seed, "frame"),
        "AccessionNumber": "MYOMIXED1",
        "StudyDescription": "CT ABDOMEN PELVIS WITH AND WITHOUT CONTRAST",
    }
    patient = Patient(patient_id="MYO-MIXED-1", name="Phantom^Mixed")
    series: dict[str, list[Path]] = {}

    def axial(name: str, number: int, slice_mm: float, aorta_hu: float, **tags: object) -> None:
        nk = round(extent_mm / slice_mm)
        hu, geometry = abdomen_phantom((nk, size, size), pixel_mm=pixel_mm, slice_mm=slice_mm)
        extra = {**study, "SeriesNumber": number, "SeriesTime": f"10{number:02d}00", **tags}
        extra["SeriesInstanceUID"] = derived_uid(seed, name)
        series[name] = write_ct_series(
            _with_spine_and_aorta(hu, pixel_mm, aorta_hu),
            geometry,
            out_dir / name,
            patient,
            seed=f"{seed}-{name}",
            extra=extra,
        )

    scout_geometry = Geometry(
        origin=np.array([-size / 2 * pixel_mm, 0.0, 0.0]),
        directions=np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]),
        spacing=np.array([pixel_mm, pixel_mm, 1.0]),
    )
    scout = np.full((1, size, size), -1000.0, dtype=np.float32)
    scout[0, :, size // 6 : -size // 6] = 0.0
    series["scout"] = write_ct_series(
        scout,
        scout_geometry,
        out_dir / "scout",
        patient,
        seed=f"{seed}-scout",
        extra={
            **study,
            "SeriesInstanceUID": derived_uid(seed, "scout"),
            "SeriesNumber": 1,
            "SeriesDescription": "Topogram 0.6 T20f",
            "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"],
            "ConvolutionKernel": "T20f",
            "SeriesTime": "100100",
        },
    )
    axial("thin", 2, 1.0, 40.0, SeriesDescription="Abdomen nativ 1.0 B30f")
    axial(
        "sharp", 3, 3.0, 40.0, SeriesDescription="Abdomen nativ 3.0 B70f", ConvolutionKernel="B70f"
    )
    axial("unenhanced", 4, 3.0, 40.0, SeriesDescription="Abdomen nativ 3.0 B30f")
    axial(
        "portal",
        5,
        3.0,
        190.0,
        SeriesDescription="Abdomen PV 3.0 B30f",
        ContrastBolusAgent="IOMEPROL 350",
        ContrastBolusRoute="IV",
        ContrastBolusVolume="90",
        ContrastBolusStartTime="100530",
    )
    return series
