"""CT-specific muscle evidence: this patient's muscle attenuation and the gluteal groups."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image
from skimage.segmentation import watershed

from myonode.infer.engines.landmarks_ct import MUSCLE_HU, Spine
from myonode.infer.engines.morphology import disk, grow_from, split_bulges
from myonode.infer.engines.trunk_muscles import SIDES, SliceFrame


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
        midline = spine.center[k, 1] if spine.present[k] else pelvis.shape[2] / 2.0
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
    behind the front of the hip bone, beneath the body-wall surface. Thin bridges (fascia,
    vessels) are cut by growing through tissue of muscle thickness only. The gluteus medius
    (with the minimus beneath it) lies on the bone, the gluteus maximus behind and outside
    it, across a fat plane: a watershed of the (smoothed) attenuation `hu` from both.
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
        midline = spine.center[k, 1] if spine.present[k] else shape[2] / 2.0
        hull = convex_hull_image(pelvis[k])
        beneath = np.nan_to_num(depth[k], nan=-1.0) >= 0.0
        for side in SIDES:
            lateral = ii > midline if side == "left" else ii <= midline
            bone = pelvis[k] & lateral
            if not bone.any():
                continue
            front = np.nonzero(bone)[0].min()
            region = muscle[k] & beneath & lateral & ~hull & (jj >= front)
            seeds = region & ndimage.binary_dilation(bone, near_bone)
            gluteal = grow_from(region, seeds, 2.0, (sj, si))
            if not gluteal.any():
                continue
            # The medius lies on the bone in front of its back edge; the maximus covers
            # it from behind and outside, more than 35 mm from the bone or behind the
            # back edge. Between the two the fat plane (low attenuation) decides.
            from_bone = ndimage.distance_transform_edt(~bone, sampling=(sj, si))
            back_edge = np.nonzero(bone)[0].max()
            markers = np.zeros(gluteal.shape, dtype=np.int32)
            markers[gluteal & (from_bone > 35.0)] = 2
            markers[gluteal & (jj > back_edge + 10.0 / sj)] = 2
            markers[gluteal & (from_bone <= 10.0) & (jj <= back_edge)] = 1
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
        midline = spine.center[k, 1] if spine.present[k] else shape[2] / 2.0
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
