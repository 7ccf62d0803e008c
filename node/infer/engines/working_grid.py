"""A coarser internal grid for fine scanner series, and the labels mapped back to the source.

The classical engines reason about structures of centimetre size with rules in
millimetres; they were developed at 3 mm voxels. A scanner series of 0.7 mm pixels and
1 mm slices has 40 times more voxels and no more anatomy for those rules, so the engine
works on a grid of at most `WORK_SPACING` (each finer axis is box-averaged into bins of
about that size, which also averages out the noise of thin slices) and maps its labels
back to every source voxel. At the border of a label, where a coarse voxel straddles
muscle and fat, the source voxels below the muscle attenuation range are left out, so the
outline follows the source pixels; the SEG is written on the source geometry and its
volumes stay exactly SEG voxels x voxel volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# (k, j, i) mm: axes finer than this are binned. An axis is binned only when at least two
# source voxels fall in a bin: resampling by less than that blurs without saving time.
WORK_SPACING = np.array([3.0, 1.5, 1.5])


@dataclass(frozen=True)
class WorkingGrid:
    """How a canonical source array (k, j, i) maps to the working grid: `factor` source
    voxels per working voxel along each axis (1 where an axis is kept)."""

    source_shape: tuple[int, int, int]
    source_spacing: np.ndarray
    factor: np.ndarray

    @classmethod
    def for_source(cls, shape: tuple[int, ...], spacing: np.ndarray) -> WorkingGrid:
        ratio = WORK_SPACING / np.asarray(spacing, dtype=float)
        factor = np.where(ratio >= 2.0, ratio, 1.0)
        return cls((int(shape[0]), int(shape[1]), int(shape[2])), np.asarray(spacing), factor)

    @property
    def identity(self) -> bool:
        return bool(np.all(self.factor == 1.0))

    @property
    def shape(self) -> tuple[int, int, int]:
        n = np.maximum(1, np.round(np.array(self.source_shape) / self.factor)).astype(int)
        return int(n[0]), int(n[1]), int(n[2])

    @property
    def spacing(self) -> np.ndarray:
        return self.source_spacing * np.array(self.source_shape) / np.array(self.shape)

    def _source_to_working(self, axis: int) -> np.ndarray:
        """Working index of every source index along `axis` (bins of equal extent)."""
        n, m = self.source_shape[axis], self.shape[axis]
        return np.minimum((np.arange(n) * m) // n, m - 1)

    def down(self, array: np.ndarray) -> np.ndarray:
        """The mean of the source voxels in each working voxel (float32)."""
        out = np.asarray(array)
        if self.identity:
            return out.astype(np.float32)
        for axis in range(3):
            if self.factor[axis] == 1.0:
                continue
            index = self._source_to_working(axis)
            starts = np.nonzero(np.r_[True, np.diff(index) > 0])[0]
            counts = np.diff(np.r_[starts, len(index)]).astype(np.float32)
            shape = [1, 1, 1]
            shape[axis] = len(counts)
            out = _sum_bins(out, starts, axis) / counts.reshape(shape)
        return out.astype(np.float32, copy=False)

    def up(self, labels: np.ndarray, source: np.ndarray, below: float) -> np.ndarray:
        """Working labels on every source voxel (nearest working voxel); at a label's
        border, source voxels darker than `below` (fat) are left unlabelled."""
        if self.identity:
            return labels
        k, j, i = (self._source_to_working(axis) for axis in range(3))
        # One gather per axis, in-plane first on the few working slices, then whole
        # slices copied: the same labels as one 3D index gather, at a twentieth of the cost.
        out = labels.take(j, axis=1).take(i, axis=2).take(k, axis=0)
        cross = ndimage.generate_binary_structure(2, 1)[np.newaxis]
        border = (labels > 0) & (ndimage.grey_erosion(labels, footprint=cross) != labels)
        border |= (labels > 0) & (ndimage.grey_dilation(labels, footprint=cross) != labels)
        border = border.take(j, axis=1).take(i, axis=2)
        for n in range(out.shape[0]):
            out[n][border[k[n]] & (source[n] < below)] = 0
        return out

    def source_slice(self, k: int) -> int:
        """The source slice at the centre of working slice `k`."""
        n, m = self.source_shape[0], self.shape[0]
        return int(min(n - 1, ((2 * k + 1) * n) // (2 * m)))


# reduceat adds the first slice of a bin to the sum of the others, which numpy sums one
# after another when there are fewer than 8 of them (pairwise beyond: left to reduceat).
_SEQUENTIAL_BIN = 8


def _sum_bins(array: np.ndarray, starts: np.ndarray, axis: int) -> np.ndarray:
    """`np.add.reduceat(array, starts, axis, dtype=float32)`, bit for bit: along the slice
    axis, whole slices are added in reduceat's order, reading memory in order where
    reduceat strides across it for every pixel (a third of the working grid's cost)."""
    ends = np.r_[starts[1:], array.shape[axis]]
    if axis != 0 or np.max(ends - starts) > _SEQUENTIAL_BIN:
        return np.add.reduceat(array, starts, axis=axis, dtype=np.float32)
    out = np.empty((len(starts), *array.shape[1:]), dtype=np.float32)
    rest = np.empty(array.shape[1:], dtype=np.float32)
    for b, (start, end) in enumerate(zip(starts, ends, strict=True)):
        out[b] = array[start]
        if end - start < 2:
            continue
        rest[...] = array[start + 1]
        for k in range(start + 2, end):
            np.add(rest, array[k], out=rest, dtype=np.float32)
        np.add(out[b], rest, out=out[b])
    return out
