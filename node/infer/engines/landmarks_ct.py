"""Anatomical landmarks on CT from image evidence: body, bone, spine, lungs, levels, pelvis.

Everything here works on arrays in the canonical orientation (`orientation.py`: k superior,
j posterior, i left) with the voxel spacing in mm, and uses attenuation ranges and human
anatomy rather than patient-specific numbers. Each finder says when it found nothing; the
engine turns that into an absent landmark and a note, never into a guess.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

from myonode.infer.engines.morphology import (
    disk,
    fill_holes_per_slice,
    slice_disk,
    smooth_in_plane,
)

AIR_HU = -500.0  # body outline: denser than this
FAT_HU = (-190.0, -30.0)
MUSCLE_HU = (-29.0, 150.0)  # seed 000
BONE_HU = 200.0  # cortical bone at any slice thickness; cancellous bone may be lower
LUMBAR_NAMES = ("L1", "L2", "L3", "L4", "L5")
EDGE_CLEARANCE_MM = 60.0  # a column closer than this to the image's side edge is not used


@dataclass(frozen=True)
class Spine:
    """The vertebral column's axis: vertebral body centre and radius per slice (canonical k).

    `present[k]` is False where the column was not found; `center` is then interpolated
    and must not be used.
    """

    center: np.ndarray  # (nk, 2) float, (j, i)
    radius_mm: np.ndarray  # (nk,) vertebral body radius
    present: np.ndarray  # (nk,) bool
    # (nk,) degrees the patient is rolled: the direction from the vertebral body to the
    # spinous process, from straight back (+j) towards the patient's left (+i). None: 0.
    roll: np.ndarray | None = None


@dataclass(frozen=True)
class Vertebra:
    """A named vertebral level; `complete` when both of its boundaries are in view."""

    name: str
    top: int  # most superior slice of its body (canonical k, inclusive)
    bottom: int  # most inferior slice of its body
    complete: bool = True

    @property
    def middle(self) -> int:
        return (self.top + self.bottom) // 2


@dataclass
class CtLandmarks:
    """What the CT engine knows about the anatomy, in canonical slice indices."""

    body: np.ndarray
    spine: Spine
    lungs: np.ndarray
    pelvis: np.ndarray
    bone: np.ndarray
    vertebrae: list[Vertebra] = field(default_factory=list)
    lung_base: int | None = None  # most inferior slice containing lung
    rib_head: int | None = None  # slice of the lowest rib head (taken as the 12th rib)
    sacroiliac: tuple[int, int] | None = None  # lowest, highest slice of the sacroiliac joints
    notes: list[str] = field(default_factory=list)

    def vertebra(self, name: str) -> Vertebra | None:
        return next((v for v in self.vertebrae if v.name == name), None)


def body_mask(hu: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The patient: the largest body of tissue denser than air, plus arms, minus the table.

    Thin shells (table top, blankets, cables) are removed by a 2 mm opening. Other large
    components (arms beside the trunk) are kept when they are mostly fat and soft tissue,
    which a table or a positioning device is not.
    """
    dense = ndimage.binary_opening(hu > AIR_HU, slice_disk(2.0, spacing))
    labelled, count = ndimage.label(dense)
    if count == 0:
        return dense
    sizes = np.bincount(labelled.ravel())[1:]
    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    trunk = int(np.argmax(sizes)) + 1
    soft = (hu >= FAT_HU[0]) & (hu <= MUSCLE_HU[1])
    soft_counts = np.bincount(labelled.ravel(), weights=soft.ravel())[1:]
    keep = [trunk] + [
        n + 1
        for n in range(count)
        if n + 1 != trunk and sizes[n] * voxel_cm3 >= 50.0 and soft_counts[n] / sizes[n] >= 0.6
    ]
    return fill_holes_per_slice(np.isin(labelled, keep))


def find_spine(hu: np.ndarray, body: np.ndarray, spacing: np.ndarray) -> Spine:
    """Track the vertebral bodies: the thickest bone near the midline, behind the centre.

    A vertebral body is the only structure near the posterior midline where a disk of 9 mm
    radius fits in tissue above 100 HU (after 2 mm smoothing) and meets cortical bone
    (`_bone_like`): posterior elements are too thin and lie further back, the aorta is
    narrower and lies in front, organs that take contrast (liver, kidneys, spleen reach
    100-200 HU) have no cortex. A column within
    60 mm of the image's side edge is not used (the field of view may cut it). Per-slice
    detections are then made consistent along z (running median, outliers rejected), which
    also bridges the intervertebral discs.
    """
    nk = hu.shape[0]
    sj, si = float(spacing[1]), float(spacing[2])
    smooth = smooth_in_plane(hu, 2.0, spacing)
    kernel = disk(9.0, (sj, si)).astype(np.float32)
    kernel /= kernel.sum()
    dense = ((smooth >= 100.0) & body).astype(np.float32)
    fraction = fftconvolve(dense, kernel[np.newaxis], mode="same", axes=(1, 2))
    cortex = smooth_in_plane(hu, 0.7, spacing) >= BONE_HU
    ring = disk(15.0, (sj, si))
    detections = np.full((nk, 2), np.nan)
    radius = np.full(nk, np.nan)
    jj, ii = np.mgrid[0 : hu.shape[1], 0 : hu.shape[2]]
    for k in range(nk):
        if not body[k].any():
            continue
        bj, bi = np.nonzero(body[k])
        cj, ci = bj.mean(), bi.mean()
        width_mm = (bi.max() - bi.min() + 1) * si
        depth = bj.max() - bj.min() + 1
        # Near the image's side edges the column may be cut: left and right of it unknown.
        clear = (ii * si >= EDGE_CLEARANCE_MM) & ((hu.shape[2] - 1 - ii) * si >= EDGE_CLEARANCE_MM)
        zone = (np.abs(ii - ci) * si < 0.2 * width_mm) & (jj > cj - 0.1 * depth) & clear
        fit = (fraction[k] >= 0.7) & zone
        labelled, count = ndimage.label(fit)
        if count == 0:
            continue
        areas = np.bincount(labelled.ravel())[1:].astype(float)
        areas[~_bone_like(labelled, cortex[k], ring)] = 0.0
        if not areas.any():
            continue
        chosen = labelled == int(np.argmax(areas)) + 1
        inscribed = ndimage.distance_transform_edt(chosen, sampling=(sj, si))
        detections[k] = ndimage.center_of_mass(chosen)
        radius[k] = 9.0 + float(inscribed.max())
    return track_column(detections, radius, spacing)


def _bone_like(labelled: np.ndarray, cortex: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Per component (0-based), whether cortical bone is at least 4 % of what lies within
    15 mm of it: a vertebral body has its cortex there (0.06-0.43 on the shared cases,
    osteoporotic bodies the least), an enhanced liver, kidney or spleen has none (0.00-0.03)."""
    out = []
    for number, box in enumerate(ndimage.find_objects(labelled), start=1):
        pad = ring.shape[0] // 2 + 1, ring.shape[1] // 2 + 1
        window = tuple(
            slice(max(0, b.start - p), b.stop + p) for b, p in zip(box, pad, strict=True)
        )
        reach = ndimage.binary_dilation(labelled[window] == number, ring)
        out.append(cortex[window][reach].mean() >= 0.04)
    return np.array(out, dtype=bool)


def track_column(detections: np.ndarray, radius: np.ndarray, spacing: np.ndarray) -> Spine:
    """Keep detections that agree with their neighbours along z; interpolate the rest."""
    nk = len(detections)
    valid = ~np.isnan(detections[:, 0])
    reach = max(1, round(15.0 / float(spacing[0])))
    for _ in range(2):
        ks = np.nonzero(valid)[0]
        if len(ks) < 2:
            break
        # Median of the actual neighbours within 15 mm (no padding: an outlier at the end
        # of the range must not be its own reference).
        reference = np.array(
            [np.median(detections[ks[np.abs(ks - k) <= reach]], axis=0) for k in ks]
        )
        offset_mm = np.hypot(
            (detections[ks, 0] - reference[:, 0]) * spacing[1],
            (detections[ks, 1] - reference[:, 1]) * spacing[2],
        )
        valid[ks[offset_mm > 15.0]] = False
    valid = _one_column(detections, valid, spacing)
    center = np.full((nk, 2), np.nan)
    present = np.zeros(nk, dtype=bool)
    ks = np.nonzero(valid)[0]
    span_mm = (ks.max() - ks.min()) * spacing[0] if len(ks) else 0.0
    if len(ks) >= 2 and span_mm >= 20.0 and len(ks) >= 0.5 * (ks.max() - ks.min() + 1):
        all_k = np.arange(nk)
        for axis in (0, 1):
            center[:, axis] = np.interp(all_k, ks, detections[ks, axis])
        present[ks.min() : ks.max() + 1] = True
        # The radius is a size, not a position: its noise is taken out with a median.
        steady = [np.median(radius[ks[np.abs(ks - k) <= reach]]) for k in ks]
        radius = np.interp(all_k, ks, steady)
    return Spine(center=center, radius_mm=np.where(present, radius, np.nan), present=present)


def _one_column(detections: np.ndarray, valid: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The detections that form one continuous column. Below the sacrum the femoral heads
    (as thick, with a cortex, 80-100 mm either side of the midline, 50 mm or more from the
    column's end) can pass for vertebral bodies in runs of their own: the column is the
    run with the most detections each within 30 mm in plane of the previous one. Within
    it, the column moves little from slice to slice: its longest stretch of detections
    each within 15 mm of the previous one (plus half the z gap, at most 30 mm) is kept,
    with any detection that continues it up or down."""
    ks = np.nonzero(valid)[0]
    if len(ks) < 2:
        return valid

    def step(a: int, b: int) -> float:
        return float(
            np.hypot(
                (detections[a, 0] - detections[b, 0]) * float(spacing[1]),
                (detections[a, 1] - detections[b, 1]) * float(spacing[2]),
            )
        )

    def stretches(ks: np.ndarray, linked) -> list[list[int]]:
        out = [[int(ks[0])]]
        for k in ks[1:]:
            if linked(out[-1][-1], int(k)):
                out[-1].append(int(k))
            else:
                out.append([int(k)])
        return out

    def continues(a: int, b: int) -> bool:
        return step(a, b) <= min(15.0 + 0.5 * abs(a - b) * float(spacing[0]), 30.0)

    run = np.array(max(stretches(ks, lambda a, b: step(a, b) <= 30.0), key=len))
    chain = max(stretches(run, continues), key=lambda part: part[-1] - part[0])
    kept = list(chain)
    for order, last in ((run[run > chain[-1]], chain[-1]), (run[run < chain[0]][::-1], chain[0])):
        for k in order:
            if continues(last, int(k)):
                kept.append(int(k))
                last = int(k)
    out = np.zeros_like(valid)
    out[kept] = True
    return out


def patient_roll(bone: np.ndarray, spine: Spine, spacing: np.ndarray) -> np.ndarray:
    """Per slice, how far the patient is rolled on the table (degrees, see `Spine.roll`).

    The posterior elements (laminae, spinous process) lie symmetric about the plane
    through the vertebral body and the spinous process: the direction from the body's
    centre to the centroid of the bone 10-60 mm behind its back, within 35 degrees of
    straight back, is the patient's "back". Slices disagree by noise; a running median over
    60 mm is kept (beyond the column's ends, its value at the nearest end), and a roll
    beyond 30 degrees is not believed (0 is used instead).
    """
    nk = bone.shape[0]
    sj, si = float(spacing[1]), float(spacing[2])
    jj, ii = np.mgrid[0 : bone.shape[1], 0 : bone.shape[2]]
    roll = np.full(nk, np.nan)
    for k in np.nonzero(spine.present)[0]:
        vj, vi = spine.center[k]
        r = float(spine.radius_mm[k])
        dj, di = (jj - vj) * sj, (ii - vi) * si
        distance = np.hypot(dj, di)
        angle = np.degrees(np.arctan2(di, dj))
        behind = bone[k] & (distance >= r + 10.0) & (distance <= r + 60.0) & (np.abs(angle) <= 35.0)
        if behind.sum() * sj * si >= 50.0:
            roll[k] = float(np.degrees(np.arctan2(di[behind].mean(), dj[behind].mean())))
    known = np.nonzero(~np.isnan(roll))[0]
    if not len(known):
        return np.zeros(nk)
    reach = max(1, round(30.0 / float(spacing[0])))
    steady = np.full(nk, np.nan)
    for k in range(nk):
        around = known[np.abs(known - k) <= reach]
        if len(around):
            steady[k] = np.median(roll[around])
    # Beyond the column (the pelvis below the sacrum) the patient lies as at its nearest end.
    have = np.nonzero(~np.isnan(steady))[0]
    steady = np.interp(np.arange(nk), have, steady[have])
    return np.where(np.abs(steady) <= 30.0, steady, 0.0)


def find_lungs(hu: np.ndarray, body: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Aerated lung: air regions deep inside the body whose voxels are mostly parenchyma.

    Bowel gas is nearly pure air (median below -930 HU); lung parenchyma with its vessels
    has a median between -920 and -650 HU. Thin slices resampled, or a narrow loop, give
    bowel gas a partial-volume median in that band too, but a third or more of it stays
    below -950 HU, where normal lung has almost nothing (a quarter at most is allowed: a
    severely emphysematous lung may be missed, and then the region has no top). Air
    trapped against the skin (between the back and the table, in skin folds) is
    partial-volume air, excluded by requiring 5 mm of
    tissue between the component and the body surface. A lung runs up to the top of an
    abdominal field of view with at least 5 cm3 (or is whole and large); a gas bubble with
    partial volume does neither (a lung cut within its lowest few millimetres is missed:
    no region top is better than a wrong one).
    """
    air = (hu < -400.0) & body
    labelled, count = ndimage.label(air)
    lungs = np.zeros_like(air)
    if count == 0:
        return lungs
    surface = body & ~ndimage.binary_erosion(body, slice_disk(5.0, spacing))
    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    for number, box in enumerate(ndimage.find_objects(labelled), start=1):
        part = labelled[box] == number
        if part.sum() * voxel_cm3 < 1.0 or (surface[box] & part).any():
            continue
        reaches_top = box[0].stop == hu.shape[0]
        size = part.sum() * voxel_cm3
        if size < 5.0 or (not reaches_top and size < 200.0):
            continue
        values = hu[box][part]
        median = float(np.median(values))
        if -920.0 <= median <= -650.0 and float(np.mean(values < -950.0)) <= 0.25:
            lungs[box] |= part
    return lungs


def _column_distance(shape: tuple[int, ...], spine: Spine, spacing: np.ndarray) -> np.ndarray:
    """In-plane distance (mm) of every voxel from the vertebral body centre of its slice."""
    jj, ii = np.mgrid[0 : shape[1], 0 : shape[2]].astype(np.float32)
    out = np.full(shape, np.inf, dtype=np.float32)
    for k in np.nonzero(spine.present)[0]:
        vj, vi = spine.center[k]
        out[k] = np.hypot((jj - vj) * spacing[1], (ii - vi) * spacing[2])
    return out


def lowest_rib_head(
    bone: np.ndarray, spine: Spine, spacing: np.ndarray, pelvis: np.ndarray
) -> int | None:
    """Slice of the lowest rib that articulates with the column, or None if none in view.

    Outside a 45 mm cylinder around the vertebral bodies, a rib is a bone component that
    touches the cylinder (its head) and reaches more than 85 mm from the column; lumbar
    transverse processes stop short of that. The head is the rib's point nearest the column.
    Ribs lie above the pelvis: nothing at or below the top of the hip bones is a rib.
    """
    distance = _column_distance(bone.shape, spine, spacing)
    above_pelvis = spine.present.copy()
    pelvis_slices = np.nonzero(pelvis.any(axis=(1, 2)))[0]
    if len(pelvis_slices):
        above_pelvis[: pelvis_slices.max() + 1] = False
    outside = bone & (distance >= 45.0) & above_pelvis[:, np.newaxis, np.newaxis]
    labelled, _count = ndimage.label(outside, structure=np.ones((3, 3, 3)))
    heads = []
    for number, box in enumerate(ndimage.find_objects(labelled), start=1):
        if box is None:
            continue
        part = labelled[box] == number
        if part.sum() * float(np.prod(spacing)) < 500.0:
            continue
        d = distance[box][part]
        if d.min() <= 50.0 and d.max() >= 85.0:
            k_local = np.nonzero(part)[0][int(np.argmin(d))]
            heads.append(int(k_local + box[0].start))
    return min(heads) if heads else None


def find_pelvis(
    bone: np.ndarray, spine: Spine, spacing: np.ndarray, lung_base: int | None = None
) -> np.ndarray:
    """Hip bones (and the femora below them): per side of the midline, the large, thick
    pieces of bone lateral to the vertebral column (30 cm3 or more in all).

    Each side is taken apart from the other 30 mm from the midline, since the sacrum and
    the pubic symphysis join the two hip bones into one piece of bone, and the posterior
    vertebral elements would join them to the column. A rib is long in z too, but
    thin: a hip bone has a far larger cross-section. The scapulae are as thick, but lie
    beside the lungs: bone whose centre is above the lung base is not the pelvis. Both
    sides must be found, or none is returned.
    """
    distance = _column_distance(bone.shape, spine, spacing)
    nk, _nj, ni = bone.shape
    ks = np.nonzero(spine.present)[0]
    if not len(ks):
        return np.zeros_like(bone)
    # Below the column's lowest detection its last position stands for the midline.
    midline = np.interp(np.arange(nk), ks, spine.center[ks, 1])
    distance[~spine.present] = np.inf
    ii = np.arange(ni)[np.newaxis, np.newaxis, :]
    offset_mm = (ii - midline[:, np.newaxis, np.newaxis]) * float(spacing[2])
    # The posterior elements (spinous processes, laminae) lie far behind the vertebral
    # body but within 30 mm of the midline; the hip bones lie further out.
    candidates = bone & (distance >= 45.0) & (np.abs(offset_mm) >= 30.0)
    left = offset_mm > 0
    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    pelvis = np.zeros_like(bone)
    for side in (left, ~left):
        labelled, _count = ndimage.label(candidates & side, structure=np.ones((3, 3, 3)))
        found = np.zeros_like(bone)
        for number, box in enumerate(ndimage.find_objects(labelled), start=1):
            part = labelled[box] == number
            size = float(part.sum()) * voxel_cm3
            zs = np.nonzero(part)[0] + box[0].start
            extent_cm = (zs.max() - zs.min() + 1) * float(spacing[0]) / 10.0
            if size < 10.0 or size / max(extent_cm, 0.1) < 1.5:
                continue
            if lung_base is not None and zs.mean() >= lung_base:
                continue
            found[box] |= part
        if found.sum() * voxel_cm3 < 30.0:
            return np.zeros_like(bone)
        pelvis |= found
    return pelvis


def sacroiliac_joints(
    bone: np.ndarray, pelvis: np.ndarray, spine: Spine, spacing: np.ndarray
) -> tuple[int, int] | None:
    """Lowest and highest slice where the column's bone meets the iliac bone on both sides.

    That is the sacrum (ala against ilium at the sacroiliac joints); above it, at L5,
    the transverse processes stay clear of the iliac crests. Bone is dilated by 2.5 mm
    (one pixel at least) so the joint space itself does not separate the two.
    """
    if not pelvis.any():
        return None
    sj, si = float(spacing[1]), float(spacing[2])
    element = disk(max(2.5, sj, si), (sj, si))
    jj, ii = np.mgrid[0 : bone.shape[1], 0 : bone.shape[2]]
    joined_slices = []
    for k in np.nonzero(spine.present & pelvis.any(axis=(1, 2)))[0]:
        labelled, _count = ndimage.label(ndimage.binary_dilation(bone[k], element))
        vj, vi = spine.center[k]
        # The body's centre may be cancellous bone below the cortical threshold: the
        # column is the bone piece that holds most of the vertebral body's disk.
        body = np.hypot((jj - vj) * sj, (ii - vi) * si) <= spine.radius_mm[k]
        pieces = np.bincount(labelled[body], minlength=2)[1:]
        if not pieces.any():
            continue
        column = int(np.argmax(pieces)) + 1
        columns = np.nonzero((labelled == column) & pelvis[k])[1]
        if (columns < vi).any() and (columns > vi).any():
            joined_slices.append(int(k))
    if not joined_slices:
        return None
    # The joints run down from their top without a break (gaps of up to 10 mm bridged);
    # lower contacts belong to the lower pelvis, not to the sacroiliac joints.
    gap = max(1, round(10.0 / float(spacing[0])))
    bottom = top = joined_slices[-1]
    for k in reversed(joined_slices[:-1]):
        if bottom - k > gap:
            break
        bottom = k
    return bottom, top


def disc_evidence(hu: np.ndarray, spine: Spine, spacing: np.ndarray) -> np.ndarray:
    """Per slice, how much it looks like an intervertebral level (1 = bone, 0 = disc).

    At a disc the pedicles are absent (the foramina open) and the vertebral body gives way
    to disc tissue, so both the bone area beside the canal and the body attenuation dip.
    Each profile is divided by its running maximum, which removes patient-level density.
    """
    nk = hu.shape[0]
    sj, si = float(spacing[1]), float(spacing[2])
    jj, ii = np.mgrid[0 : hu.shape[1], 0 : hu.shape[2]]
    pedicle = np.zeros(nk)
    body = np.zeros(nk)
    smooth = smooth_in_plane(hu, 1.5, spacing)
    for k in np.nonzero(spine.present)[0]:
        vj, vi = spine.center[k]
        rb = spine.radius_mm[k]
        dj, di = (jj - vj) * sj, np.abs(ii - vi) * si
        near_canal = (dj > 0.5 * rb) & (dj < rb + 20.0) & (di > 5.0) & (di < 25.0)
        pedicle[k] = np.count_nonzero((hu[k] >= BONE_HU) & near_canal) * sj * si
        core = np.hypot(dj, di) < 0.5 * rb
        body[k] = float(smooth[k][core].mean()) if core.any() else 0.0
    window = max(3, round(60.0 / float(spacing[0])) | 1)
    evidence = np.zeros(nk)
    for profile, weight in ((pedicle, 0.7), (np.clip(body, 0.0, None), 0.3)):
        peak = ndimage.maximum_filter1d(profile, window)
        evidence += weight * np.divide(profile, peak, out=np.ones(nk), where=peak > 0)
    return evidence


def vertebral_boundaries(
    evidence: np.ndarray, present: np.ndarray, spacing: np.ndarray
) -> list[int]:
    """Slices of the intervertebral levels, as one consistent sequence along the column.

    Candidates are clear dips (evidence below 0.55). Dynamic programming keeps the chain
    of candidates whose spacing stays within the lower thoracic and lumbar vertebral
    period (22-48 mm), preferring more and deeper dips, so a shallow dip inside a body
    cannot be taken for a disc next to a deep one and no level is invented where the
    image shows none.
    """
    step = float(spacing[0])
    lo, hi = 22.0 / step, 48.0 / step
    candidates = [int(k) for k in np.nonzero(present & (evidence < 0.55))[0]]
    if not candidates:
        return []
    cost = {k: evidence[k] - 0.75 for k in candidates}
    previous: dict[int, int | None] = {k: None for k in candidates}
    for n, k in enumerate(candidates):
        for p in candidates[:n]:
            if lo <= k - p <= hi and cost[p] + evidence[k] - 0.75 < cost[k]:
                cost[k], previous[k] = cost[p] + evidence[k] - 0.75, p
    k: int | None = min(candidates, key=lambda c: cost[c])
    path = []
    while k is not None:
        path.append(k)
        k = previous[k]
    return sorted(path)


def name_vertebrae(
    boundaries: list[int],
    present: np.ndarray,
    rib_head: int | None,
    sacrum_top: int | None,
) -> tuple[list[Vertebra], list[str]]:
    """Name the vertebrae L1..L5 from the 12th rib and/or the sacrum.

    The lowest rib articulating with the column is taken as the 12th (its vertebra is
    T12); the vertebra above the sacroiliac joints (or whose lowest third they reach) is
    taken as L5. With both
    anchors the counts must agree (five lumbar vertebrae), otherwise nothing is named:
    transitional anatomy or a detection error, and a wrong level is worse than none.
    Vertebrae cut by the field of view are named but marked incomplete.
    """
    notes: list[str] = []
    ks = np.nonzero(present)[0]
    if not boundaries or not len(ks):
        notes.append("Vertebral levels not named: no intervertebral level found.")
        return [], notes
    edges = [int(ks.min()) - 1, *boundaries, int(ks.max()) + 1]
    segments = [
        (lo + 1, hi - 1, lo >= ks.min() and hi <= ks.max())
        for lo, hi in itertools.pairwise(edges)
        if hi - lo >= 2
    ]
    from_rib = from_sacrum = None
    if rib_head is not None:
        t12 = next((n for n, (lo, hi, _c) in enumerate(segments) if lo <= rib_head <= hi + 1), None)
        if t12 is not None:
            from_rib = t12 - 1  # index of L1 (segments run inferior to superior)
    if sacrum_top is not None:
        # The sacrum meets the ilia from the level of its first segment up; a sloped sacrum
        # brings the joint beside the lowest third of L5 (its ala rises behind the body).
        l5 = next(
            (n for n, (lo, hi, _c) in enumerate(segments) if sacrum_top < lo + (hi - lo) / 3.0),
            None,
        )
        if l5 is not None:
            from_sacrum = l5 + 4  # index of L1
    if from_rib is not None and from_sacrum is not None and from_rib != from_sacrum:
        notes.append(
            "Vertebral levels not named: counting from the 12th rib and from the sacrum "
            "disagree (transitional vertebra or detection error)."
        )
        return [], notes
    l1 = from_rib if from_rib is not None else from_sacrum
    if l1 is None:
        notes.append(
            "Vertebral levels not named: neither the 12th rib head nor the sacrum is in view."
        )
        return [], notes
    if from_rib is not None and from_sacrum is not None:
        anchor = "the 12th rib and the sacrum, which agree"
    elif from_rib is not None:
        anchor = "the lowest rib (taken as the 12th)"
    else:
        anchor = "the sacrum"
    vertebrae = [
        Vertebra(
            name, top=segments[l1 - n][1], bottom=segments[l1 - n][0], complete=segments[l1 - n][2]
        )
        for n, name in enumerate(LUMBAR_NAMES)
        if 0 <= l1 - n < len(segments)
    ]
    complete = ", ".join(v.name for v in vertebrae if v.complete) or "none"
    notes.append(f"Lumbar levels counted from {anchor}; complete in view: {complete}.")
    return vertebrae, notes


def ct_landmarks(hu: np.ndarray, spacing: np.ndarray) -> CtLandmarks:
    """Find every landmark on a canonical CT array (HU) and say what could not be found."""
    body = body_mask(hu, spacing)
    spine = find_spine(hu, body, spacing)
    bone = (smooth_in_plane(hu, 0.7, spacing) >= BONE_HU) & body
    lungs = find_lungs(hu, body, spacing)
    landmarks = CtLandmarks(
        body=body, spine=spine, lungs=lungs, pelvis=np.zeros_like(body), bone=bone
    )
    if not spine.present.any():
        landmarks.notes.append(
            "Vertebral column not found: no vertebral level, region or spine-based muscle."
        )
        return landmarks
    lung_slices = np.nonzero(lungs.any(axis=(1, 2)))[0]
    if len(lung_slices):
        landmarks.lung_base = int(lung_slices.min())
    spine = landmarks.spine = replace(spine, roll=patient_roll(bone, spine, spacing))
    landmarks.pelvis = find_pelvis(bone, spine, spacing, landmarks.lung_base)
    evidence = disc_evidence(hu, spine, spacing)
    boundaries = vertebral_boundaries(evidence, spine.present, spacing)
    landmarks.rib_head = lowest_rib_head(bone, spine, spacing, landmarks.pelvis)
    landmarks.sacroiliac = sacroiliac_joints(bone, landmarks.pelvis, spine, spacing)
    landmarks.vertebrae, notes = name_vertebrae(
        boundaries,
        spine.present,
        landmarks.rib_head,
        None if landmarks.sacroiliac is None else landmarks.sacroiliac[1],
    )
    landmarks.notes += notes
    return landmarks
