"""Reference labels of the shared real cases as if an engine had produced them, and
deliberate corruptions of them: the inputs QC must pass and fail.

The reference label files are outputs of published models (TotalSegmentator v1/v2), a good
segmentation of their images; mapped onto our structures they are "a correct engine".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from myonode.core.types import LabelMap
from myonode.core.volume import Volume, load_nifti
from myonode.dicom.anatomy import STRUCTURES

from support.reference_cases import labels_on_grid

# Reference label value -> our structure key, per label file.
WHOLE_CT_V1 = {
    94: "gluteus_maximus_left",
    95: "gluteus_maximus_right",
    96: "gluteus_medius_left",
    97: "gluteus_medius_right",
    98: "gluteus_minimus_left",
    99: "gluteus_minimus_right",
    100: "erector_spinae_left",
    101: "erector_spinae_right",
    102: "iliopsoas_left",
    103: "iliopsoas_right",
}
UPPER_ABDOMEN_V2 = {
    86: "erector_spinae_left",
    87: "erector_spinae_right",
    88: "psoas_left",
    89: "psoas_right",
}
WHOLE_CT_KIDNEYS = {"right": 2, "left": 3}  # TotalSegmentator v1 kidney ids


def reference_case(
    data: Path, image: str, labels: str, mapping: dict[int, str]
) -> tuple[Volume, LabelMap, np.ndarray]:
    """The image, its reference labels as a label map of our structures, and the raw
    reference label values on the image grid (for corruptions that need other organs)."""
    volume = load_nifti(data / image)
    raw = labels_on_grid(load_nifti(data / labels), volume.geometry, volume.shape)
    out = np.zeros(volume.shape, dtype=np.uint8)
    structures = {}
    for n, (value, key) in enumerate(sorted(mapping.items()), start=1):
        out[raw == value] = n
        structures[n] = STRUCTURES[key]
    return volume, LabelMap(labels=out, structures=structures), raw


def label_of(label_map: LabelMap, key: str) -> int:
    return next(n for n, s in label_map.structures.items() if s.key == key)


def replaced(label_map: LabelMap, key: str, mask: np.ndarray) -> LabelMap:
    """The label map with structure `key` replaced by `mask` (other labels kept outside it)."""
    label = label_of(label_map, key)
    labels = np.where(label_map.labels == label, 0, label_map.labels)
    labels[mask] = label
    return LabelMap(labels=labels, structures=dict(label_map.structures))


def kidney_as_psoas(label_map: LabelMap, raw: np.ndarray, side: str, key: str) -> LabelMap:
    """The psoas of one side replaced by that side's kidney."""
    return replaced(label_map, key, raw == WHOLE_CT_KIDNEYS[side])


def shrunk(label_map: LabelMap, key: str, voxels: int) -> LabelMap:
    """Only the first `voxels` voxels (in array order) of the structure's middle slice."""
    mask = label_map.labels == label_of(label_map, key)
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    middle = int(slices[len(slices) // 2])
    keep = np.zeros_like(mask)
    j, i = np.nonzero(mask[middle])
    keep[middle, j[:voxels], i[:voxels]] = True
    return replaced(label_map, key, keep)


def mirrored(label_map: LabelMap, key: str) -> LabelMap:
    """The structure flipped left-right about the image centre (onto the other side)."""
    mask = label_map.labels == label_of(label_map, key)
    return replaced(label_map, key, mask[:, :, ::-1])


def moved(label_map: LabelMap, key: str, slices: int = 0, rows: int = 0) -> LabelMap:
    """The structure shifted by whole slices (k) and rows (j), out of its place."""
    mask = label_map.labels == label_of(label_map, key)
    return replaced(label_map, key, np.roll(mask, (slices, rows), axis=(0, 1)))
