"""The real labelled cases in the shared data, and how their labels map to our structures.

Each case names its image, its reference label file and, per compared structure, which
reference label values and which of our structure keys are put side by side. The reference
labels are outputs of published models (TotalSegmentator, MuscleMap), not manual ground
truth, except the Dixon volunteer TUM01 (manual), and some are not defined like ours; each
such difference is written as a caveat next to the numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from myonode.core.agreement import Agreement, agreement
from myonode.core.types import LabelMap, SegmentationEngine
from myonode.core.volume import Geometry, Volume, load_nifti, volume_from_datasets

AUTOCHTHON_CAVEAT = (
    "reference 'autochthon' = erector spinae + transversospinalis (multifidus); "
    "our CT erector spinae includes the multifidus too"
)
ILIOPSOAS_CAVEAT = (
    "reference is iliopsoas (psoas major + iliacus); ours is psoas major, identical above "
    "the iliac crest (all of these cases)"
)
TISSUE_CAVEAT = "reference is TotalSegmentator's skeletal-muscle tissue class"
SLAB_CAVEAT = (
    "both masks restricted to the slices holding the reference's L1-L5 labels; ours is "
    "psoas major down to L5, iliopsoas (psoas + iliacus) below"
)
MEDIUS_CAVEAT = "reference medius + minimus; our gluteus medius includes the minimus"
# TotalSegmentator v1 ids of the lumbar vertebrae L5..L1.
LUMBAR_V1 = (18, 19, 20, 21, 22)
TUM01_CAVEAT = (
    "manual labels of one young healthy volunteer (little fat in the muscles); psoas and "
    "quadratus lumborum are in view but not labelled, so they are not compared"
)


@dataclass(frozen=True)
class Comparison:
    """One row of the evaluation: reference label values vs the union of our structures."""

    name: str
    reference_values: tuple[int, ...]
    structure_keys: tuple[str, ...]  # empty tuple: every structure the engine labelled
    caveat: str = ""
    reference_file: str | None = None  # a separate binary reference, else the case's labels
    # Reference label values whose slices bound the comparison (e.g. L1-L5): both masks are
    # compared on those slices only. Empty: the whole volume.
    within: tuple[int, ...] = ()


@dataclass(frozen=True)
class ReferenceCase:
    name: str
    engine: str
    image: str  # path below the shared data directory: a NIfTI file or a DICOM folder
    labels: str
    comparisons: tuple[Comparison, ...]
    description: str = ""
    # (channel, path): further images on the same grid, as the node carries a Dixon fat
    # image beside the water image (`inputs.load_dixon`: `Volume.channels`)
    channels: tuple[tuple[str, str], ...] = ()


CASES: tuple[ReferenceCase, ...] = (
    ReferenceCase(
        name="upper_abdomen_ct",
        engine="classical-ct",
        image="ct/upper_abdomen_ct.nii.gz",
        labels="ct/upper_abdomen_labels_totalseg_v2.nii.gz",
        description="real CT, 3 mm isotropic, T11-L2, unenhanced; TotalSegmentator v2 labels",
        comparisons=(
            Comparison("deep back muscles L", (86,), ("erector_spinae_left",), AUTOCHTHON_CAVEAT),
            Comparison("deep back muscles R", (87,), ("erector_spinae_right",), AUTOCHTHON_CAVEAT),
            Comparison("psoas L", (88,), ("psoas_left",), ILIOPSOAS_CAVEAT),
            Comparison("psoas R", (89,), ("psoas_right",), ILIOPSOAS_CAVEAT),
            Comparison(
                "total skeletal muscle",
                (1,),
                (),
                TISSUE_CAVEAT,
                reference_file="ct/upper_abdomen_skeletal_muscle.nii.gz",
            ),
        ),
    ),
    ReferenceCase(
        name="totalseg_dicom_series",
        engine="classical-ct",
        image="ct/totalseg_dicom_series",
        labels="ct/totalseg_dicom_series_labels.nii.gz",
        description="real CT DICOM, 0.98 mm x 2 mm, T11-T12, IV contrast, arms down",
        comparisons=(
            Comparison("deep back muscles L", (86,), ("erector_spinae_left",), AUTOCHTHON_CAVEAT),
            Comparison("deep back muscles R", (87,), ("erector_spinae_right",), AUTOCHTHON_CAVEAT),
        ),
    ),
    ReferenceCase(
        name="abdomen_pelvis_ct",
        engine="classical-ct",
        image="ct/abdomen_pelvis_ct.nii.gz",
        labels="ct/abdomen_pelvis_labels_totalseg_v1.nii.gz",
        description="real CT, 3 mm isotropic, T11 to the hips, unenhanced; TotalSegmentator v1",
        comparisons=(
            Comparison("deep back muscles L", (100,), ("erector_spinae_left",), AUTOCHTHON_CAVEAT),
            Comparison("deep back muscles R", (101,), ("erector_spinae_right",), AUTOCHTHON_CAVEAT),
            Comparison(
                "iliopsoas L, L1-L5 slab",
                (102,),
                ("psoas_left", "iliopsoas_left"),
                SLAB_CAVEAT,
                within=LUMBAR_V1,
            ),
            Comparison(
                "iliopsoas R, L1-L5 slab",
                (103,),
                ("psoas_right", "iliopsoas_right"),
                SLAB_CAVEAT,
                within=LUMBAR_V1,
            ),
            Comparison("iliopsoas L, whole", (102,), ("psoas_left", "iliopsoas_left")),
            Comparison("iliopsoas R, whole", (103,), ("psoas_right", "iliopsoas_right")),
            Comparison("gluteus medius L", (96, 98), ("gluteus_medius_left",), MEDIUS_CAVEAT),
            Comparison("gluteus medius R", (97, 99), ("gluteus_medius_right",), MEDIUS_CAVEAT),
            Comparison("gluteus maximus L", (94,), ("gluteus_maximus_left",)),
            Comparison("gluteus maximus R", (95,), ("gluteus_maximus_right",)),
        ),
    ),
    ReferenceCase(
        name="lumbar_mr",
        engine="classical-mr",
        image="mr/lumbar_mr.nii.gz",
        labels="mr/lumbar_mr_labels.nii.gz",
        description="real axial lumbar T2 MR, 0.94 x 0.94 x 4.4 mm, S1-L2; MuscleMap labels",
        comparisons=(
            Comparison(
                "paraspinal L (multifidus + erector spinae)",
                (2, 4),
                ("multifidus_left", "erector_spinae_left"),
            ),
            Comparison(
                "paraspinal R (multifidus + erector spinae)",
                (1, 3),
                ("multifidus_right", "erector_spinae_right"),
            ),
            Comparison("multifidus L", (2,), ("multifidus_left",)),
            Comparison("multifidus R", (1,), ("multifidus_right",)),
            Comparison("erector spinae L", (4,), ("erector_spinae_left",)),
            Comparison("erector spinae R", (3,), ("erector_spinae_right",)),
            Comparison("psoas L", (6,), ("psoas_left",)),
            Comparison("psoas R", (5,), ("psoas_right",)),
            Comparison("quadratus lumborum L", (8,), ("quadratus_lumborum_left",)),
            Comparison("quadratus lumborum R", (7,), ("quadratus_lumborum_right",)),
        ),
    ),
    ReferenceCase(
        name="dixon_lumbar_tum01",
        engine="classical-mr",
        image="mr/dixon_lumbar_tum01_water.nii.gz",
        channels=(("fat", "mr/dixon_lumbar_tum01_fat.nii.gz"),),
        labels="mr/dixon_lumbar_tum01_labels.nii.gz",
        description=(
            "real 2-point Dixon lumbar MR (3 T), healthy volunteer, 1.02 x 1.02 x 4 mm, L2-L5; "
            "manual labels"
        ),
        comparisons=(
            Comparison(
                "paraspinal L (multifidus + erector spinae)",
                (3, 4),
                ("multifidus_left", "erector_spinae_left"),
                TUM01_CAVEAT,
            ),
            Comparison(
                "paraspinal R (multifidus + erector spinae)",
                (1, 2),
                ("multifidus_right", "erector_spinae_right"),
                TUM01_CAVEAT,
            ),
            Comparison("multifidus L", (3,), ("multifidus_left",), TUM01_CAVEAT),
            Comparison("multifidus R", (2,), ("multifidus_right",), TUM01_CAVEAT),
            Comparison("erector spinae L", (4,), ("erector_spinae_left",), TUM01_CAVEAT),
            Comparison("erector spinae R", (1,), ("erector_spinae_right",), TUM01_CAVEAT),
        ),
    ),
)


@dataclass
class CaseResult:
    case: ReferenceCase
    volume: Volume
    label_map: LabelMap
    references: dict[str, np.ndarray]  # comparison name -> reference mask on the image grid
    agreements: dict[str, Agreement]
    seconds: float

    def predicted(self, comparison: Comparison) -> np.ndarray:
        return predicted_mask(self.label_map, comparison.structure_keys)


def load_image(path: Path) -> Volume:
    """A NIfTI file, or a folder of single-frame DICOM slices read directly with pydicom
    (the shared series has empty UIDs, which the node refuses at the door by design)."""
    if path.is_dir():
        return volume_from_datasets([pydicom.dcmread(p) for p in sorted(path.iterdir())])
    return load_nifti(path)


def labels_on_grid(labels: Volume, target: Geometry, shape: tuple[int, int, int]) -> np.ndarray:
    """Reference labels looked up, nearest voxel, at every voxel centre of the target grid.

    Handles flipped or permuted axes between the two files (the shared DICOM series and its
    label file differ by a flip of the row axis); voxels outside the labels read as 0.
    """
    k, j, i = np.indices(shape).reshape(3, -1)
    lps = target.index_to_lps(np.stack([i, j, k], axis=1))
    inverse = np.linalg.inv(labels.geometry.affine)
    ijk = np.rint((np.c_[lps, np.ones(len(lps))] @ inverse.T)[:, :3]).astype(np.int64)
    nk, nj, ni = labels.array.shape
    inside = (
        (ijk[:, 0] >= 0)
        & (ijk[:, 0] < ni)
        & (ijk[:, 1] >= 0)
        & (ijk[:, 1] < nj)
        & (ijk[:, 2] >= 0)
        & (ijk[:, 2] < nk)
    )
    out = np.zeros(len(lps), dtype=labels.array.dtype)
    out[inside] = labels.array[ijk[inside, 2], ijk[inside, 1], ijk[inside, 0]]
    return out.reshape(shape)


def predicted_mask(label_map: LabelMap, keys: tuple[str, ...]) -> np.ndarray:
    """Union of the labels of the structures with these keys (all structures if empty)."""
    values = [v for v, s in label_map.structures.items() if not keys or s.key in keys]
    return np.isin(label_map.labels, values)


def evaluate_case(case: ReferenceCase, engine: SegmentationEngine, data_dir: Path) -> CaseResult:
    """Run `engine` on the case's image and compare every listed structure."""
    volume = load_image(data_dir / case.image)
    for name, file in case.channels:
        channel = load_image(data_dir / file)
        if channel.array.shape != volume.array.shape:
            raise ValueError(f"{case.name}: {file} is not on the grid of {case.image}")
        volume.channels[name] = channel.array
    started = time.perf_counter()
    label_map = engine.segment(volume)
    seconds = time.perf_counter() - started
    label_files = {
        case.labels: labels_on_grid(
            load_nifti(data_dir / case.labels), volume.geometry, volume.shape
        )
    }
    references: dict[str, np.ndarray] = {}
    agreements: dict[str, Agreement] = {}
    for comparison in case.comparisons:
        file = comparison.reference_file or case.labels
        if file not in label_files:
            label_files[file] = labels_on_grid(
                load_nifti(data_dir / file), volume.geometry, volume.shape
            )
        reference = np.isin(label_files[file], comparison.reference_values)
        bounds = slab(label_files[case.labels], comparison.within)
        references[comparison.name] = reference & bounds
        agreements[comparison.name] = agreement(
            predicted_mask(label_map, comparison.structure_keys) & bounds,
            reference & bounds,
            volume.geometry.voxel_volume_mm3,
        )
    return CaseResult(case, volume, label_map, references, agreements, seconds)


def slab(labels: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    """The slices (array axis 0) holding any of these reference values, as a mask that
    broadcasts over the volume; everything when `values` is empty."""
    if not values:
        return np.ones((1, 1, 1), dtype=bool)
    return np.isin(labels, values).any(axis=(1, 2))[:, np.newaxis, np.newaxis]
