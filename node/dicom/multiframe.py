"""Per-frame geometry of Enhanced and Legacy Converted Enhanced CT/MR images (PS3.3 C.7.6.16).

Such an object holds a whole series as frames; where a single-frame image has Image Position,
Image Orientation, Pixel Spacing and the rescale in its top level, these carry them in the
Shared and Per-frame Functional Groups. Routing reads the same facts from here as the volume
loader does, so a series is judged by the geometry it will be assembled with.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset


class FunctionalGroupError(ValueError):
    """The functional groups are missing or inconsistent; the message says which."""


@dataclass(frozen=True)
class Frame:
    number: int  # 1-based, as Referenced Frame Number counts
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    slice_thickness: float | None
    slope: float
    intercept: float
    frame_type: tuple[str, ...]


def is_multiframe(ds: Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds


def _group(frame: Dataset, shared: Dataset | None, keyword: str) -> Dataset | None:
    """A functional group macro of one frame: its own, else the shared one."""
    for source in (frame, shared):
        if source is not None and keyword in source and len(source[keyword].value):
            return source[keyword].value[0]
    return None


def frames(ds: Dataset) -> list[Frame]:
    """Every frame's geometry and rescale, in frame order; FunctionalGroupError if the
    functional groups do not give each frame a position, orientation and pixel spacing, or
    disagree with Number of Frames."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    count = int(ds.get("NumberOfFrames", 0) or 0)
    if count < 1 or len(per_frame) != count:
        raise FunctionalGroupError(
            f"Number of Frames is {count} but there are {len(per_frame)} per-frame functional "
            "groups"
        )
    shared_sequence = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_sequence[0] if len(shared_sequence) else None
    result = []
    for number, frame in enumerate(per_frame, start=1):
        position = _group(frame, shared, "PlanePositionSequence")
        orientation = _group(frame, shared, "PlaneOrientationSequence")
        measures = _group(frame, shared, "PixelMeasuresSequence")
        if position is None or "ImagePositionPatient" not in position:
            raise FunctionalGroupError(f"frame {number} has no Plane Position (Patient)")
        if orientation is None or "ImageOrientationPatient" not in orientation:
            raise FunctionalGroupError(f"frame {number} has no Plane Orientation (Patient)")
        if measures is None or "PixelSpacing" not in measures:
            raise FunctionalGroupError(f"frame {number} has no Pixel Measures")
        rescale = _group(frame, shared, "PixelValueTransformationSequence")
        kind = (
            _group(frame, shared, "CTImageFrameTypeSequence")
            or _group(frame, shared, "MRImageFrameTypeSequence")
            or Dataset()
        )
        thickness = measures.get("SliceThickness")
        try:
            result.append(
                Frame(
                    number=number,
                    position=tuple(float(v) for v in position.ImagePositionPatient),
                    orientation=tuple(float(v) for v in orientation.ImageOrientationPatient),
                    pixel_spacing=tuple(float(v) for v in measures.PixelSpacing),
                    slice_thickness=float(thickness) if thickness not in (None, "") else None,
                    slope=float(rescale.get("RescaleSlope", 1) if rescale else 1),
                    intercept=float(rescale.get("RescaleIntercept", 0) if rescale else 0),
                    frame_type=tuple(str(v) for v in (kind.get("FrameType") or [])),
                )
            )
        except (TypeError, ValueError) as exc:
            raise FunctionalGroupError(f"frame {number}: unreadable geometry ({exc})") from exc
        if len(result[-1].position) != 3 or len(result[-1].orientation) != 6:
            raise FunctionalGroupError(f"frame {number}: position or orientation is malformed")
        if len(result[-1].pixel_spacing) != 2:
            raise FunctionalGroupError(f"frame {number}: Pixel Spacing is malformed")
    return result


def routing_values(ds: Dataset) -> dict[str, object]:
    """The single-frame routing tags an Enhanced object carries in its functional groups
    (orientation, pixel spacing and slice thickness of the first frame, the Frame Type all
    frames share) plus `FramePositions`, one per frame; empty if the groups are unusable
    (routing then says so)."""
    try:
        found = frames(ds)
    except FunctionalGroupError:
        return {}
    first = found[0]
    values: dict[str, object] = {
        "ImageOrientationPatient": list(first.orientation),
        "PixelSpacing": list(first.pixel_spacing),
        "FramePositions": [list(f.position) for f in found],
    }
    if first.slice_thickness is not None:
        values["SliceThickness"] = first.slice_thickness
    types = {f.frame_type for f in found}
    if len(types) == 1 and first.frame_type:  # e.g. one Dixon channel: WATER in value 3
        values["FrameType"] = list(first.frame_type)
    return values
