"""CT-specific muscle evidence: this patient's muscle attenuation and the gluteal groups."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from myonode.infer.engines.landmarks_ct import MUSCLE_HU, Spine
from myonode.infer.engines.morphology import disk, split_bulges
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


def gluteal_groups(
    muscle: np.ndarray,
    depth: np.ndarray,
    pelvis: np.ndarray,
    spine: Spine,
    spacing: np.ndarray,
) -> dict[str, np.ndarray]:
    """Gluteus medius and maximus on slices through the iliac wings.

    The gluteal muscles cover the outer (posterolateral) surface of the iliac wing; seen
    from the pelvic centre they lie beyond the bone. The gluteus medius is the bulge lying
    on the bone, the gluteus maximus the bulge behind it, separated by a fat plane. Not
    validated against a reference (the shared cases end above the pelvis).
    """
    shape = muscle.shape
    out = {
        f"{name}_{side}": np.zeros(shape, dtype=bool)
        for name in ("gluteus_medius", "gluteus_maximus")
        for side in SIDES
    }
    sj, si = float(spacing[1]), float(spacing[2])
    jj, ii = np.mgrid[0 : shape[1], 0 : shape[2]]
    for k in np.nonzero(pelvis.any(axis=(1, 2)))[0]:
        midline = spine.center[k, 1] if spine.present[k] else shape[2] / 2.0
        bone_sides = {"left": pelvis[k] & (ii > midline), "right": pelvis[k] & (ii <= midline)}
        if not all(b.any() for b in bone_sides.values()):
            continue
        centres = [ndimage.center_of_mass(b) for b in bone_sides.values()]
        pj = float(np.mean([c[0] for c in centres]))
        pi = float(np.mean([c[1] for c in centres]))
        dj, di = (jj - pj) * sj, (ii - pi) * si
        theta = ((np.degrees(np.arctan2(dj, di)) + 360.0) % 360.0).astype(int)
        radius = np.hypot(dj, di)
        beneath = np.nan_to_num(depth[k], nan=-1.0) >= 0.0
        for side, bone in bone_sides.items():
            reach = np.zeros(360)
            np.maximum.at(reach, theta[bone], radius[bone])
            beyond = (reach[theta] > 0) & (radius > reach[theta])
            lateral = ii > midline if side == "left" else ii <= midline
            gluteal = muscle[k] & beneath & beyond & lateral
            if not gluteal.any():
                continue
            on_bone = ndimage.binary_dilation(bone, disk(5.0, (sj, si)))
            medius = split_bulges(gluteal, on_bone, (sj, si))
            out[f"gluteus_medius_{side}"][k] = medius
            behind = jj > np.nonzero(bone)[0].mean()
            out[f"gluteus_maximus_{side}"][k] = gluteal & ~medius & behind
    return out
