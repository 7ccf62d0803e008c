"""Dixon stations fused onto one grid (seed 002's recipe).

One global grid spans all kept stations (in-plane spacing from PixelSpacing, z spacing the median
slice distance, the finest of the stations on each axis); every station is resampled onto it by
trilinear interpolation, and overlaps are averaged. Which stations to fuse is routing's decision
(`myonode.route.dixon`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from myonode.core.volume import Geometry, Volume, VolumeError


def _axis_weights(
    target: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For fractional indices `target` along an axis of `size` samples: the valid mask, the
    lower and upper neighbours and the upper weight of linear interpolation."""
    eps = 1e-6
    valid = (target >= -eps) & (target <= size - 1 + eps)
    clipped = np.clip(target, 0, size - 1)
    lower = np.minimum(np.floor(clipped).astype(int), max(size - 2, 0))
    weight = clipped - lower
    upper = np.minimum(lower + 1, size - 1)
    return valid, lower, upper, weight


def _interpolate_axis(array: np.ndarray, axis: int, lower, upper, weight) -> np.ndarray:
    shape = [1, 1, 1]
    shape[axis] = -1
    w = weight.reshape(shape)
    return np.take(array, lower, axis=axis) * (1 - w) + np.take(array, upper, axis=axis) * w


def fuse_stations(stations: Sequence[Volume], orientation_tolerance: float = 1e-3) -> Volume:
    """Fuse co-oriented station volumes onto one grid (trilinear, overlaps averaged).

    Every station's `channels` present in all stations are fused the same way. The result's
    `datasets` are the source headers of all stations in order (for references); with more
    than one station they are not one per fused slice.
    """
    if not stations:
        raise VolumeError("no stations to fuse")
    directions = stations[0].geometry.directions
    for station in stations[1:]:
        if np.max(np.abs(station.geometry.directions - directions)) > orientation_tolerance:
            raise VolumeError("stations have different orientations; they cannot share one grid")
    spacing = np.min([s.geometry.spacing for s in stations], axis=0)
    lows, highs = [], []
    for station in stations:
        start = directions.T @ station.geometry.origin  # coordinates in the grid frame
        size = np.array(station.array.shape[::-1], dtype=float)  # (i, j, k)
        lows.append(start)
        highs.append(start + (size - 1) * station.geometry.spacing)
    low, high = np.min(lows, axis=0), np.max(highs, axis=0)
    shape_ijk = (np.floor((high - low) / spacing + 1e-6).astype(int) + 1).tolist()
    geometry = Geometry(origin=directions @ low, directions=directions, spacing=spacing)
    names = [n for n in stations[0].channels if all(n in s.channels for s in stations)]
    total = {name: np.zeros(shape_ijk[::-1], dtype=np.float64) for name in ["", *names]}
    count = np.zeros(shape_ijk[::-1], dtype=np.uint8)
    for station, start in zip(stations, lows, strict=True):
        windows, weights = [], []
        for axis_ijk in range(3):
            grid = low[axis_ijk] + np.arange(shape_ijk[axis_ijk]) * spacing[axis_ijk]
            fractional = (grid - start[axis_ijk]) / station.geometry.spacing[axis_ijk]
            size = station.array.shape[2 - axis_ijk]
            valid, lower, upper, weight = _axis_weights(fractional, size)
            where = np.nonzero(valid)[0]
            window = slice(int(where[0]), int(where[-1]) + 1) if len(where) else slice(0, 0)
            windows.append(window)
            weights.append((lower[window], upper[window], weight[window]))
        if any(w.stop <= w.start for w in windows):
            continue
        target = (windows[2], windows[1], windows[0])  # array order k, j, i
        for name in total:
            image = station.array if name == "" else station.channels[name]
            resampled = np.asarray(image, dtype=np.float64)
            for axis_ijk in range(3):
                resampled = _interpolate_axis(resampled, 2 - axis_ijk, *weights[axis_ijk])
            total[name][target] += resampled
        count[target] += 1
    covered = count > 0
    fused = {}
    for name, values in total.items():
        out = np.zeros(values.shape, dtype=np.float32)
        out[covered] = values[covered] / count[covered]
        fused[name] = out
    datasets = [ds for station in stations for ds in station.datasets]
    return Volume(
        array=fused.pop(""),
        geometry=geometry,
        datasets=datasets,
        channels=fused,
    )
