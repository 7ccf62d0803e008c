"""What routing knows about one series, derived from the indexed headers of all its instances.

Every field is computed from header values only (no pixels), so a decision can be explained
and tested without opening image files. Contradictory or missing geometry is collected in
`problems`: such a series is recorded as *not routed* with those reasons, never guessed at.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import uid

from myonode.dicom import dixon_channel, radiograph, sop
from myonode.route import kernels

# ImageOrientationPatient values may differ by rounding only; beyond this they differ.
ORIENTATION_TOLERANCE = 1e-3
# Slice gaps may differ by this much (mm) and still count as one regular spacing.
SPACING_TOLERANCE_MM = 0.05
RADIOGRAPH_CLASSES = frozenset(
    {
        uid.ComputedRadiographyImageStorage,
        uid.DigitalXRayImageStorageForPresentation,
        uid.DigitalXRayImageStorageForProcessing,
        uid.SecondaryCaptureImageStorage,
    }
)
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "RG", "PX"})


def _float(value: Any) -> float | None:
    try:
        result = float(value[0] if isinstance(value, list) else value)
    except (TypeError, ValueError, IndexError):
        return None
    return result if np.isfinite(result) else None


def _floats(value: Any, count: int) -> np.ndarray | None:
    if not isinstance(value, list) or len(value) != count:
        return None
    try:
        array = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return array if np.all(np.isfinite(array)) else None


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


@dataclass
class SeriesInfo:
    """A routing unit: one series (or, for radiographs, one image of a series)."""

    series_uid: str
    study_uid: str
    sop_class_uid: str
    modality: str
    tags: dict[str, Any]
    sop_uids: list[str]
    paths: list[Path]
    input_digest: str
    series_number: int | None = None
    description: str = ""
    image_type: list[str] = field(default_factory=list)
    plane: str = "unknown"
    obliquity_deg: float | None = None
    normal: tuple[float, float, float] | None = None
    slice_thickness_mm: float | None = None
    slice_spacing_mm: float | None = None
    coverage_mm: float | None = None
    z_range_mm: tuple[float, float] | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    fov_mm: float | None = None
    gantry_tilt_deg: float | None = None
    kernel: str = ""
    kernel_class: str = "unknown"
    kernel_evidence: str = ""
    dixon_channel: str | None = None
    dixon_evidence: list[str] = field(default_factory=list)
    view: str = "unknown"
    view_evidence: list[str] = field(default_factory=list)
    spacing_source: str | None = None
    multiframe: bool = False
    frame_count: int | None = None  # an Enhanced image's frames: the images routing counts
    problems: list[str] = field(default_factory=list)

    @property
    def instance_count(self) -> int:
        """Images in the series: instances, or the frames of one Enhanced image."""
        return self.frame_count or len(self.sop_uids)

    @property
    def is_radiograph(self) -> bool:
        return self.modality in RADIOGRAPH_MODALITIES or (
            self.sop_class_uid in RADIOGRAPH_CLASSES and self.modality not in ("CT", "MR")
        )

    @property
    def is_result(self) -> bool:
        return self.sop_class_uid in sop.RESULT_CLASSES

    @property
    def label(self) -> str:
        """How tables name the unit: series number and description."""
        number = "?" if self.series_number is None else str(self.series_number)
        text = f"#{number} {self.description}".strip()
        if self.is_radiograph and self.instance_count == 1 and self.tags.get("InstanceNumber"):
            text += f" (image {self.tags['InstanceNumber']})"
        return text

    @property
    def series_time(self) -> str:
        return _text(self.tags.get("SeriesTime") or self.tags.get("AcquisitionTime"))

    @property
    def acquired(self) -> float:
        """SeriesDate + SeriesTime as a sortable number (HHMMSS padded); 0 when unknown."""
        date = "".join(ch for ch in _text(self.tags.get("SeriesDate")) if ch.isdigit())[:8]
        time = self.series_time.split(".")[0]
        time = "".join(ch for ch in time if ch.isdigit())[:6].ljust(6, "0") if time else ""
        digits = (date.rjust(8, "0") if date else "0" * 8) + (time or "000000")
        return float(digits)

    def summary(self) -> dict[str, Any]:
        """The derived facts, as JSON, for decision details and `explain --json`."""
        return {
            "series_uid": self.series_uid,
            "sop_uids": self.sop_uids if self.is_radiograph else None,
            "series_number": self.series_number,
            "description": self.description,
            "modality": self.modality,
            "sop_class_uid": self.sop_class_uid,
            "instances": self.instance_count,
            "image_type": self.image_type,
            "orientation": self.plane,
            "obliquity_deg": _round(self.obliquity_deg),
            "slice_thickness_mm": _round(self.slice_thickness_mm),
            "slice_spacing_mm": _round(self.slice_spacing_mm),
            "coverage_mm": _round(self.coverage_mm),
            "pixel_spacing_mm": [_round(v) for v in self.pixel_spacing_mm]
            if self.pixel_spacing_mm
            else None,
            "pixel_spacing_source": self.spacing_source,
            "fov_mm": _round(self.fov_mm),
            "gantry_tilt_deg": self.gantry_tilt_deg,
            "kernel": self.kernel or None,
            "kernel_class": self.kernel_class,
            "dixon_channel": self.dixon_channel,
            "dixon_evidence": self.dixon_evidence,
            "view": self.view if self.is_radiograph else None,
            "view_evidence": self.view_evidence if self.is_radiograph else None,
            "series_time": self.series_time or None,
            "problems": self.problems,
        }


def _image_type(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value] if value else []
    return [str(v).strip().upper() for v in values]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def plane_of(orientation: np.ndarray) -> tuple[str, float, np.ndarray]:
    """(plane, degrees between the slice normal and the nearest patient axis, normal)."""
    normal = np.cross(orientation[:3], orientation[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        return "invalid", 90.0, normal
    normal = normal / norm
    axis = int(np.argmax(np.abs(normal)))
    angle = float(np.degrees(np.arccos(min(1.0, abs(normal[axis])))))
    return ("sagittal", "coronal", "axial")[axis], angle, normal


def _digest(rows: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(
        "".join(f"{r['sop_uid']}:{r.get('sha256', '')};" for r in rows).encode()
    ).hexdigest()


def _geometry(info: SeriesInfo, tags_list: list[dict[str, Any]]) -> None:
    """Orientation, spacing and extent of a slice series; contradictions go to `problems`."""
    orientations = [_floats(t.get("ImageOrientationPatient"), 6) for t in tags_list]
    positions = [_floats(t.get("ImagePositionPatient"), 3) for t in tags_list]
    spacings = [_floats(t.get("PixelSpacing"), 2) for t in tags_list]
    if any(o is None for o in orientations):
        info.problems.append("ImageOrientationPatient missing or malformed")
    if any(p is None for p in positions):
        info.problems.append("ImagePositionPatient missing or malformed")
    if any(s is None for s in spacings):
        info.problems.append("PixelSpacing missing or malformed")
    elif any(np.any(s <= 0) for s in spacings):  # type: ignore[operator]
        info.problems.append("PixelSpacing is zero or negative")
    if len({(t.get("Rows"), t.get("Columns")) for t in tags_list}) > 1:
        info.problems.append("instances have different matrix sizes (Rows/Columns)")
    if orientations[0] is not None:
        info.plane, info.obliquity_deg, normal = plane_of(orientations[0])
        info.normal = tuple(float(v) for v in normal)  # type: ignore[assignment]
        if info.plane == "invalid":
            info.problems.append("ImageOrientationPatient row and column are parallel")
    if all(o is not None for o in orientations) and any(
        np.max(np.abs(o - orientations[0])) > ORIENTATION_TOLERANCE
        for o in orientations  # type: ignore[operator]
    ):
        info.problems.append("instances have different ImageOrientationPatient")
    if all(s is not None for s in spacings):
        if any(np.max(np.abs(s - spacings[0])) > 1e-4 for s in spacings):  # type: ignore[operator]
            info.problems.append("instances have different PixelSpacing")
        if np.all(spacings[0] > 0):  # type: ignore[operator]
            info.pixel_spacing_mm = (float(spacings[0][0]), float(spacings[0][1]))  # type: ignore[index]
            rows, columns = _float(info.tags.get("Rows")), _float(info.tags.get("Columns"))
            if rows and columns:
                info.fov_mm = max(
                    rows * info.pixel_spacing_mm[0], columns * info.pixel_spacing_mm[1]
                )
    if info.normal is None or any(p is None for p in positions) or info.plane == "invalid":
        return
    normal = np.asarray(info.normal)
    stacked = np.stack(positions)  # type: ignore[arg-type]
    along = np.sort(stacked @ normal)
    patient_z = stacked[:, 2]
    info.z_range_mm = (float(patient_z.min()), float(patient_z.max()))
    if len(along) < 2:
        info.coverage_mm = info.slice_thickness_mm or 0.0
        return
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        info.problems.append(
            f"duplicated slice positions ({int(np.sum(gaps < 1e-3))} repeated positions)"
        )
        gaps = gaps[gaps >= 1e-3]
    if len(gaps):
        info.slice_spacing_mm = float(np.median(gaps))
        if np.max(np.abs(gaps - info.slice_spacing_mm)) > SPACING_TOLERANCE_MM:
            info.problems.append(
                f"non-uniform slice spacing ({gaps.min():.2f}-{gaps.max():.2f} mm)"
            )
    info.coverage_mm = float(along[-1] - along[0])
    order = np.argsort(stacked @ normal)
    steps = np.diff(stacked[order], axis=0)
    lengths = np.linalg.norm(steps, axis=1)
    moving = lengths > 1e-3
    if np.any(moving):
        cosines = np.abs(steps[moving] @ normal) / lengths[moving]
        shear = float(np.degrees(np.arccos(min(1.0, float(cosines.min())))))
        if shear > 1.0:
            info.problems.append(
                f"slices are offset {shear:.1f}° from the slice normal (gantry tilt or shear): "
                "not a regular volume"
            )


# CT stored values become HU through RescaleSlope and RescaleIntercept; outside these limits a
# header is broken or hostile, and every attenuation measured from it would be wrong.
CT_RESCALE_SLOPE = (1e-3, 100.0)
CT_RESCALE_INTERCEPT = (-10000.0, 10000.0)


def _implausible_rescale(tags_list: list[dict[str, Any]]) -> list[str]:
    """Why a CT series' rescale values cannot be trusted (none when they can or are absent)."""
    problems = []
    for keyword, (low, high) in (
        ("RescaleSlope", CT_RESCALE_SLOPE),
        ("RescaleIntercept", CT_RESCALE_INTERCEPT),
    ):
        present = [t[keyword] for t in tags_list if t.get(keyword) not in (None, "")]
        values = [_float(v) for v in present]
        bad = sorted({str(v) for v, f in zip(present, values, strict=True) if f is None})
        bad += sorted({f"{f:g}" for f in values if f is not None and not low <= f <= high})
        if bad:
            problems.append(
                f"implausible {keyword} {', '.join(bad[:3])} (plausible for CT: {low:g} to "
                f"{high:g}): HU would be wrong"
            )
    return problems


def describe(rows: Sequence[Mapping[str, Any]]) -> SeriesInfo:
    """One routing unit from index rows (`sop_uid`, `series_uid`, `study_uid`,
    `sop_class_uid`, `tags`, optional `sha256` and `path`) of the same series."""
    rows = sorted(rows, key=lambda r: r["sop_uid"])
    tags_list = [json.loads(r["tags"]) if isinstance(r["tags"], str) else r["tags"] for r in rows]
    first = tags_list[0]
    number = _float(first.get("SeriesNumber"))
    info = SeriesInfo(
        series_uid=rows[0]["series_uid"],
        study_uid=rows[0]["study_uid"],
        sop_class_uid=rows[0]["sop_class_uid"],
        modality=_text(first.get("Modality")).upper(),
        tags=first,
        sop_uids=[r["sop_uid"] for r in rows],
        paths=[Path(r["path"]) for r in rows if r.get("path")],
        input_digest=_digest(rows),
        series_number=None if number is None else int(number),
        description=_text(first.get("SeriesDescription")),
        image_type=_image_type(first.get("ImageType")),
    )
    empty = [
        name
        for name, value in (
            ("SOPClassUID", info.sop_class_uid),
            ("SOPInstanceUID", "" if info.sop_uids[0].startswith("<no UID") else "x"),
            ("StudyInstanceUID", info.study_uid),
            ("SeriesInstanceUID", info.series_uid),
        )
        if not str(value).strip()
    ]
    if empty:
        info.problems.append(
            f"empty {', '.join(empty)}: the node refuses such instances (0xA900) and never "
            "invents UIDs"
        )
    if len({r["sop_class_uid"] for r in rows}) > 1:
        info.problems.append("instances of different SOP classes share this Series Instance UID")
    for keyword, what in (
        ("Modality", "modalities"),
        ("FrameOfReferenceUID", "frames of reference"),
    ):
        if len({_text(t.get(keyword)) for t in tags_list}) > 1:
            info.problems.append(f"instances with different {what} share this Series Instance UID")
    if len({r["study_uid"] for r in rows}) > 1:
        info.problems.append("this Series Instance UID appears in more than one study")
    if info.modality == "CT":
        info.problems += _implausible_rescale(tags_list)
    info.multiframe = "FramePositions" in first or any(
        (_float(t.get("NumberOfFrames")) or 1) > 1 for t in tags_list
    )
    info.slice_thickness_mm = _float(first.get("SliceThickness"))
    info.gantry_tilt_deg = _float(first.get("GantryDetectorTilt"))
    info.kernel = _text(first.get("ConvolutionKernel")).split("\\")[0].strip()
    info.kernel_class, info.kernel_evidence = kernels.classify(
        info.kernel, _text(first.get("Manufacturer"))
    )
    if info.is_result:
        return info
    if info.is_radiograph:
        info.view, info.view_evidence = radiograph.view_position(first)
        spacing, info.spacing_source = radiograph.pixel_spacing(first)
        info.pixel_spacing_mm = spacing
        return info
    if info.multiframe:
        if len(tags_list) > 1:
            info.problems.append(
                "several multi-frame images in one series: this node assembles one Enhanced "
                "image, or single-frame images, per series"
            )
            return info
        if "FramePositions" not in first:
            info.problems.append(
                "multi-frame image whose functional groups do not give every frame a "
                "position, orientation and pixel spacing: no volume can be assembled"
            )
            return info
        # One Enhanced image: its frames are the slices routing judges.
        info.frame_count = len(first["FramePositions"])
        tags_list = [{**first, "ImagePositionPatient": p} for p in first["FramePositions"]]
    # An Enhanced MR says per frame what it is (Frame Type, e.g. a Dixon channel).
    frame_type = _image_type(first["FrameType"]) if "FrameType" in first else info.image_type
    info.dixon_channel, info.dixon_evidence = dixon_channel.channel(
        frame_type, info.description, _text(first.get("ProtocolName")), info.tags
    )
    _geometry(info, tags_list)
    return info


def describe_study(rows: Sequence[Mapping[str, Any]]) -> list[SeriesInfo]:
    """Routing units of a study: one per series, one per image for radiograph series."""
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["series_uid"]].append(row)
    units = []
    for series_rows in grouped.values():
        info = describe(series_rows)
        if info.is_radiograph and len(series_rows) > 1:
            units += [describe([row]) for row in series_rows]
        else:
            units.append(info)
    return sorted(
        units,
        key=lambda u: (
            u.series_number if u.series_number is not None else 1 << 30,
            u.series_uid,
            u.sop_uids[0],
        ),
    )
