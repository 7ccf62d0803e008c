"""Small image-analysis helpers shared by the classical engines (pure numpy/scipy).

Sizes are given in millimetres and turned into voxel structuring elements with the voxel
spacing, so the engines behave the same on 0.7 mm and 5 mm images.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import watershed


def disk(radius_mm: float, spacing_ji: tuple[float, float]) -> np.ndarray:
    """A 2D disk structuring element of `radius_mm` for in-plane pixel spacing (j, i)."""
    rj = max(int(radius_mm / spacing_ji[0]), 0)
    ri = max(int(radius_mm / spacing_ji[1]), 0)
    j, i = np.ogrid[-rj : rj + 1, -ri : ri + 1]
    return (j * spacing_ji[0]) ** 2 + (i * spacing_ji[1]) ** 2 <= radius_mm**2 + 1e-6


def slice_disk(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """`disk` as a 3D element that acts within each axial slice (spacing is (k, j, i))."""
    return disk(radius_mm, (float(spacing[1]), float(spacing[2])))[np.newaxis]


def largest_component(mask: np.ndarray) -> np.ndarray:
    labelled, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labelled.ravel())[1:]
    return labelled == int(np.argmax(sizes)) + 1


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill holes in every axial slice (3D hole filling would miss holes open in z)."""
    out = np.empty_like(mask, dtype=bool)
    for k in range(mask.shape[0]):
        out[k] = ndimage.binary_fill_holes(mask[k])
    return out


def smooth_in_plane(array: np.ndarray, sigma_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Gaussian smoothing within slices (no mixing across thick slices)."""
    sigma = (0.0, sigma_mm / float(spacing[1]), sigma_mm / float(spacing[2]))
    return ndimage.gaussian_filter(array.astype(np.float32), sigma=sigma)


def _box(mask: np.ndarray, margin: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The bounding box of `mask` grown by `margin` pixels per axis and clipped to the
    array; None when `mask` is empty. Morphology on the box equals morphology on the whole
    array wherever the result can be non-zero, when the margin covers the element's reach."""
    box = []
    for axis, extra in enumerate(margin):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        found = np.flatnonzero(mask.any(axis=others)) if others else np.flatnonzero(mask)
        if not len(found):
            return None
        box.append(
            slice(max(int(found[0]) - extra, 0), min(int(found[-1]) + extra + 1, mask.shape[axis]))
        )
    return tuple(box)


def _reach(element: np.ndarray, times: int = 1) -> tuple[int, ...]:
    """Pixels beyond its box that `times` passes of `element` can look, plus one."""
    return tuple(times * (n // 2) + 1 for n in element.shape)


def grow_from(
    candidates: np.ndarray, seeds: np.ndarray, radius_mm: float, spacing_ji: tuple[float, float]
) -> np.ndarray:
    """The parts of `candidates` thicker than 2*radius that touch `seeds` (one slice).

    Computed within the candidates' bounding box grown by the element (the seeds beyond
    it cannot reach a candidate): the same result, on a small part of the slice."""
    element = disk(max(radius_mm, *spacing_ji), spacing_ji)
    out = np.zeros(candidates.shape, dtype=bool)
    box = _box(candidates, _reach(element))
    if box is None:
        return out
    candidates, seeds = candidates[box], seeds[box]
    core = ndimage.binary_erosion(candidates, element)
    labelled, _count = ndimage.label(core)
    keep = np.unique(labelled[ndimage.binary_dilation(seeds, element) & core])
    keep = keep[keep != 0]
    if len(keep):
        out[box] = ndimage.binary_dilation(np.isin(labelled, keep), element) & candidates
    return out


def bulges(
    mask: np.ndarray, spacing_ji: tuple[float, float]
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Label `mask` (one slice) by bulge: watershed of the distance map, one basin per local
    maximum at least 6 mm from the next and 3 mm deep, one per part too thin for that.
    Returns the basins (1..n) and the deepest point of each, in label order.

    Computed within the mask's bounding box grown by the peak separation: beyond it there
    is no mask, no distance and no peak, and the nearest background of every pixel lies
    within it, so the basins are those of the whole slice."""
    separation = max(1, round(6.0 / min(spacing_ji)))
    box = _box(mask, (separation + 1,) * mask.ndim)
    basins = np.zeros(mask.shape, dtype=np.int32)
    if box is None:
        return basins, []
    inner, tops = _bulges_in(mask[box], spacing_ji, separation)
    basins[box] = inner
    offset = [s.start for s in box]
    return basins, [(j + offset[0], i + offset[1]) for j, i in tops]


def _bulges_in(
    mask: np.ndarray, spacing_ji: tuple[float, float], separation: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """`bulges` on an array that holds the whole mask with a margin around it."""
    distance = ndimage.distance_transform_edt(mask, sampling=spacing_ji)
    peaks = peak_local_max(distance, min_distance=separation, threshold_abs=3.0, labels=mask)
    tops = [(int(j), int(i)) for j, i in peaks]
    parts, _count = ndimage.label(mask)
    marked = set(parts[tuple(peaks.T)].tolist()) if len(peaks) else set()
    for number, box in enumerate(ndimage.find_objects(parts), start=1):
        if box is None or number in marked:
            continue
        local = np.where(parts[box] == number, distance[box], -1.0)
        j, i = np.unravel_index(int(np.argmax(local)), local.shape)
        tops.append((int(j + box[0].start), int(i + box[1].start)))
    markers = np.zeros(mask.shape, dtype=np.int32)
    for n, top in enumerate(tops, start=1):
        markers[top] = n
    return watershed(-distance, markers, mask=mask), tops


def split_bulges(
    mask: np.ndarray, keep_marker: np.ndarray, spacing_ji: tuple[float, float]
) -> np.ndarray:
    """The bulges of `mask` (see `bulges`) whose deepest point lies in `keep_marker`."""
    if not mask.any():
        return mask
    basins, tops = bulges(mask, spacing_ji)
    keep = [n for n, top in enumerate(tops, start=1) if keep_marker[top]]
    return np.isin(basins, keep)


def thin_part(mask: np.ndarray, max_radius_mm: float, spacing_ji: tuple[float, float]):
    """Where a disk larger than `max_radius_mm` does not fit inside `mask`."""
    return mask & (ndimage.distance_transform_edt(mask, sampling=spacing_ji) <= max_radius_mm)


def fill_muscle(
    mask: np.ndarray, allowed: np.ndarray, spacing_ji: tuple[float, float]
) -> np.ndarray:
    """Close small gaps and fill holes (intramuscular fat belongs to the muscle)."""
    element = disk(3.0, spacing_ji)
    out = np.zeros(mask.shape, dtype=bool)
    # Closing reaches twice the element beyond the mask, and a hole lies inside its outline.
    box = _box(mask, _reach(element, 2))
    if box is None:
        return out
    mask, allowed = mask[box], allowed[box]
    closed = ndimage.binary_closing(mask, element) & allowed
    out[box] = ndimage.binary_fill_holes(closed | mask) & allowed
    return out
