"""Anatomical landmarks on MR: fat-likeness, body, midline, the back and the spine, femurs.

MR signal has no absolute scale, so everything starts from `fat_likeness`: 1 for fat, near
0 for muscle, from a Dixon fat fraction when the fat image is present, else from the
signal after N4 bias-field correction (the receive coils shade the image) divided by the
local level of fat, the brightest tissue on T1 and T2 fast spin echo. Arrays are canonical
(`orientation.py`) with the spacing in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from myonode.infer.engines.landmarks_ct import Spine, track_column
from myonode.infer.engines.morphology import (
    bulges,
    disk,
    fill_holes_per_slice,
    largest_component,
    slice_disk,
    smooth_in_plane,
)

MUSCLE_BELOW = 0.45  # fat-likeness under which tissue counts as muscle
FAT_LEVEL_SIGMA_MM = 25.0


def fat_likeness(signal: np.ndarray, fat: np.ndarray | None, spacing: np.ndarray) -> np.ndarray:
    """0 (muscle, water) .. 1 (fat) per voxel; background is 0 and excluded by the body mask."""
    if fat is not None:
        total = signal.astype(np.float32) + fat.astype(np.float32)
        return np.divide(fat, total, out=np.zeros(total.shape, np.float32), where=total > 0)
    signal = signal.astype(np.float32)
    foreground = signal > 0.05 * np.percentile(signal, 99)
    if foreground.sum() < 100:
        return np.zeros_like(signal)
    signal = bias_corrected(signal, foreground, spacing)
    bright = signal > threshold_otsu(signal[foreground])
    sigma = (0.0, FAT_LEVEL_SIGMA_MM / spacing[1], FAT_LEVEL_SIGMA_MM / spacing[2])
    weight = ndimage.gaussian_filter(bright.astype(np.float32), sigma)
    level = ndimage.gaussian_filter(signal * bright, sigma)
    level = np.divide(level, weight, out=np.zeros_like(level), where=weight > 0.02)
    # Far from any fat the local level is unreliable; fall back to the global fat level.
    level = np.where(weight > 0.02, level, np.median(signal[bright]))
    return np.divide(signal, level, out=np.zeros_like(signal), where=level > 0)


def bias_corrected(signal: np.ndarray, mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """N4 bias-field correction (SimpleITK), fitted on a copy shrunk to about 4 mm pixels."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(signal)
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    weights = sitk.GetImageFromArray(mask.astype(np.uint8))
    weights.CopyInformation(image)
    shrink = [max(1, round(4.0 / float(spacing[2]))), max(1, round(4.0 / float(spacing[1]))), 1]
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([25, 25, 15])
    corrector.Execute(sitk.Shrink(image, shrink), sitk.Shrink(weights, shrink))
    log_field = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(image))
    return (signal / np.exp(log_field)).astype(np.float32)


def body_mask_mr(signal: np.ndarray) -> np.ndarray:
    """The patient: the largest region above the noise floor, holes filled per slice."""
    above = signal > 0.05 * np.percentile(signal, 99)
    out = np.stack([largest_component(s) for s in above]) if len(above) else above
    return fill_holes_per_slice(out)


def subcutaneous_contrast(signal: np.ndarray, body: np.ndarray, spacing: np.ndarray) -> float:
    """Median signal 2-12 mm beneath the skin over the median deeper inside the body.

    That outer ring is mostly subcutaneous fat: on a fat-bright series (T1, T2 fast spin
    echo, in- and opposed-phase) it is at least about as bright as the inside (1.1-1.5 on
    the shared cases), on a fat-suppressed series (SPIR, STIR) or a Dixon water image well
    darker (0.4-0.8). 0 when the body is too small to tell."""
    outer = ndimage.binary_erosion(body, slice_disk(2.0, spacing))
    inner = ndimage.binary_erosion(body, slice_disk(12.0, spacing))
    ring = outer & ~inner
    if ring.sum() < 100 or inner.sum() < 100:
        return 0.0
    deep = float(np.median(signal[inner]))
    return float(np.median(signal[ring])) / deep if deep > 0 else 0.0


def midline(likeness: np.ndarray, body: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Per slice, the column about which the image is most mirror-symmetric (the sagittal
    midline), searched within 40 mm of the body's centre."""
    nk, _nj, ni = likeness.shape
    out = np.full(nk, np.nan)
    image = np.clip(likeness, 0.0, 1.5)
    for k in range(nk):
        if not body[k].any():
            continue
        centre = float(np.nonzero(body[k])[1].mean())
        reach = 40.0 / float(spacing[2])
        best = (np.inf, centre)
        for doubled in range(int(2 * (centre - reach)), int(2 * (centre + reach)) + 1):
            columns = np.arange(max(0, doubled - (ni - 1)), min(ni - 1, doubled) + 1)
            if len(columns) < ni // 2:
                continue
            difference = float(np.abs(image[k][:, columns] - image[k][:, doubled - columns]).mean())
            best = min(best, (difference, doubled / 2.0))
        out[k] = best[1]
    return out


ROLL_SEARCH_DEG = 20.0
ROLL_GRID_MM = 2.0


def patient_roll_mr(likeness: np.ndarray, body: np.ndarray, spacing: np.ndarray) -> float:
    """How far the patient is rolled on the table (degrees, in the sense of
    `scipy.ndimage.rotate` over the in-plane axes): the rotation that makes the image
    most mirror-symmetric about a vertical line.

    The trunk and the back muscles are left-right symmetric about the sagittal plane, which
    a rolled patient tilts; the psoas pair and the midline are sought on vertical lines, so
    the engine turns the image back first. Searched on the mean over the slices (the
    column's lateral position changes little along it), on a grid of about
    `ROLL_GRID_MM`, up to `ROLL_SEARCH_DEG` either way and 20 mm either side of the
    body's centre."""
    image = np.where(body, np.clip(likeness, 0.0, 1.5), 0.0).mean(axis=0)
    step = max(1, round(ROLL_GRID_MM / float(spacing[1])))
    image = image[::step, ::step]
    inside = image > 0.05
    if inside.sum() < 100:
        return 0.0
    _cj, ci = ndimage.center_of_mass(inside)
    reach = max(1, round(20.0 / (step * float(spacing[2]))))
    best = (np.inf, 0.0)
    for angle in np.arange(-ROLL_SEARCH_DEG, ROLL_SEARCH_DEG + 0.5, 1.0):
        turned = ndimage.rotate(image, angle, reshape=False, order=1)
        for c in range(round(ci) - reach, round(ci) + reach + 1):
            width = min(c, turned.shape[1] - 1 - c)
            if width < 10:
                continue
            left = turned[:, c - width : c][:, ::-1]
            right = turned[:, c + 1 : c + 1 + width]
            either = (left > 0.05) | (right > 0.05)
            if either.sum() < 100:
                continue
            best = min(best, (float(np.abs(left - right)[either].mean()), float(angle)))
    return best[1]


def back_surface(
    likeness: np.ndarray, body: np.ndarray, mid: np.ndarray, spacing: np.ndarray
) -> np.ndarray:
    """Per slice, the row where the back muscles begin under the posterior subcutaneous
    fat, beside the midline (15-35 mm either side); NaN where no muscle lies there."""
    nk = likeness.shape[0]
    sj, si = float(spacing[1]), float(spacing[2])
    out = np.full(nk, np.nan)
    dark = smooth_in_plane(likeness, 1.0, spacing) < MUSCLE_BELOW
    for k in range(nk):
        if np.isnan(mid[k]):
            continue
        rows = []
        for i in range(likeness.shape[2]):
            if not 15.0 <= abs(i - mid[k]) * si <= 35.0:
                continue
            inside = np.nonzero(body[k][:, i])[0]
            if not len(inside):
                continue
            start = inside.max() - int(6.0 / sj)  # below the skin
            column = dark[k][: max(start, 0), i]
            muscle = np.nonzero(column)[0]
            if len(muscle):
                rows.append(muscle.max())
        if len(rows) >= 4:
            out[k] = float(np.median(rows))
    return out


PSOAS_MIN_AREA_MM2 = 200.0
# The psoas arises from the sides of the vertebral bodies (half width 15-28 mm): its
# medial edge lies this far (mm) from the midline.
PSOAS_MEDIAL_MM = (12.0, 40.0)


@dataclass(frozen=True)
class _Bulge:
    """A dark bulge that may be one psoas: its row, lateral offset (mm from the midline,
    + towards the left), depth ahead of the back muscles (mm), area (mm2) and the distance
    of its medial edge from the midline (mm)."""

    row: float
    x: float
    ahead: float
    area: float
    medial: float


COLUMN_BEYOND_PSOAS_MM = 24.0


def find_spine_mr(
    likeness: np.ndarray, body: np.ndarray, spacing: np.ndarray
) -> tuple[Spine, np.ndarray, np.ndarray]:
    """The vertebral column on MR, the midline per slice, and the slices where the column
    was placed from the psoas muscles.

    Marrow is bright on T1 and dark on T2, but the psoas muscles are dark on every fat-bright
    sequence: a symmetric pair of dark bulges either side of the midline, 40-140 mm in
    front of the back muscles, their medial edges against the side of the vertebral body
    (`PSOAS_MEDIAL_MM` from the midline: the aorta, the vena cava and the crura, as dark as
    muscle on a fat fraction map, lie closer in front of it; kidneys and quadratus
    lumborum further out). The vertebral body lies between them; its radius is the half
    gap between their medial edges.

    Near the top of the lumbar spine the psoas thins out (it arises at T12-L1) and is no
    longer found, while the back muscles go on unchanged. For up to
    `COLUMN_BEYOND_PSOAS_MM` above the highest psoas slice the column is carried on at the
    same depth beneath the back muscles' surface and with the same radius: those slices
    are in `spine.present` but not in the returned psoas slices. Not below: at the
    sacrum the psoas leaves the column and the back muscles turn aponeurotic.
    """
    nk = likeness.shape[0]
    sj, si = float(spacing[1]), float(spacing[2])
    mid = midline(likeness, body, spacing)
    back = back_surface(likeness, body, mid, spacing)
    dark = smooth_in_plane(likeness, 1.0, spacing) < 0.25
    dark = ndimage.binary_opening(dark & body, disk(3.0, (sj, si))[np.newaxis])
    detections = np.full((nk, 2), np.nan)
    radius = np.full(nk, np.nan)
    for k in np.nonzero(~np.isnan(back))[0]:
        pair = psoas_pair(psoas_candidates(dark[k], mid[k], back[k], (sj, si)))
        if pair is None:
            continue
        detections[k] = (float(np.mean([b.row for b in pair])), mid[k])
        radius[k] = max(10.0, float(np.mean([b.medial for b in pair])))
    spine = track_column(detections, radius, spacing)
    from_psoas = spine.present.copy()
    _carry_on(spine, back, mid, spacing)
    return spine, mid, from_psoas


def _carry_on(spine: Spine, back: np.ndarray, mid: np.ndarray, spacing: np.ndarray) -> None:
    """Extend the column above its psoas slices at a constant depth beneath `back`."""
    ks = np.nonzero(spine.present)[0]
    if not len(ks) or np.isnan(back[ks.max()]):
        return
    top = int(ks.max())
    depth = back[top] - spine.center[top, 0]
    reach = int(COLUMN_BEYOND_PSOAS_MM / float(spacing[0]))
    for k in range(top + 1, min(top + reach + 1, len(back))):
        if np.isnan(back[k]) or np.isnan(mid[k]):
            break
        spine.center[k] = (back[k] - depth, mid[k])
        spine.radius_mm[k] = spine.radius_mm[top]
        spine.present[k] = True


def psoas_candidates(
    dark: np.ndarray, mid: float, back: float, spacing_ji: tuple[float, float]
) -> list[_Bulge]:
    """The dark bulges of one slice placed where a psoas can lie.

    Psoas, vertebral body and bowel touch each other, so the dark tissue is first cut into
    bulges at its necks (watershed of the distance map)."""
    sj, si = spacing_ji
    labelled, _tops = bulges(dark, spacing_ji)
    out = []
    for number, box in enumerate(ndimage.find_objects(labelled), start=1):
        if box is None:
            continue
        part = labelled[box] == number
        area = float(part.sum() * sj * si)
        if area < PSOAS_MIN_AREA_MM2:
            continue
        rows, cols = np.nonzero(part)
        x = (cols.mean() + box[1].start - mid) * si
        ahead = (back - (rows.mean() + box[0].start)) * sj
        medial = float(np.abs(cols + box[1].start - mid).min() * si)
        if (
            20.0 <= abs(x) <= 100.0
            and 40.0 <= ahead <= 140.0
            and PSOAS_MEDIAL_MM[0] <= medial <= PSOAS_MEDIAL_MM[1]
        ):
            out.append(_Bulge(rows.mean() + box[0].start, x, ahead, area, medial))
    return out


def psoas_pair(candidates: list[_Bulge]) -> tuple[_Bulge, _Bulge] | None:
    """The most symmetric pair of candidates, one either side of the midline."""
    best = None
    for left in (b for b in candidates if b.x > 0):
        for right in (b for b in candidates if b.x < 0):
            asymmetry = (
                abs(left.x + right.x) / 10.0
                + abs(left.ahead - right.ahead) / 10.0
                + abs(np.log(left.area / right.area))
            )
            if asymmetry < 3.0 and (best is None or asymmetry < best[0]):
                best = (asymmetry, left, right)
    return None if best is None else (best[1], best[2])
