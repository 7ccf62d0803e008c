"""The muscular body wall on axial CT: the muscle layer between subcutaneous fat and the cavity.

Seen from the centre of an axial slice, every ray crosses skin, subcutaneous fat, the wall
muscles (abdominal wall, back, chest wall) and then the cavity (fat, organs, bowel). The
outer wall surface is where the subcutaneous fat ends. The inner surface is found as one
closed, smooth curve by dynamic programming over the angle: it prefers positions where
fat begins just inside, and where an organ touches the wall without a fat plane it follows
the wall thickness of its neighbours instead of wandering into the organ.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from myonode.infer.engines.morphology import largest_component, slice_disk

ANGLES = 360
MAX_DEPTH_MM = 60.0


def _polar(shape: tuple[int, int], center: tuple[float, float], spacing_ji: tuple[float, float]):
    jj, ii = np.mgrid[0 : shape[0], 0 : shape[1]]
    dj = (jj - center[0]) * spacing_ji[0]
    di = (ii - center[1]) * spacing_ji[1]
    theta = ((np.degrees(np.arctan2(dj, di)) + 360.0) % 360.0).astype(np.int32) % ANGLES
    return theta, np.hypot(dj, di)


def _circular_median(values: np.ndarray, width: int) -> np.ndarray:
    return ndimage.median_filter(values, size=width, mode="wrap")


def outer_surface(theta: np.ndarray, radius: np.ndarray, solid: np.ndarray) -> np.ndarray:
    """Per angle, the outermost radius of solid (non-fat) wall tissue beneath the skin."""
    outer = np.full(ANGLES, np.nan)
    if solid.any():
        np.fmax.at(outer, theta[solid], radius[solid])
    known = ~np.isnan(outer)
    if known.sum() < ANGLES // 4:
        return outer
    angles = np.arange(ANGLES)
    outer = np.interp(angles, angles[known], outer[known], period=ANGLES)
    return _circular_median(outer, 7)


def _closed_path(cost: np.ndarray, reach: int) -> np.ndarray:
    """Minimum-cost index per row of `cost` (..., angle, depth) with |change| <= reach
    between neighbouring rows, closed around the circle (unrolled three times, middle turn
    kept). Leading axes are independent problems solved together: the recursion over the
    angle is sequential, so one pass over many slices costs about as much as one slice."""
    tiled = np.concatenate([cost, cost, cost], axis=-2)
    lead, rows, n = cost.shape[:-2], tiled.shape[-2], cost.shape[-1]
    padded = np.full((*lead, n + 2 * reach), np.inf)
    padded[..., reach : reach + n] = tiled[..., 0, :]
    windows = sliding_window_view(padded, 2 * reach + 1, axis=-1)  # (..., n, 2 * reach + 1)
    back = np.zeros((*lead, rows, n), dtype=np.int32)
    offsets = np.arange(n) - reach
    for a in range(1, rows):
        choice = np.argmin(windows, axis=-1)  # the first minimum, as over a stacked window
        back[..., a, :] = offsets + choice
        best = np.take_along_axis(windows, choice[..., np.newaxis], axis=-1)[..., 0]
        padded[..., reach : reach + n] = best + tiled[..., a, :]
    path = np.zeros((*lead, rows), dtype=np.int32)
    path[..., -1] = np.argmin(padded[..., reach : reach + n], axis=-1)
    for a in range(rows - 1, 0, -1):
        step = np.take_along_axis(back[..., a, :], path[..., a, np.newaxis], axis=-1)
        path[..., a - 1] = step[..., 0]
    return path[..., ANGLES : 2 * ANGLES]


def inner_thickness(
    fat_profile: np.ndarray,
    min_mm: float,
    max_mm: float,
    step_mm: float = 1.0,
    max_change_mm: float = 2.0,
) -> np.ndarray:
    """Wall thickness per angle: a closed path through (angle, depth) by dynamic programming.

    `fat_profile[..., a, d]` is the fraction of fat at depth d (in `step_mm` bins) below the
    outer surface at angle a; leading axes (slices) are solved independently, in one pass.
    The cost of ending the wall at depth t is low when fat starts just
    inside (depth t..t+5 mm) and the last 3 mm of wall are not fat; a small bias towards
    thinner walls decides flat stretches. Successive angles may change by `max_change_mm`.
    A second pass penalises thickness far above this slice's median: where an organ or a
    bowel loop lies against the wall, the fat edge behind it must not pull the wall inward.
    """
    depths = np.arange(int(min_mm / step_mm), int(max_mm / step_mm) + 1)
    inside = np.stack(
        [fat_profile[..., d + 1 : d + 1 + int(5 / step_mm)].mean(axis=-1) for d in depths],
        axis=-1,
    )
    outside = np.stack(
        [fat_profile[..., max(d - int(3 / step_mm), 0) : d + 1].mean(axis=-1) for d in depths],
        axis=-1,
    )
    cost = -(inside - outside) + 0.15 * depths / depths[-1]
    reach = max(1, int(max_change_mm / step_mm))
    first = depths[_closed_path(cost, reach)] * step_mm
    typical = np.median(first, axis=-1, keepdims=True)
    excess = np.clip(depths * step_mm - np.maximum(1.6 * typical, typical + 4.0), 0.0, None)
    return depths[_closed_path(cost + 0.05 * excess[..., np.newaxis, :], reach)] * step_mm


def wall_band(
    solid: np.ndarray,
    body: np.ndarray,
    fat: np.ndarray,
    spacing: np.ndarray,
    max_thickness_mm: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The wall band per slice, and every voxel's depth (mm) below the outer wall surface.

    `solid` is tissue that is neither fat nor air (muscle, bone, organs), `fat` the fat.
    The band holds the voxels between the outer and the inner surface; the depth is
    negative in the subcutaneous fat and skin, and NaN on slices without a closed outline.
    """
    band = np.zeros_like(body)
    depth_map = np.full(body.shape, np.nan, dtype=np.float32)
    sj, si = float(spacing[1]), float(spacing[2])
    beneath_skin = ndimage.binary_erosion(body, slice_disk(3.0, spacing))
    solid = ndimage.binary_opening(beneath_skin & solid & ~fat, slice_disk(1.5, spacing))
    step = 1.0
    bins = int(MAX_DEPTH_MM / step)
    slices = []
    for k in range(body.shape[0]):
        trunk = largest_component(body[k])
        if not trunk.any():
            continue
        center = ndimage.center_of_mass(trunk)
        theta, radius = _polar(trunk.shape, center, (sj, si))
        outer = outer_surface(theta, radius, solid[k] & trunk)
        if np.isnan(outer).any():
            continue
        depth = outer[theta] - radius
        inside = trunk & (depth >= -step) & (depth < MAX_DEPTH_MM)
        index = theta[inside] * bins + np.clip((depth[inside] / step).astype(int), 0, bins - 1)
        counts = np.bincount(index, minlength=ANGLES * bins).reshape(ANGLES, bins)
        fats = np.bincount(index, weights=fat[k][inside], minlength=ANGLES * bins)
        # Normalised convolution: empty bins (coarse pixels, small radii) borrow neighbours.
        size = (5, max(3, int(2 * max(sj, si) / step) + 1))
        counts = ndimage.uniform_filter(counts.astype(float), size, mode=("wrap", "nearest"))
        fats = ndimage.uniform_filter(fats.reshape(ANGLES, bins), size, mode=("wrap", "nearest"))
        profile = np.divide(fats, counts, out=np.zeros((ANGLES, bins)), where=counts > 1e-6)
        slices.append((k, trunk, theta, depth, profile))
    if not slices:
        return band, depth_map
    thickness = inner_thickness(np.stack([s[-1] for s in slices]), 3.0, max_thickness_mm, step)
    for (k, trunk, theta, depth, _profile), wall in zip(slices, thickness, strict=True):
        band[k] = trunk & (depth >= -step) & (depth <= wall[theta])
        depth_map[k] = np.where(trunk, depth, np.nan)
    return band, depth_map
