"""Image volumes with their patient geometry, built from DICOM series or NIfTI files.

Arrays are indexed ``[k, j, i]`` = (slice, row, column). `Geometry` maps voxel indices to
DICOM patient coordinates (LPS, millimetres) exactly as PS3.3 C.7.6.2.1.1 defines them, so a
label map computed on the array lands on the right pixels of the source images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from myonode.dicom import multiframe

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class VolumeError(ValueError):
    """A series cannot be assembled into one regular volume; the message says why."""


@dataclass(frozen=True)
class Geometry:
    """Voxel grid in patient space: origin of voxel (0,0,0), unit axes and spacing per axis.

    `directions[:, 0]` is the direction of increasing column index i (DICOM row direction,
    first triplet of ImageOrientationPatient), `[:, 1]` of increasing row index j, and
    `[:, 2]` of increasing slice index k. `spacing` is (i, j, k) in mm.
    """

    origin: np.ndarray
    directions: np.ndarray
    spacing: np.ndarray

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix taking (i, j, k, 1) to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.directions * self.spacing[np.newaxis, :]
        matrix[:3, 3] = self.origin
        return matrix

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.directions)) * np.prod(self.spacing))

    def ras_affine(self) -> np.ndarray:
        """The affine a NIfTI file stores for the array transposed to (i, j, k)."""
        return LPS_TO_RAS @ self.affine

    @classmethod
    def from_affine(cls, affine: np.ndarray) -> Geometry:
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        return cls(
            origin=np.asarray(affine[:3, 3], dtype=float),
            directions=affine[:3, :3] / spacing[np.newaxis, :],
            spacing=spacing,
        )

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.atleast_2d(ijk).astype(float)
        return ijk @ (self.directions * self.spacing).T + self.origin


@dataclass
class Volume:
    """A scalar volume, its geometry and (for DICOM sources) the headers of its slices.

    `datasets[k]` is the header of slice k, pixel data removed, in array order; encoders use
    them to reference the source images. For an Enhanced (multi-frame) source, `datasets`
    holds its one header and `frame_numbers[k]` is the frame (1-based) slice k was read from.
    `channels` holds further co-registered images on the same grid, by role (e.g. ``"fat"``
    beside a Dixon water image in `array`).
    """

    array: np.ndarray
    geometry: Geometry
    datasets: list[Dataset] = field(default_factory=list)
    channels: dict[str, np.ndarray] = field(default_factory=dict)
    frame_numbers: list[int] | None = None

    @property
    def slices_are_sources(self) -> bool:
        """Whether `datasets[k]` is the source image of array slice k (one series, in order).

        False for volumes resampled from several series, e.g. fused Dixon stations, whose
        `datasets` are all their source headers.
        """
        if self.frame_numbers is not None:
            return len(self.datasets) == 1 and len(self.frame_numbers) == self.array.shape[0]
        series = {str(ds.SeriesInstanceUID) for ds in self.datasets}
        return len(self.datasets) == self.array.shape[0] and len(series) == 1

    def source_of(self, k: int) -> tuple[Dataset, int | None]:
        """The source image of slice k and its frame number (None: a single-frame image);
        only where `slices_are_sources`."""
        if self.frame_numbers is not None:
            return self.datasets[0], self.frame_numbers[k]
        return self.datasets[k], None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]


def with_positive_axes(volume: Volume) -> Volume:
    """The same image with each array axis flipped where it runs against patient L, P or S.

    For an axis-aligned volume (e.g. a RAS NIfTI read into LPS) this gives the usual DICOM
    axial orientation (ImageOrientationPatient 1/0/0/0/1/0, feet to head), so written slices
    display the usual way up. Oblique volumes keep their geometry; only signs change.
    """
    origin = volume.geometry.origin.copy()
    directions = volume.geometry.directions.copy()
    flipped_array_axes = []
    for axis in range(3):
        dominant = int(np.argmax(np.abs(directions[:, axis])))
        if directions[dominant, axis] >= 0:
            continue
        count = volume.array.shape[2 - axis]  # the array is indexed [k, j, i]
        origin = origin + directions[:, axis] * volume.geometry.spacing[axis] * (count - 1)
        directions[:, axis] = -directions[:, axis]
        flipped_array_axes.append(2 - axis)

    def flip(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.flip(array, axis=flipped_array_axes))

    geometry = Geometry(origin=origin, directions=directions, spacing=volume.geometry.spacing)
    channels = {role: flip(image) for role, image in volume.channels.items()}
    return Volume(flip(volume.array), geometry, volume.datasets, channels, volume.frame_numbers)


def _slice_normal(orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:], dtype=float)
    return row, col, np.cross(row, col)


def volume_from_datasets(
    datasets: Sequence[Dataset],
    orientation_tolerance: float = 1e-3,
    spacing_tolerance_mm: float = 0.05,
) -> Volume:
    """Assemble single-frame slices of one series into a regular volume.

    Slices are ordered along the slice normal. Refuses (VolumeError) mixed orientation or
    matrix sizes, duplicated positions and non-uniform spacing instead of guessing.
    """
    if not datasets:
        raise VolumeError("no slices")
    first = datasets[0]
    for ds in datasets:
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise VolumeError("multi-frame images are not assembled by this loader")
        for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
            if keyword not in ds or not ds.get(keyword):
                raise VolumeError(f"slice {ds.get('SOPInstanceUID', '?')} has no {keyword}")
    orientation = np.asarray(first.ImageOrientationPatient, dtype=float)
    row, col, normal = _slice_normal(orientation)
    for ds in datasets[1:]:
        if (
            np.max(np.abs(np.asarray(ds.ImageOrientationPatient, float) - orientation))
            > orientation_tolerance
        ):
            raise VolumeError("slices have different ImageOrientationPatient")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise VolumeError("slices have different matrix sizes")
        if (
            np.max(
                np.abs(np.asarray(ds.PixelSpacing, float) - np.asarray(first.PixelSpacing, float))
            )
            > 1e-4
        ):
            raise VolumeError("slices have different PixelSpacing")
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in datasets])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    ordered = [datasets[i] for i in order]
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        raise VolumeError("duplicated slice positions")
    if len(gaps) and np.max(np.abs(gaps - np.median(gaps))) > spacing_tolerance_mm:
        raise VolumeError(f"non-uniform slice spacing ({gaps.min():.3f}-{gaps.max():.3f} mm)")
    slice_spacing = (
        float(np.median(gaps)) if len(gaps) else float(first.get("SliceThickness") or 1.0)
    )
    pixel_spacing = np.asarray(first.PixelSpacing, dtype=float)  # (row spacing, column spacing)
    geometry = Geometry(
        origin=positions[order[0]],
        directions=np.stack([row, col, normal], axis=1),
        spacing=np.array([pixel_spacing[1], pixel_spacing[0], slice_spacing]),
    )
    array = np.empty((len(ordered), int(first.Rows), int(first.Columns)), dtype=np.float32)
    for k, ds in enumerate(ordered):
        array[k] = apply_modality_lut(ds.pixel_array, ds)
        del ds.PixelData
    return Volume(array=array, geometry=geometry, datasets=list(ordered))


def volume_from_multiframe(
    ds: Dataset, orientation_tolerance: float = 1e-3, spacing_tolerance_mm: float = 0.05
) -> Volume:
    """Assemble an Enhanced or Legacy Converted Enhanced CT/MR image from its frames.

    Position, orientation, pixel spacing and rescale come from the functional groups of each
    frame (PS3.3 C.7.6.16); frames are ordered along the slice normal. Refuses (VolumeError)
    missing or inconsistent functional groups, a frame count the pixel data does not hold,
    and frames that are not one regular stack (duplicated positions, as in a multi-echo or
    multi-stack object, or non-uniform spacing).
    """
    try:
        found = multiframe.frames(ds)
    except multiframe.FunctionalGroupError as exc:
        raise VolumeError(str(exc)) from exc
    orientation = np.asarray(found[0].orientation)
    spacing = np.asarray(found[0].pixel_spacing)
    for frame in found[1:]:
        if np.max(np.abs(np.asarray(frame.orientation) - orientation)) > orientation_tolerance:
            raise VolumeError(f"frame {frame.number} has a different orientation")
        if np.max(np.abs(np.asarray(frame.pixel_spacing) - spacing)) > 1e-4:
            raise VolumeError(f"frame {frame.number} has a different pixel spacing")
    row, col, normal = _slice_normal(orientation)
    positions = np.array([frame.position for frame in found])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    gaps = np.diff(along[order])
    if np.any(gaps < 1e-3):
        raise VolumeError(
            "frames share positions (several stacks, echoes or channels in one object): "
            "not one regular volume"
        )
    if len(gaps) and np.max(np.abs(gaps - np.median(gaps))) > spacing_tolerance_mm:
        raise VolumeError(f"non-uniform frame spacing ({gaps.min():.3f}-{gaps.max():.3f} mm)")
    thickness = found[0].slice_thickness
    slice_spacing = float(np.median(gaps)) if len(gaps) else float(thickness or 1.0)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for data that does not decode
        raise VolumeError(f"pixel data cannot be decoded: {exc}") from exc
    pixels = pixels.reshape((-1, *pixels.shape[-2:])) if pixels.ndim >= 2 else pixels
    if pixels.shape[0] != len(found):
        raise VolumeError(
            f"the pixel data holds {pixels.shape[0]} frames, Number of Frames says {len(found)}"
        )
    array = np.empty((len(found), int(ds.Rows), int(ds.Columns)), dtype=np.float32)
    for k, index in enumerate(order):
        frame = found[index]
        array[k] = pixels[index].astype(np.float32) * frame.slope + frame.intercept
    del ds.PixelData
    geometry = Geometry(
        origin=positions[order[0]],
        directions=np.stack([row, col, normal], axis=1),
        spacing=np.array([spacing[1], spacing[0], slice_spacing]),
    )
    frame_numbers = [found[i].number for i in order]
    return Volume(array=array, geometry=geometry, datasets=[ds], frame_numbers=frame_numbers)


def load_series(paths: Sequence[Path]) -> Volume:
    """Read and assemble the files of one series (single-frame slices, or one Enhanced
    image)."""
    datasets = [pydicom.dcmread(path) for path in paths]
    if any(multiframe.is_multiframe(ds) for ds in datasets):
        if len(datasets) != 1:
            raise VolumeError(
                "several multi-frame images in one series: one Enhanced image, or single-frame "
                "images, per series"
            )
        return volume_from_multiframe(datasets[0])
    return volume_from_datasets(datasets)


def load_nifti(path: Path) -> Volume:
    """A NIfTI image as a Volume in LPS geometry (array indexed [k, j, i])."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    directions = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    geometry = Geometry(
        origin=np.asarray(image.GetOrigin(), dtype=float),
        directions=directions,
        spacing=np.asarray(image.GetSpacing(), dtype=float),
    )
    return Volume(array=array, geometry=geometry)


def save_nifti(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    """Write an array [k, j, i] on `geometry` as NIfTI; `load_nifti` reads it back exactly.

    NIfTI stores RAS; SimpleITK converts from the LPS geometry, so the file's affine is
    `geometry.ras_affine()`.
    """
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetOrigin(tuple(float(v) for v in geometry.origin))
    image.SetSpacing(tuple(float(v) for v in geometry.spacing))
    image.SetDirection(tuple(float(v) for v in geometry.directions.ravel()))
    sitk.WriteImage(image, str(path), useCompression=True)
