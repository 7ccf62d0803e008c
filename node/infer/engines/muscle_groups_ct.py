"""CT-specific muscle evidence: this patient's muscle attenuation and the gluteal groups."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image
from skimage.segmentation import watershed

from myonode.infer.engines.landmarks_ct import MUSCLE_HU, Spine
from myonode.infer.engines.morphology import disk, fill_muscle, grow_from, split_bulges
from myonode.infer.engines.trunk_muscles import SIDES, SliceFrame

# The gluteus maximus: a sheet about this thick (mm) beneath the back of the buttock.
MAXIMUS_MM = 22.0


class MuscleRange(NamedTuple):
    """This patient's muscle attenuation (HU): the bounds of muscle and its typical level."""

    low: float
    level: float
    high: float


def muscle_range(
    hu: np.ndarray, depth: np.ndarray, spine: Spine, spacing: np.ndarray
) -> MuscleRange:
    """This patient's muscle attenuation, measured where muscle is certain: the paraspinal
    gutter right behind the laminae. Organs take contrast, muscle much less, so the upper
    bound separates enhanced liver, spleen and kidney from muscle; it never leaves the
    seed 000 range. Without enough of the gutter in view, the seed 000 range and the
    middle of normal muscle attenuation (40 HU) stand in."""
    samples = []
    for k in np.nonzero(spine.present)[0]:
        frame = SliceFrame.at(hu.shape[1:], spine, k, spacing)
        r = frame.radius
        gutter = (
            (frame.forward <= -r - 10.0)
            & (frame.forward >= -r - 40.0)
            & (np.abs(frame.lateral) >= 10.0)
            & (np.abs(frame.lateral) <= 35.0)
            & (np.nan_to_num(depth[k], nan=-1.0) >= 0.0)
        )
        values = hu[k][gutter]
        samples.append(values[(values >= MUSCLE_HU[0]) & (values <= MUSCLE_HU[1])])
    values = np.concatenate(samples) if samples else np.empty(0)
    if len(values) < 50:
        return MuscleRange(MUSCLE_HU[0], 40.0, MUSCLE_HU[1])
    # The lower half mixes in intramuscular fat; the upper half is muscle and noise.
    q50, q75 = np.percentile(values, [50, 75])
    spread = (q75 - q50) / 0.674
    high = float(min(MUSCLE_HU[1], q50 + max(2.0 * spread, 30.0)))
    return MuscleRange(MUSCLE_HU[0], float(q50), high)


def partial_volume_rim(
    labelled: np.ndarray, hu: np.ndarray, level: float, inside: np.ndarray
) -> np.ndarray:
    """Unlabelled voxels touching labelled muscle within their slice whose attenuation
    lies between the seed 000 lower bound (-29 HU) and this patient's muscle `level`.

    They are the muscles' border voxels, more muscle than fat, which the growth leaves out
    (it stops at -15 or 0 HU so as not to run through thin fat planes); the standard
    single-slice muscle area counts them (-29 HU and up inside the muscle outline). A
    touching voxel above the muscle level is muscle or an organ, and is not added.
    `inside` is where muscle can be (beneath the skin, not bone)."""
    cross = ndimage.generate_binary_structure(2, 1)[np.newaxis]
    touching = ndimage.binary_dilation(labelled, cross) & ~labelled
    return touching & inside & (hu >= MUSCLE_HU[0]) & (hu < level)


def _both_sides(pelvis: np.ndarray, spine: Spine) -> list[int]:
    """Slices with hip bone on both sides of the midline: only there does the convex hull
    of the bone enclose the pelvic cavity (bladder, bowel), which must stay out."""
    out = []
    ii = np.arange(pelvis.shape[2])
    for k in np.nonzero(pelvis.any(axis=(1, 2)))[0]:
        midline = spine.center[k, 1] if spine.present.any() else pelvis.shape[2] / 2.0
        columns = ii[pelvis[k].any(axis=0)]
        if (columns > midline).any() and (columns <= midline).any():
            out.append(int(k))
    return out


def gluteal_groups(
    muscle: np.ndarray,
    hu: np.ndarray,
    depth: np.ndarray,
    pelvis: np.ndarray,
    spine: Spine,
    spacing: np.ndarray,
) -> dict[str, np.ndarray]:
    """Gluteus medius and maximus on slices through the hip bones.

    The gluteal muscles cover the outer surface of the iliac wing and the back of the hip
    joint: outside the pelvic ring (the convex hull of the hip bones on the slice) and
    behind the front of the hip bone, beneath the body-wall surface, clear of the midline
    (the pelvic floor). Fatty streaks are closed and holes filled; thin bridges (fascia,
    vessels) are cut by growing through tissue of muscle thickness only, from the bone
    and from the back of the buttock (the maximus below the hip joints lies apart from
    the bone). The gluteus maximus is the superficial sheet of the back of the buttock
    (its surface faces backwards, within `MAXIMUS_MM` of it) and lies behind the bone's
    back edge; the gluteus medius (with the minimus beneath it) lies on the bone in front
    of that edge, deeper, and reaches the surface only at the side. Between the two the
    fat plane decides: a watershed of the (smoothed) attenuation `hu` from both.
    """
    shape = muscle.shape
    out = {
        f"{name}_{side}": np.zeros(shape, dtype=bool)
        for name in ("gluteus_medius", "gluteus_maximus")
        for side in SIDES
    }
    sj, si = float(spacing[1]), float(spacing[2])
    jj, ii = np.mgrid[0 : shape[1], 0 : shape[2]]
    near_bone = disk(8.0, (sj, si))
    for k in _both_sides(pelvis, spine):
        midline = spine.center[k, 1] if spine.present.any() else shape[2] / 2.0
        beneath = np.nan_to_num(depth[k], nan=-1.0) >= 0.0
        hull = convex_hull_image(pelvis[k])
        facing, surface = _facing_back(beneath, spine, k, (sj, si))
        for side in SIDES:
            lateral = ii > midline if side == "left" else ii <= midline
            bone = pelvis[k] & lateral
            if not bone.any():
                continue
            front = np.nonzero(bone)[0].min()
            # Around the hip bone (and femur) of this side, from straight back (0) to
            # straight out (90 degrees): the tensor fasciae latae and sartorius lie in
            # front of the gluteus medius, further than 135 degrees.
            cj, ci = np.nonzero(bone)
            outward = (ii - ci.mean()) * si * (1.0 if side == "left" else -1.0)
            around = np.degrees(np.arctan2(outward, (jj - cj.mean()) * sj))
            apart = np.abs(ii - midline) * si >= 15.0
            allowed = beneath & lateral & apart & ~hull & (jj >= front) & ~pelvis[k]
            allowed &= around <= 135.0
            region = fill_muscle(muscle[k] & allowed, allowed, (sj, si))
            seeds = region & (
                ndimage.binary_dilation(bone, near_bone) | ((facing <= 45.0) & (surface <= 15.0))
            )
            gluteal = grow_from(region, seeds, 2.0, (sj, si))
            if not gluteal.any():
                continue
            from_bone = ndimage.distance_transform_edt(~bone, sampling=(sj, si))
            back_edge = np.nonzero(bone)[0].max()
            markers = np.zeros(gluteal.shape, dtype=np.int32)
            markers[gluteal & (facing <= 60.0) & (surface <= MAXIMUS_MM)] = 2
            markers[gluteal & ((facing >= 80.0) | (surface >= MAXIMUS_MM + 6.0))] = 1
            markers[gluteal & (from_bone <= 10.0) & (jj <= back_edge)] = 1
            markers[gluteal & (jj > back_edge + 10.0 / sj)] = 2
            if not (markers == 1).any():
                out[f"gluteus_maximus_{side}"][k] = gluteal
                continue
            parts = watershed(-hu[k], markers, mask=gluteal)
            out[f"gluteus_medius_{side}"][k] = parts == 1
            out[f"gluteus_maximus_{side}"][k] = parts == 2
    return out


def iliacus(
    tissue: np.ndarray, pelvis: np.ndarray, spine: Spine, spacing: np.ndarray
) -> dict[str, np.ndarray]:
    """The iliacus of each side: the flat muscle lining the inner surface of the iliac wing.

    Inside the pelvic ring (the convex hull of the hip bones on the slice), muscle
    attenuation `tissue` grown from the bone's inner surface through tissue of muscle
    thickness, keeping the bulges whose deepest point lies within 20 mm of the bone: the
    iliacus is a sheet on the bone, a bowel loop against it bulges away from it.
    """
    shape = tissue.shape
    out = {f"iliacus_{side}": np.zeros(shape, dtype=bool) for side in SIDES}
    sj, si = float(spacing[1]), float(spacing[2])
    ii = np.arange(shape[2])[np.newaxis, :]
    for k in _both_sides(pelvis, spine):
        midline = spine.center[k, 1] if spine.present.any() else shape[2] / 2.0
        hull = convex_hull_image(pelvis[k])
        for side in SIDES:
            lateral = ii > midline if side == "left" else ii <= midline
            bone = pelvis[k] & lateral
            if not bone.any():
                continue
            from_bone = ndimage.distance_transform_edt(~bone, sampling=(sj, si))
            region = tissue[k] & hull & lateral & (from_bone <= 40.0)
            grown = grow_from(region, region & (from_bone <= 6.0), 2.0, (sj, si))
            out[f"iliacus_{side}"][k] = split_bulges(grown, from_bone <= 20.0, (sj, si))
    return out


def _facing_back(
    beneath: np.ndarray, spine: Spine, k: int, spacing_ji: tuple[float, float]
) -> np.ndarray:
    """Per voxel of one slice, the angle (degrees) between the patient's back and the
    direction to the nearest point of the body-wall surface, within 25 mm of it (180
    deeper): the gluteus maximus is the superficial muscle of the back of the buttock,
    the gluteus medius reaches the surface only at the side."""
    distance, (nj, ni) = ndimage.distance_transform_edt(
        beneath, sampling=spacing_ji, return_indices=True
    )
    jj, ii = np.indices(beneath.shape)
    dj, di = (nj - jj) * spacing_ji[0], (ni - ii) * spacing_ji[1]
    roll = np.radians(spine.roll[k]) if spine.roll is not None else 0.0
    back = dj * np.cos(roll) + di * np.sin(roll)
    side = np.abs(di * np.cos(roll) - dj * np.sin(roll))
    angle = np.degrees(np.arctan2(side, back))
    return np.where(beneath, angle, 180.0), distance
