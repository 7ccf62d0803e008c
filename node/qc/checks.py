"""The QC checks: each looks at one structure of a label map against the image's own
landmarks (`landmarks.py`) and the plausible ranges (`ranges.py`), and answers pass, review
or fail with a sentence a radiologist can read. `quality_control` runs them all and never
raises: a check that cannot run says why and gives ``review``.

Checks, per structure:
- side: a left structure lies left of the midline (and vice versa);
- position: psoas next to the vertebral column (CT), back muscles behind it (CT; behind the
  body's centre on MR), glutei at the level of the pelvis (CT);
- size: volume and cross-section against the seed ranges; a tiny muscle;
- asymmetry: left against right volume beyond what seed 001 reports;
- intensity: HU in the muscle range and not bone (CT), Dixon fat fraction (MR);
- shape: one connected part, no large slice-to-slice jumps or gaps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from myonode.core.patient import PatientFacts
from myonode.core.quality import QualityReport, StructureQuality, Verdict, worst
from myonode.core.types import LabelMap
from myonode.core.volume import Geometry, Volume
from myonode.dicom.anatomy import TISSUE, Structure
from myonode.measure.structures import fat_fraction_percent, is_axial, slice_areas_cm2
from myonode.qc import ranges as r
from myonode.qc.landmarks import Landmarks, ct_landmarks, mr_landmarks

PSOAS = ("psoas_", "iliopsoas_")
BACK = ("erector_spinae_", "multifidus_", "deep_back_muscles_", "transversospinalis_")
GLUTEAL = ("gluteus_",)
QC_GRID_MM = 2.5  # finer grids are checked on every n-th pixel and slice
TIP_MM = 6.0  # a muscle's end grows fast from nothing: no jump check this close to its ends


@dataclass(frozen=True)
class Finding:
    """One check's answer: `reason` is None when it passed."""

    check: str
    verdict: Verdict
    reason: str | None = None


def _ok(check: str) -> Finding:
    return Finding(check, "pass")


def _cannot(check: str, why: str) -> Finding:
    return Finding(check, "review", f"{check.capitalize()} not checked: {why}.")


def _graded(
    check: str, value: float, review: float, fail: float, higher_is_worse: bool, reason: str
) -> Finding:
    """Pass, review or fail by where `value` lies against two bounds."""
    beyond = (lambda a, b: a > b) if higher_is_worse else (lambda a, b: a < b)
    if beyond(value, fail):
        return Finding(check, "fail", reason)
    if beyond(value, review):
        return Finding(check, "review", reason)
    return _ok(check)


@dataclass
class _Context:
    volume: Volume
    modality: str
    landmarks: Landmarks | None
    landmark_problem: str | None


def _family(key: str, prefixes: tuple[str, ...]) -> bool:
    return key.startswith(prefixes)


def check_side(structure: Structure, mask: np.ndarray, ctx: _Context) -> Finding | None:
    side = structure.side
    if side is None:
        return None
    if ctx.landmarks is None:
        return _cannot("side", ctx.landmark_problem or "no midline")
    k = np.nonzero(mask)[0]
    x = ctx.landmarks.x[np.nonzero(mask)[1:]]
    offset = x - ctx.landmarks.midline_x[k]
    own = float(np.mean(offset > 0 if side == "left" else offset < 0))
    reason = (
        f"Only {100 * own:.0f} % of the {side} {structure.name.lower().split(' ', 1)[-1]} "
        f"lies on the patient's {side} of the midline ({ctx.landmarks.source})."
    )
    return _graded("side", own, r.OWN_SIDE_REVIEW, r.OWN_SIDE_FAIL, False, reason)


def _per_slice_centroid_y(mask: np.ndarray, y: np.ndarray) -> np.ndarray:
    area = mask.sum(axis=(1, 2))
    total = (mask * y[np.newaxis]).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, total / area, np.nan)


def check_position(structure: Structure, mask: np.ndarray, ctx: _Context) -> Finding | None:
    key = structure.key
    if not _family(key, PSOAS + BACK + GLUTEAL):
        return None
    if ctx.landmarks is None:
        return _cannot("position", ctx.landmark_problem or "no landmarks")
    marks = ctx.landmarks
    present = mask.any(axis=(1, 2))
    if _family(key, PSOAS):
        if marks.column is None:
            return _cannot("position", f"no vertebral column on {marks.source}")
        return _psoas_position(mask, marks, ctx)
    if _family(key, BACK):
        divide = marks.column_y if marks.column is not None else marks.body_y
        what = "vertebral column" if marks.column is not None else "body's centre"
        both = present & np.isfinite(divide)
        if not both.any():
            return _cannot("position", f"no {what} found at its levels")
        centre = _per_slice_centroid_y(mask, marks.y)
        behind = float(np.mean(centre[both] > divide[both]))
        reason = f"It lies behind the {what} on only {100 * behind:.0f} % of its slices."
        return _graded("position", behind, r.BEHIND_REVIEW, r.BEHIND_FAIL, False, reason)
    if marks.column is None:
        return _cannot("position", f"no bone landmarks on {marks.source}")
    voxels = mask.sum(axis=(1, 2))
    in_pelvis = float(voxels[marks.pelvis].sum() / voxels.sum())
    reason = f"Only {100 * in_pelvis:.0f} % of it lies at the levels of the pelvic bones."
    return _graded("position", in_pelvis, r.IN_PELVIS_REVIEW, r.IN_PELVIS_FAIL, False, reason)


def _psoas_position(mask: np.ndarray, marks: Landmarks, ctx: _Context) -> Finding:
    """Above the pelvis the psoas lies against the vertebral bodies; it runs down into the
    pelvis (to the femur), so when the pelvis is in view it reaches it. A kidney lies a few
    centimetres lateral to the column and ends above the iliac crests."""
    present = mask.any(axis=(1, 2))
    findings = []
    z = _slice_z(ctx)
    if marks.pelvis.any():
        top = float(z[marks.pelvis].max())
        lowest = float(z[present].min())
        if lowest > top + r.PSOAS_ABOVE_PELVIS_MM:
            findings.append(
                Finding(
                    "position",
                    "fail",
                    f"It ends {lowest - top:.0f} mm above the pelvic bones in view; the psoas "
                    "runs down into the pelvis.",
                )
            )
    lumbar = present & np.isfinite(marks.column_y) & ~marks.pelvis
    if not lumbar.any():
        if not (present & ~marks.pelvis).any():  # all in the pelvis (an iliopsoas' lower part)
            return _merge("position", findings)
        findings.append(_cannot("position", "no vertebral column found beside it above the pelvis"))
        return _merge("position", findings)
    spacing = ctx.volume.geometry.spacing[:2][::-1]
    distances = [
        float(ndimage.distance_transform_edt(~marks.column[k], sampling=spacing)[mask[k]].min())
        for k in np.flatnonzero(lumbar)
    ]
    median = float(np.median(distances))
    reason = (
        f"It lies {median:.0f} mm from the vertebral column (median over {len(distances)} "
        "slices above the pelvis); the psoas lies against it."
    )
    findings.append(
        _graded(
            "position", median, r.PSOAS_TO_COLUMN_REVIEW_MM, r.PSOAS_TO_COLUMN_FAIL_MM, True, reason
        )
    )
    return _merge("position", findings)


def _slice_z(ctx: _Context) -> np.ndarray:
    """Each slice's head-to-foot position (patient z, mm)."""
    k = np.arange(ctx.volume.shape[0])
    return ctx.volume.geometry.index_to_lps(np.stack([0 * k, 0 * k, k], axis=1))[:, 2]


def _cut_by_field_of_view(mask: np.ndarray) -> bool:
    """Whether the structure reaches the first or last slice (the image may cut it)."""
    return bool(mask[0].any() or mask[-1].any())


def check_size(structure: Structure, mask: np.ndarray, ctx: _Context) -> Finding | None:
    if not structure.muscle or structure.category == TISSUE:
        return None  # a tissue class has no plausible size of its own
    geometry = ctx.volume.geometry
    volume = float(mask.sum()) * geometry.voxel_volume_mm3 / 1000.0
    cut = _cut_by_field_of_view(mask)
    key = structure.key
    if volume < r.MIN_MUSCLE_VOLUME_CM3:
        if cut:
            return Finding(
                "size",
                "review",
                f"Only {volume:.1f} cm³ in view, and the image cuts it: too little to measure.",
            )
        return Finding(
            "size",
            "fail",
            f"{volume:.1f} cm³ is far too small for this muscle when the image covers it.",
        )
    findings = []
    if _family(key, PSOAS):
        findings.append(
            _graded(
                "size",
                volume,
                r.ILIOPSOAS_VOLUME_MAX,
                1.5 * r.ILIOPSOAS_VOLUME_MAX,
                True,
                f"{volume:.0f} cm³ exceeds the largest plausible iliopsoas "
                f"({r.ILIOPSOAS_VOLUME_MAX:.0f} cm³, seed 001 Table 2 men + 4 SD).",
            )
        )
        if key.startswith("iliopsoas_") and not cut:
            findings.append(
                _graded(
                    "size",
                    volume,
                    r.ILIOPSOAS_VOLUME_MIN,
                    r.ILIOPSOAS_VOLUME_MIN / 2,
                    False,
                    f"{volume:.0f} cm³ is below the smallest plausible whole iliopsoas "
                    f"({r.ILIOPSOAS_VOLUME_MIN:.0f} cm³, seed 001 Table 2 women − 4 SD).",
                )
            )
        if is_axial(geometry):
            area = float(slice_areas_cm2(mask, geometry).max())
            findings.append(
                _graded(
                    "size",
                    area,
                    r.PSOAS_CSA_MAX,
                    1.5 * r.PSOAS_CSA_MAX,
                    True,
                    f"Its largest cross-section, {area:.1f} cm², exceeds a plausible psoas "
                    f"({r.PSOAS_CSA_MAX:.1f} cm² per side, seed 003 men + 4 SD).",
                )
            )
            if _lower_lumbar_in_view(ctx):
                findings.append(
                    _graded(
                        "size",
                        area,
                        r.PSOAS_CSA_MIN,
                        r.PSOAS_CSA_MIN / 2,
                        False,
                        f"Its largest cross-section, {area:.1f} cm², is below a plausible "
                        f"psoas at the lower lumbar levels in view ({r.PSOAS_CSA_MIN:.1f} cm² "
                        "per side, seed 003 women − 4 SD).",
                    )
                )
    if _family(key, GLUTEAL):
        findings.append(
            _graded(
                "size",
                volume,
                r.GLUTEUS_SIDE_VOLUME_MAX,
                1.5 * r.GLUTEUS_SIDE_VOLUME_MAX,
                True,
                f"{volume:.0f} cm³ exceeds all three glutei of one side "
                f"({r.GLUTEUS_SIDE_VOLUME_MAX:.0f} cm³, seed 003 men + 4 SD).",
            )
        )
    return _merge("size", findings)


def _lower_lumbar_in_view(ctx: _Context) -> bool:
    """Whether the image shows the vertebral column at least 50 mm above the top of the
    pelvis: the iliac crests lie at L4–L5, where the psoas is largest (seed 003)."""
    marks = ctx.landmarks
    if marks is None or marks.column is None or not marks.pelvis.any():
        return False
    z = _slice_z(ctx)
    pelvis_top = z[marks.pelvis].max()
    above = np.isfinite(marks.column_y) & (z > pelvis_top + 50.0)
    return bool(above.any())


def _merge(check: str, findings: list[Finding]) -> Finding:
    verdict = worst([f.verdict for f in findings])
    if verdict == "pass":
        return _ok(check)
    reasons = [f.reason for f in findings if f.verdict != "pass" and f.reason]
    return Finding(check, verdict, " ".join(reasons))


def check_intensity(structure: Structure, mask: np.ndarray, ctx: _Context) -> Finding:
    if ctx.modality == "CT":
        hu = ctx.volume.array[mask]
        in_range = float(np.mean((hu >= r.MUSCLE_HU[0]) & (hu <= r.MUSCLE_HU[1])))
        bone = float(np.mean(hu >= r.BONE_HU))
        if bone > r.BONE_SHARE_FAIL:
            return Finding(
                "intensity", "fail", f"{100 * bone:.0f} % of its voxels are bone (≥ 200 HU)."
            )
        return _graded(
            "intensity",
            in_range,
            r.IN_RANGE_REVIEW,
            r.IN_RANGE_FAIL,
            False,
            f"Only {100 * in_range:.0f} % of its voxels have muscle attenuation "
            f"(−29 … 150 HU, seed 000); mean {float(hu.mean()):.0f} HU.",
        )
    fat = ctx.volume.channels.get("fat")
    if fat is not None:
        fraction = float(fat_fraction_percent(ctx.volume.array[mask], fat[mask]).mean())
        return _graded(
            "intensity",
            fraction,
            r.FAT_FRACTION_REVIEW,
            r.FAT_FRACTION_FAIL,
            True,
            f"Its mean Dixon fat fraction is {fraction:.0f} %: more fat than muscle holds.",
        )
    return _cannot("intensity", "an MR without its Dixon fat image has no quantitative scale")


def check_shape(structure: Structure, mask: np.ndarray, ctx: _Context) -> Finding | None:
    if structure.category == TISSUE:
        return None  # tissue classes are scattered by nature
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    largest = 1.0
    if count > 1:
        sizes = np.bincount(labelled.ravel())[1:]
        largest = float(sizes.max() / sizes.sum())
    findings = [
        _graded(
            "shape",
            largest,
            r.LARGEST_PART_REVIEW,
            r.LARGEST_PART_FAIL,
            False,
            f"It falls apart into {count} pieces; the largest holds {100 * largest:.0f} %.",
        )
    ]
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    gaps = int((slices[-1] - slices[0] + 1) - slices.size) if slices.size else 0
    if gaps:
        findings.append(
            Finding("shape", "review", f"It is missing on {gaps} slices within its extent.")
        )
    tip = max(1, int(np.ceil(TIP_MM / float(ctx.volume.geometry.spacing[2]))))
    if is_axial(ctx.volume.geometry) and slices.size > 2 * tip + 1:
        areas = slice_areas_cm2(mask, ctx.volume.geometry)[slices[0] + tip : slices[-1] - tip + 1]
        small = np.minimum(areas[:-1], areas[1:])
        pairs = (np.maximum(areas[:-1], areas[1:]) >= r.AREA_JUMP_FLOOR_CM2) & (small > 0)
        ratios = np.maximum(areas[:-1], areas[1:]) / np.where(small > 0, small, 1.0)
        jump = float(ratios[pairs].max()) if pairs.any() else 1.0
        if jump > r.AREA_JUMP_REVIEW:
            findings.append(
                Finding(
                    "shape",
                    "review",
                    f"Its cross-section jumps {jump:.0f}-fold from one slice to the next.",
                )
            )
    return _merge("shape", findings)


# Each check answers None where it does not apply to the structure.
Check = Callable[[Structure, np.ndarray, _Context], Finding | None]
CHECKS: tuple[Check, ...] = (
    check_side,
    check_position,
    check_size,
    check_intensity,
    check_shape,
)


def asymmetry(volumes: dict[str, float], key: str) -> Finding | None:
    """Left against right volume of a sided pair, when both sides were measured."""
    base, _, side = key.rpartition("_")
    if side not in ("left", "right"):
        return None
    left, right = volumes.get(f"{base}_left"), volumes.get(f"{base}_right")
    if not left or not right:
        return None
    percent = 100.0 * abs(left - right) / ((left + right) / 2)
    return _graded(
        "asymmetry",
        percent,
        r.ASYMMETRY_REVIEW_PERCENT,
        r.ASYMMETRY_FAIL_PERCENT,
        True,
        f"Left {left:.0f} and right {right:.0f} cm³ differ by {percent:.0f} % of their mean, "
        "beyond the largest iliopsoas difference in seed 001 "
        f"(≈ {r.ASYMMETRY_REVIEW_PERCENT:.0f} %).",
    )


def _landmarks(volume: Volume, modality: str) -> tuple[Landmarks | None, str | None]:
    if not is_axial(volume.geometry):
        return None, "the slices are not axial"
    if modality == "CT":
        marks = ct_landmarks(volume.array, volume.geometry)
        return marks, None
    if modality == "MR":
        return mr_landmarks(volume.array, volume.geometry), None
    return None, f"no landmarks are found on {modality or 'this modality'}"


def coarse(volume: Volume, label_map: LabelMap) -> tuple[Volume, LabelMap]:
    """The image and labels on a grid of about `QC_GRID_MM` (every n-th pixel and slice):
    the checks look at anatomy centimetres apart and ranges far wider than a pixel, and a
    scanner's 0.7 mm, 300-slice series would otherwise cost a minute."""
    spacing = volume.geometry.spacing
    step = [max(1, int(QC_GRID_MM // float(s))) for s in spacing]  # (i, j, k)
    if step == [1, 1, 1]:
        return volume, label_map
    view = (slice(None, None, step[2]), slice(None, None, step[1]), slice(None, None, step[0]))
    geometry = Geometry(volume.geometry.origin, volume.geometry.directions, spacing * step)
    channels = {name: image[view] for name, image in volume.channels.items()}
    return (
        Volume(volume.array[view], geometry, channels=channels),
        LabelMap(label_map.labels[view], label_map.structures),
    )


def _check_engine_landmarks(
    label_map: LabelMap, marks: Landmarks, fine_slices: int, report: QualityReport
) -> None:
    """The engine's L3 slice must lie on the vertebral column QC finds in the image; an L3
    without a vertebra there is not used (the engine's landmarks are evidence, not truth)."""
    l3 = label_map.landmarks.get("l3_slice")
    if l3 is None:
        return
    k = int(l3) * len(marks.column_y) // max(fine_slices, 1)
    if not 0 <= k < len(marks.column_y) or not np.isfinite(marks.column_y[k]):
        why = f"the engine's L3 slice ({int(l3) + 1}) has no vertebral column in the image"
        report.doubtful_landmarks["l3_slice"] = why
        report.notes.append(f"QC: {why}; nothing is measured at L3.")


def quality_control(
    volume: Volume, label_map: LabelMap, modality: str, facts: PatientFacts
) -> QualityReport:
    """The verdict for every structure of `label_map` on `volume`; never raises.

    `facts` is for checks that depend on the patient; the ranges used today bound every
    adult, so a missing sex or height does not stop any check.
    """
    report = QualityReport()
    present = label_map.present()
    fine_slices = volume.shape[0]
    volume, label_map = coarse(volume, label_map)
    try:
        marks, problem = _landmarks(volume, modality)
    except Exception as error:  # QC must never crash a job
        marks, problem = None, f"finding landmarks failed ({error})"
    if problem:
        report.notes.append(f"QC landmarks: none ({problem}).")
    elif marks is not None and marks.column is not None:
        found = marks.column_slices
        report.notes.append(
            f"QC landmarks from the image: vertebral column on {found} of "
            f"{volume.shape[0]} slices, pelvic bones on {int(marks.pelvis.sum())}."
        )
        if found == 0:
            marks, problem = None, "no vertebral column found in the image"
            report.notes.append(f"QC: {problem}; position checks cannot run (review).")
    elif marks is not None:
        report.notes.append(
            f"QC landmarks from the image: {marks.source} only (no bone on {modality}): the "
            "positions of psoas and glutei cannot be checked (review)."
        )
    if marks is not None and marks.column is not None:
        _check_engine_landmarks(label_map, marks, fine_slices, report)
    ctx = _Context(volume, modality, marks, problem)
    if not _lower_lumbar_in_view(ctx):
        report.withheld_indices["psoas_max_csa"] = (
            "the image does not show the lower lumbar spine, where the psoas is largest; "
            "seed 003's maximum CSA is not comparable"
        )
    volumes: dict[str, float] = {}
    findings: dict[str, list[Finding]] = {}
    for label, structure in label_map.structures.items():
        mask = label_map.labels == label
        if label not in present:
            report.structures[structure.key] = StructureQuality(
                "fail", ("Not found in the image: nothing to measure.",)
            )
            continue
        volumes[structure.key] = float(mask.sum()) * volume.geometry.voxel_volume_mm3 / 1000
        if not structure.muscle and structure.category != TISSUE:
            findings[structure.key] = [
                Finding("plausibility", "review", "No plausibility check exists for it.")
            ]
            continue
        answers = [_safe(check, structure, mask, ctx) for check in CHECKS]
        findings[structure.key] = [f for f in answers if f is not None]
    for key in findings:
        pair = asymmetry(volumes, key)
        if pair is not None:
            findings[key].append(pair)
        verdict = worst([f.verdict for f in findings[key]])
        report.structures[key] = StructureQuality(
            verdict,
            tuple(f.reason for f in findings[key] if f.verdict != "pass" and f.reason),
            tuple(f.check for f in findings[key] if f.verdict == "pass"),
        )
    return report


def _safe(check: Check, structure: Structure, mask: np.ndarray, ctx: _Context) -> Finding | None:
    name = check.__name__.removeprefix("check_")
    try:
        return check(structure, mask, ctx)
    except Exception as error:  # a check that cannot run gives review
        return _cannot(name, f"the check failed ({type(error).__name__}: {error})")
