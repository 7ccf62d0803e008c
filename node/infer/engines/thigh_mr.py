"""Thigh muscles on MR with the femur as landmark: anterior, medial, posterior compartments.

On an axial thigh slice each leg is a separate body part. Subcutaneous fat is the fat
reached from the skin without crossing muscle; the femur is the round fat-bright marrow
(yellow marrow) ringed by dark cortex near the middle of the leg. The compartments are
grown from anatomical markers around the femur (anterior: quadriceps in front of it;
posterior: hamstrings behind it; medial: adductors on its medial side) by a watershed on
the fat-likeness, so their borders follow the fatty intermuscular septa. Not validated
against a reference (the shared cases contain no thigh).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from myonode.infer.engines.morphology import disk, smooth_in_plane

COMPARTMENTS = ("anterior", "medial", "posterior")


def _legs(body_slice: np.ndarray, spacing_ji: tuple[float, float]) -> list[np.ndarray]:
    """The two largest body parts of at least 40 cm² (a thigh cross-section is larger)."""
    labelled, count = ndimage.label(body_slice)
    if count < 2:
        return []
    areas = np.bincount(labelled.ravel())[1:] * spacing_ji[0] * spacing_ji[1]
    order = np.argsort(areas)[::-1][:2]
    if areas[order[1]] < 4000.0:
        return []
    return [labelled == n + 1 for n in order]


def _femur(
    likeness: np.ndarray, leg: np.ndarray, subcutaneous: np.ndarray, spacing_ji
) -> np.ndarray | None:
    """Marrow plus cortex of the femur: the fat-bright component inside the muscle mass
    nearest the leg's centre, 1.5-10 cm² and roughly round, widened by a 5 mm cortex."""
    sj, si = spacing_ji
    inner_fat = leg & (likeness >= 0.6) & ~subcutaneous
    labelled, _count = ndimage.label(inner_fat)
    cj, ci = ndimage.center_of_mass(leg)
    best = None
    for number, box in enumerate(ndimage.find_objects(labelled), start=1):
        part = labelled[box] == number
        area = part.sum() * sj * si
        if not 150.0 <= area <= 1000.0:
            continue
        rows, cols = np.nonzero(part)
        extent = max(np.ptp(rows) * sj, np.ptp(cols) * si) + max(sj, si)
        if extent > 2.2 * np.sqrt(area / np.pi) * 1.3:
            continue  # elongated: a septum or a vessel, not marrow
        dj = (rows.mean() + box[0].start - cj) * sj
        distance = np.hypot(dj, (cols.mean() + box[1].start - ci) * si)
        if best is None or distance < best[0]:
            best = (distance, number)
    if best is None:
        return None
    marrow = labelled == best[1]
    return ndimage.binary_dilation(ndimage.binary_fill_holes(marrow), disk(5.0, spacing_ji))


def thigh_compartments(
    likeness: np.ndarray, body: np.ndarray, spacing: np.ndarray, muscle_below: float
) -> tuple[dict[str, np.ndarray], int]:
    """Per side and compartment, the thigh muscle; and the number of slices measured."""
    shape = likeness.shape
    out = {
        f"{c}_{side}": np.zeros(shape, dtype=bool)
        for c in COMPARTMENTS
        for side in ("left", "right")
    }
    sj, si = float(spacing[1]), float(spacing[2])
    smooth = smooth_in_plane(likeness, 1.0, spacing)
    jj, ii = np.mgrid[0 : shape[1], 0 : shape[2]]
    measured = 0
    for k in range(shape[0]):
        legs = _legs(body[k], (sj, si))
        if not legs:
            continue
        centres = [ndimage.center_of_mass(leg)[1] for leg in legs]
        found = 0
        for leg, centre in zip(legs, centres, strict=True):
            side = "left" if centre > np.mean(centres) else "right"
            skin = leg & ~ndimage.binary_erosion(leg, disk(2.0, (sj, si)))
            fat = leg & (smooth[k] >= muscle_below)
            subcutaneous = ndimage.binary_propagation(skin & fat, mask=fat | skin)
            femur = _femur(smooth[k], leg, subcutaneous, (sj, si))
            if femur is None:
                continue
            muscle = leg & (smooth[k] < muscle_below) & ~subcutaneous & ~femur & ~skin
            fj, fi = ndimage.center_of_mass(femur)
            ahead = (fj - jj) * sj  # mm anterior of the femur
            medial = (fi - ii) * si if side == "left" else (ii - fi) * si
            markers = np.zeros(leg.shape, dtype=np.int32)
            markers[muscle & (ahead >= 25.0) & (np.abs(medial) <= 20.0)] = 1
            markers[muscle & (medial >= 30.0) & (np.abs(ahead) <= 15.0)] = 2
            markers[muscle & (ahead <= -30.0) & (medial <= 10.0) & (medial >= -25.0)] = 3
            if len(np.unique(markers)) < 4:
                continue
            basins = watershed(smooth[k], markers, mask=muscle)
            for n, compartment in enumerate(COMPARTMENTS, start=1):
                out[f"{compartment}_{side}"][k] = basins == n
            found += 1
        measured += found == 2
    return out, measured
