"""Real cases made harder on purpose: the same patient mirrored, cut, thicker, enhanced, fatter,
resampled to what a scanner sends, rolled on the table.

Each variant changes a reference case's image and its reference masks together, so the
engine's agreement on the variant can be set beside its agreement on the original. They
stand in for what the shared cases lack (a left-right mirrored patient, a narrow field of
view, 5 mm slices, intravenous contrast, obesity, no lung in view, 512 x 512 images of
0.7 mm pixels with thin slices, noise, a patient not lying straight) and are used by
`benchmarks/robustness.py` and the robustness tests. Arrays are first brought to positive
axes (k superior, j posterior, i left) so "left" and "top" mean the patient's. Every change
of the image is made alike to its channels (a Dixon fat image beside the water image).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from myonode.core.agreement import Agreement, agreement
from myonode.core.types import LabelMap, SegmentationEngine
from myonode.core.volume import Geometry, Volume, load_nifti, with_positive_axes
from myonode.infer.engines.landmarks_ct import body_mask

from support.reference_cases import ReferenceCase, labels_on_grid, load_image, predicted_mask, slab

Masks = dict[str, np.ndarray]
WITHIN = "within: "  # prefix of the mask that bounds a comparison (its slab)

# TotalSegmentator v2 ids of organs and vessels that take intravenous contrast, with a
# portal-venous phase enhancement (HU added): kidneys and large vessels strongly.
ENHANCEMENT = {2: 150.0, 3: 150.0, 52: 150.0, 63: 150.0, 64: 150.0, 1: 60.0, 5: 60.0}


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    apply: Callable[[Volume, Masks, np.ndarray], tuple[Volume, Masks]]
    engines: tuple[str, ...] = ("classical-ct", "classical-mr")  # CT-only: HU or CT labels


def positive(volume: Volume, masks: Masks, labels: np.ndarray) -> tuple[Volume, Masks, np.ndarray]:
    """The case with its arrays on positive patient axes (masks and labels alike)."""

    def along(array: np.ndarray) -> np.ndarray:
        return with_positive_axes(Volume(array, volume.geometry)).array

    return with_positive_axes(volume), {n: along(m) for n, m in masks.items()}, along(labels)


def mirror_name(name: str) -> str:
    """The comparison of the other side: 'psoas L' <-> 'psoas R'."""
    return re.sub(r"\b([LR])\b", lambda m: "R" if m.group(1) == "L" else "L", name)


def _each(
    volume: Volume, change: Callable[[np.ndarray], np.ndarray], geometry: Geometry | None = None
) -> Volume:
    """The image and each of its channels changed alike, on `geometry` (else the same)."""
    channels = {role: change(image) for role, image in volume.channels.items()}
    return Volume(change(volume.array), geometry or volume.geometry, channels=channels)


def _air(array: np.ndarray) -> float:
    """What lies outside the patient: -1000 HU on CT, no signal on MR."""
    return -1000.0 if float(array.min()) < -500.0 else 0.0


def mirrored(volume: Volume, masks: Masks, _labels: np.ndarray) -> tuple[Volume, Masks]:
    """The patient's left and right exchanged (as in situs-symmetric anatomy): the image
    is flipped across the sagittal plane, the geometry kept, each side's reference is the
    flipped reference of the other side."""
    out = {n: np.ascontiguousarray(masks.get(mirror_name(n), masks[n])[:, :, ::-1]) for n in masks}
    return _each(volume, lambda a: np.ascontiguousarray(a[:, :, ::-1])), out


def _cropped(volume: Volume, masks: Masks, box: tuple[slice, slice, slice]):
    start = [s.start or 0 for s in box]
    origin = volume.geometry.index_to_lps(np.array([start[2], start[1], start[0]]))[0]
    geometry = Geometry(origin, volume.geometry.directions, volume.geometry.spacing)
    cut = {n: np.ascontiguousarray(m[box]) for n, m in masks.items()}
    return _each(volume, lambda a: np.ascontiguousarray(a[box]), geometry), cut


def right_side_cut(volume: Volume, masks: Masks, _labels: np.ndarray) -> tuple[Volume, Masks]:
    """A field of view that cuts the patient's right flank: the columns right of a line
    a quarter of the body's width from its right edge are removed."""
    columns = np.nonzero(body_mask(volume.array, _spacing(volume)).any(axis=(0, 1)))[0]
    first = int(columns.min() + 0.25 * (columns.max() - columns.min()))
    return _cropped(volume, masks, (slice(None), slice(None), slice(first, None)))


def lungs_cut(volume: Volume, masks: Masks, labels: np.ndarray) -> tuple[Volume, Masks]:
    """The field of view ends 10 mm below the lung bases (no lung, no lowest rib head
    guaranteed): the region's top must then be reported as absent."""
    lung = np.isin(labels, (10, 11, 12, 13, 14)).any(axis=(1, 2))
    if not lung.any():
        return volume, masks
    stop = max(1, int(np.nonzero(lung)[0].min() - round(10.0 / volume.geometry.spacing[2])))
    return _cropped(volume, masks, (slice(0, stop), slice(None), slice(None)))


def thick_slices(volume: Volume, masks: Masks, _labels: np.ndarray) -> tuple[Volume, Masks]:
    """5 mm slices reconstructed from the thinner ones: each new slice is the mean over its
    5 mm slab (partial volume as a scanner makes it); references take the nearest slice."""
    step = float(volume.geometry.spacing[2])
    n = volume.array.shape[0]
    extent = n * step
    centres = np.arange(2.5, extent - 2.5 + 1e-6, 5.0)
    z = (np.arange(n) + 0.5) * step
    weights, nearest = [], []
    for c in centres:
        weight = np.clip(
            np.minimum(z + step / 2, c + 2.5) - np.maximum(z - step / 2, c - 2.5), 0, None
        )
        weights.append(weight / weight.sum())
        nearest.append(int(np.argmin(np.abs(z - c))))

    def slabs(array: np.ndarray) -> np.ndarray:
        return np.stack([np.tensordot(w, array, axes=(0, 0)) for w in weights]).astype(np.float32)

    origin = volume.geometry.index_to_lps(np.array([0.0, 0.0, (centres[0] - 0.5 * step) / step]))[0]
    spacing = volume.geometry.spacing.copy()
    spacing[2] = 5.0
    geometry = Geometry(origin, volume.geometry.directions, spacing)
    out = {name: np.ascontiguousarray(m[nearest]) for name, m in masks.items()}
    return _each(volume, slabs, geometry), out


def enhanced(volume: Volume, masks: Masks, labels: np.ndarray) -> tuple[Volume, Masks]:
    """Portal-venous contrast: kidneys and great vessels +150 HU, liver and spleen +60 HU
    (inside the reference organ labels), muscle unchanged."""
    array = volume.array.astype(np.float32).copy()
    for value, added in ENHANCEMENT.items():
        array[labels == value] += added
    return Volume(array, volume.geometry), masks


def obese(volume: Volume, masks: Masks, _labels: np.ndarray) -> tuple[Volume, Masks]:
    """30 mm more subcutaneous fat all round (noisy fat, a new skin line), the table and
    anything else outside the patient removed; the grid grows to hold it."""
    spacing = _spacing(volume)
    pad_j, pad_i = (int(np.ceil(30.0 / s)) + 2 for s in spacing[1:])
    widths = ((0, 0), (pad_j, pad_j), (pad_i, pad_i))
    array = np.pad(volume.array.astype(np.float32), widths, constant_values=-1000.0)
    body = np.pad(body_mask(volume.array, spacing), widths)
    array[~body] = -1000.0
    outside = np.stack([ndimage.distance_transform_edt(~b, sampling=spacing[1:]) for b in body])
    rng = np.random.default_rng(6)
    fat = (outside > 0) & (outside <= 28.0)
    array[fat] = rng.normal(-100.0, 12.0, int(fat.sum()))
    skin = (outside > 28.0) & (outside <= 30.0)
    array[skin] = rng.normal(40.0, 10.0, int(skin.sum()))
    origin = volume.geometry.index_to_lps(np.array([-pad_i, -pad_j, 0]))[0]
    geometry = Geometry(origin, volume.geometry.directions, volume.geometry.spacing)
    out = {n: np.pad(m, widths) for n, m in masks.items()}
    return Volume(array, geometry), out


def _pack(masks: Masks) -> tuple[list[str], np.ndarray]:
    """All masks as bits of one integer array, so a resampling moves them together."""
    names = list(masks)
    packed = np.zeros(next(iter(masks.values())).shape, dtype=np.uint64)
    for bit, name in enumerate(names):
        packed |= masks[name].astype(np.uint64) << np.uint64(bit)
    return names, packed


def _unpack(names: list[str], packed: np.ndarray) -> Masks:
    return {name: (packed >> np.uint64(bit)) & np.uint64(1) > 0 for bit, name in enumerate(names)}


def resampled(
    volume: Volume, masks: Masks, spacing_kji: tuple[float, float, float], most: tuple[int, ...]
) -> tuple[Volume, Masks]:
    """The same patient on another axial grid (linear interpolation of HU, nearest for the
    references), centred on the original field of view: at most `most[0]` slices within
    its extent, and images of exactly `most[1]` x `most[2]` pixels, as a scanner sends
    them (air where the original field of view ends in-plane; across z the edge slices'
    values go on, so no air is blended into the first and last slices)."""
    source = _spacing(volume)
    target = np.asarray(spacing_kji, dtype=float)
    extent = np.array(volume.array.shape) * source
    shape = np.array([min(int(extent[0] // target[0]), most[0]), most[1], most[2]])
    scale = target / source
    offset = (np.array(volume.array.shape) - 1) / 2.0 - scale * (shape - 1) / 2.0

    def resample(array: np.ndarray, order: int) -> np.ndarray:
        return ndimage.affine_transform(
            array, scale, offset, output_shape=tuple(shape), order=order, mode="nearest"
        )

    outside = []
    for axis in (1, 2):
        position = scale[axis] * np.arange(shape[axis]) + offset[axis]
        index: list[slice | np.ndarray] = [slice(None)] * 3
        index[axis] = (position < -0.5) | (position > volume.array.shape[axis] - 0.5)
        outside.append(tuple(index))

    def image(array: np.ndarray) -> np.ndarray:
        out = resample(array.astype(np.float32), 1)
        for index in outside:
            out[index] = _air(array)
        return out

    names, packed = _pack(masks)
    packed = resample(packed, 0)
    for index in outside:
        packed[index] = 0
    origin = volume.geometry.index_to_lps(np.array([offset[2], offset[1], offset[0]]))[0]
    geometry = Geometry(origin, volume.geometry.directions, target[::-1].copy())
    return _each(volume, image, geometry), _unpack(names, packed)


def scanner_thin(volume: Volume, masks: Masks, _labels: np.ndarray) -> tuple[Volume, Masks]:
    """What a scanner sends: 512 x 512 pixels of 0.7 mm (a 358 mm field of view), 1.1 mm
    slices, at most 300."""
    return resampled(volume, masks, (1.1, 0.7, 0.7), (300, 512, 512))


def scanner_2mm(volume: Volume, masks: Masks, _labels: np.ndarray) -> tuple[Volume, Masks]:
    """512 x 512 pixels of 0.7 mm with 2 mm slices."""
    return resampled(volume, masks, (2.0, 0.7, 0.7), (400, 512, 512))


def thick_noisy(volume: Volume, masks: Masks, labels: np.ndarray) -> tuple[Volume, Masks]:
    """5 mm slabs (`thick_slices`) with 20 HU of Gaussian noise added (a low-dose scan)."""
    volume, masks = thick_slices(volume, masks, labels)
    noise = np.random.default_rng(13).normal(0.0, 20.0, volume.array.shape)
    return Volume((volume.array + noise).astype(np.float32), volume.geometry), masks


def rotated(volume: Volume, masks: Masks, _labels: np.ndarray) -> tuple[Volume, Masks]:
    """The patient lying rolled by 10 degrees on the table (in-plane rotation about the
    centre of the field of view; the image grid kept)."""

    def turn(array: np.ndarray, order: int, cval: float) -> np.ndarray:
        return ndimage.rotate(array, 10.0, axes=(1, 2), reshape=False, order=order, cval=cval)

    names, packed = _pack(masks)
    turned = _each(volume, lambda a: turn(a.astype(np.float32), 1, _air(a)))
    return turned, _unpack(names, turn(packed, 0, 0))


def mr_coarse(volume: Volume, masks: Masks, _labels: np.ndarray) -> tuple[Volume, Masks]:
    """A routine MR matrix: 256 x 256 pixels of 1.5 mm (a 384 mm field of view), the
    slices kept."""
    slice_mm = float(volume.geometry.spacing[2])
    return resampled(volume, masks, (slice_mm, 1.5, 1.5), (volume.array.shape[0], 256, 256))


MR_NOISE = 0.03  # of the 99th percentile of each image


def mr_thick_noisy(volume: Volume, masks: Masks, labels: np.ndarray) -> tuple[Volume, Masks]:
    """5 mm slabs (`thick_slices`) with magnitude (Rician) noise: Gaussian noise of
    `MR_NOISE` times the image's 99th percentile on the real and imaginary parts, drawn
    afresh for each channel (the water and fat images do not share their noise)."""
    volume, masks = thick_slices(volume, masks, labels)
    rng = np.random.default_rng(13)

    def noisy(array: np.ndarray) -> np.ndarray:
        sigma = MR_NOISE * float(np.percentile(array, 99))
        real = array + rng.normal(0.0, sigma, array.shape)
        imaginary = rng.normal(0.0, sigma, array.shape)
        return np.hypot(real, imaginary).astype(np.float32)

    return _each(volume, noisy), masks


def _spacing(volume: Volume) -> np.ndarray:
    """(k, j, i) spacing of a positive-axes volume."""
    return volume.geometry.spacing[::-1].astype(float)


CT = ("classical-ct",)
MR = ("classical-mr",)
VARIANTS: tuple[Variant, ...] = (
    Variant("mirrored", "left and right exchanged", mirrored),
    Variant("right side cut", "field of view cuts the right flank", right_side_cut, CT),
    Variant("no lungs", "field of view ends below the lung bases", lungs_cut, CT),
    Variant("5 mm slices", "slabs averaged to 5 mm", thick_slices),
    Variant("contrast", "kidneys, vessels +150 HU; liver, spleen +60 HU", enhanced, CT),
    Variant("obese", "30 mm more subcutaneous fat", obese, CT),
    Variant("scanner 512 1.1 mm", "512 x 512 at 0.7 mm, 1.1 mm slices (<= 300)", scanner_thin, CT),
    Variant("scanner 512 2 mm", "512 x 512 at 0.7 mm, 2 mm slices", scanner_2mm, CT),
    Variant("5 mm + noise", "5 mm slabs, 20 HU noise", thick_noisy, CT),
    Variant("rotated 10", "patient rolled 10 degrees on the table", rotated),
    Variant("MR 256 at 1.5 mm", "256 x 256 pixels of 1.5 mm, slices kept", mr_coarse, MR),
    Variant("MR 5 mm + noise", "5 mm slabs, Rician noise (3 % of p99)", mr_thick_noisy, MR),
)


@dataclass
class VariantResult:
    case: ReferenceCase
    variant: Variant
    label_map: LabelMap
    agreements: dict[str, Agreement]


def evaluate_variant(
    case: ReferenceCase, variant: Variant, engine: SegmentationEngine, data_dir: Path
) -> VariantResult:
    """Run `engine` on `variant` of the case and compare every listed structure."""
    volume = load_image(data_dir / case.image)
    for role, file in case.channels:
        volume.channels[role] = load_image(data_dir / file).array
    files: dict[str, np.ndarray] = {}
    masks: Masks = {}
    for comparison in case.comparisons:
        file = comparison.reference_file or case.labels
        if file not in files:
            files[file] = labels_on_grid(load_nifti(data_dir / file), volume.geometry, volume.shape)
        masks[comparison.name] = np.isin(files[file], comparison.reference_values)
        if comparison.within:
            # The slab moves with the image, as the references do.
            bounds = slab(files[case.labels], comparison.within)
            masks[WITHIN + comparison.name] = np.broadcast_to(bounds, volume.shape).copy()
            masks[comparison.name] &= masks[WITHIN + comparison.name]
    volume, masks, labels = positive(volume, masks, files[case.labels])
    volume, masks = variant.apply(volume, masks, labels)
    label_map = engine.segment(volume)
    agreements = {}
    for c in case.comparisons:
        predicted = predicted_mask(label_map, c.structure_keys)
        if c.within:
            predicted &= masks[WITHIN + c.name]
        agreements[c.name] = agreement(predicted, masks[c.name], volume.geometry.voxel_volume_mm3)
    return VariantResult(case, variant, label_map, agreements)
