"""What happens to an image between the node's `Volume` and a network, and back.

Networks see one canonical orientation, whatever the source: array axes (k, j, i) run
towards patient Superior, Posterior and Left (LPS, the usual axial DICOM order). Volumes from
DICOM (LPS) and NIfTI (RAS on disk, LPS in `Volume.geometry`) meet the same network the same
way. Reorientation is a transpose plus flips, so it is exact and exactly invertible: labels
come back on the source grid voxel for voxel. Resampling to a bundle's spacing happens after
reorientation, and predictions are resampled back before the argmax.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from myonode.core.volume import Geometry, Volume
from myonode.models.bundle import InputSpec


class InputError(ValueError):
    """A volume lacks what a bundle needs (a channel, a plausible geometry)."""


@dataclass(frozen=True)
class Orientation:
    """How a source array [k, j, i] was turned into canonical order, to undo it exactly.

    `axes[n]` is the source array axis that became canonical axis n; `flips[n]` says whether
    that axis was reversed.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Reorient [..., k, j, i] (leading axes, e.g. channels, are kept)."""
        lead = array.ndim - 3
        out = np.transpose(array, (*range(lead), *(lead + a for a in self.axes)))
        flip_axes = tuple(lead + n for n, f in enumerate(self.flips) if f)
        return np.flip(out, axis=flip_axes) if flip_axes else out

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        lead = array.ndim - 3
        flip_axes = tuple(lead + n for n, f in enumerate(self.flips) if f)
        if flip_axes:
            array = np.flip(array, axis=flip_axes)
        inverse = np.argsort(self.axes)
        return np.transpose(array, (*range(lead), *(lead + int(a) for a in inverse)))

    def spacing(self, geometry: Geometry) -> tuple[float, float, float]:
        """Canonical spacing as (i, j, k) mm, like `Geometry.spacing`."""
        by_array_axis = (geometry.spacing[2], geometry.spacing[1], geometry.spacing[0])
        k, j, i = (float(by_array_axis[a]) for a in self.axes)
        return (i, j, k)


def orientation_of(geometry: Geometry) -> Orientation:
    """The reorientation that brings a grid closest to canonical (S, P, L) array axes.

    Each array axis goes to the patient axis its direction is closest to; oblique grids are
    reoriented to the nearest axes (the voxels are not resampled, so this stays exact).
    """
    # Array axis 0 is k (geometry column 2), 1 is j (column 1), 2 is i (column 0).
    directions = np.stack(
        [geometry.directions[:, 2], geometry.directions[:, 1], geometry.directions[:, 0]]
    )
    dominant = np.argmax(np.abs(directions), axis=1)  # patient axis (0=x L, 1=y P, 2=z S)
    if len(set(dominant.tolist())) != 3:
        raise InputError("two image axes point along the same patient axis (grid too oblique)")
    # Canonical axis 0 is patient z, 1 is y, 2 is x.
    axes = tuple(int(np.flatnonzero(dominant == patient)[0]) for patient in (2, 1, 0))
    flips = tuple(bool(directions[a, p] < 0) for a, p in zip(axes, (2, 1, 0), strict=True))
    return Orientation(axes=axes, flips=flips)  # type: ignore[arg-type]


def stack_channels(volume: Volume, channels: list[str]) -> np.ndarray:
    """[C, k, j, i] float32 from the roles a bundle asks for ("image" = `Volume.array`)."""
    arrays = []
    for role in channels:
        if role == "image":
            arrays.append(volume.array)
        elif role in volume.channels:
            arrays.append(volume.channels[role])
        else:
            available = ", ".join(["image", *volume.channels]) or "none"
            raise InputError(f"the bundle needs channel {role!r}; the volume has {available}")
    if len(arrays) == 1 and arrays[0].dtype == np.float32:
        return arrays[0][np.newaxis]  # a view: no copy of a large CT
    stacked = np.stack([np.asarray(a, dtype=np.float32) for a in arrays])
    if stacked.shape[1:] != volume.array.shape:
        raise InputError("channels are not on the volume's grid")
    return stacked


def resampled_shape(
    shape: tuple[int, int, int],
    spacing_ijk: tuple[float, float, float],
    target_ijk: tuple[float, float, float] | None,
    in_plane_only: bool = False,
) -> tuple[int, int, int]:
    """Array shape [k, j, i] on the target spacing (native where target is None)."""
    if target_ijk is None:
        return shape
    factors = [spacing_ijk[2] / target_ijk[2], spacing_ijk[1] / target_ijk[1]]
    factors.append(spacing_ijk[0] / target_ijk[0])
    if in_plane_only:
        factors[0] = 1.0
    return tuple(max(1, round(n * f)) for n, f in zip(shape, factors, strict=True))  # type: ignore[return-value]


def resize(tensor: torch.Tensor, shape: tuple[int, ...], mode: str) -> torch.Tensor:
    """Resize [N, C, *spatial] to `shape` (trilinear/bilinear for images, nearest for labels)."""
    if tuple(tensor.shape[2:]) == tuple(shape):
        return tensor
    if mode == "nearest":
        return torch.nn.functional.interpolate(tensor, size=shape, mode="nearest-exact")
    return torch.nn.functional.interpolate(tensor, size=shape, mode=mode, align_corners=False)


def normalizer(array: np.ndarray, spec: InputSpec) -> Callable[[np.ndarray], np.ndarray]:
    """The bundle's intensity normalisation with statistics taken from all of `array`
    [C, ...], to apply to it or to parts of it (batches of slices): window to [0, 1],
    z-score per channel, or none."""
    if spec.normalize == "window":
        low, high = spec.window  # type: ignore[misc]
        return lambda a: ((np.clip(a, low, high) - low) / (high - low)).astype(np.float32)
    if spec.normalize == "zscore":
        axes = tuple(range(1, array.ndim))
        mean = array.mean(axis=axes, dtype=np.float64)
        std = np.maximum(array.std(axis=axes, dtype=np.float64), 1e-6)
        shape = (-1,) + (1,) * (array.ndim - 1)
        mean, std = mean.reshape(shape), std.reshape(shape)
        return lambda a: ((a - mean) / std).astype(np.float32)
    return lambda a: a.astype(np.float32)


def normalize(array: np.ndarray, spec: InputSpec) -> np.ndarray:
    return normalizer(array, spec)(array)


def body_midline(image: np.ndarray) -> int:
    """Column (canonical i) of the body's left-right centre: the centroid of voxels brighter
    than the mean. Seed 001 crops around hip landmarks; without a landmark detector the
    node splits left from right at this midline instead."""
    foreground = image > image.mean()
    if not foreground.any():
        return image.shape[-1] // 2
    columns = np.nonzero(foreground)[-1]
    return int(np.clip(round(float(columns.mean())), 1, image.shape[-1] - 1))


@dataclass(frozen=True)
class Side:
    """Part of a canonical volume a network sees: all of it, or one body side (seed 001).

    Seed 001 trains one network on right-sided crops and on left crops mirrored to look like
    right ones. Canonical i runs towards patient Left, so the low columns are the Right side;
    the Left part is flipped along i.
    """

    name: str | None
    columns: slice
    flipped: bool

    def cut(self, array: np.ndarray) -> np.ndarray:
        part = array[..., self.columns]
        return np.ascontiguousarray(part[..., ::-1] if self.flipped else part)

    def uncut(self, part: np.ndarray) -> np.ndarray:
        """Undo `cut`'s flip (the caller places the result at `columns`)."""
        return part[..., ::-1] if self.flipped else part


def sides(image: np.ndarray, mirror_lr: bool) -> list[Side]:
    """[whole volume], or [right side, mirrored left side] split at the body midline."""
    if not mirror_lr:
        return [Side(None, slice(None), False)]
    mid = body_midline(image)
    return [Side("right", slice(0, mid), False), Side("left", slice(mid, None), True)]


def radiograph(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Seed 004's input: resize to `image_size` (224x224), then CLAHE, values in [0, 1]."""
    from skimage.exposure import equalize_adapthist
    from skimage.transform import resize as sk_resize

    if image.ndim != 2:
        raise InputError(f"a radiograph is one 2D image, got shape {image.shape}")
    image = image.astype(np.float64)
    low, high = np.percentile(image, [0.5, 99.5])
    scaled = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)
    if spec.image_size is not None:
        scaled = sk_resize(scaled, spec.image_size, anti_aliasing=True)
    if spec.clahe:
        scaled = equalize_adapthist(np.clip(scaled, 0.0, 1.0))
    return scaled.astype(np.float32)
