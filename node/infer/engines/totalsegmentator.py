"""Optional TotalSegmentator adapter: ``totalsegmentator:TASK`` (total, total_mr,
abdominal_muscles, tissue_types).

TotalSegmentator's class names are mapped to the node's structure keys (and so to its codes);
classes that are not muscles the node measures are dropped. The live engine runs only when
the `totalsegmentator` package and the task's weights are already installed: the node never
lets it download anything. `map_output` works without the package, on the label files
TotalSegmentator writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.sr.codedict import codes

from myonode.core.types import Algorithm, EngineError, EngineIdentity, EngineKind, LabelMap
from myonode.core.volume import Volume
from myonode.dicom.anatomy import STRUCTURES, Structure

# TotalSegmentator class name -> node structure key.
NAME_TO_KEY: dict[str, str] = {
    **{
        f"{muscle}_{side}": f"{muscle}_{side}"
        for muscle in ("gluteus_maximus", "gluteus_medius", "gluteus_minimus", "iliopsoas")
        for side in ("left", "right")
    },
    **{f"autochthon_{side}": f"deep_back_muscles_{side}" for side in ("left", "right")},
    **{
        f"{muscle}_{side}": f"{muscle}_{side}"
        for muscle in (
            "rectus_abdominis",
            "external_oblique",
            "internal_oblique",
            "erector_spinae",
            "transversospinalis",
            "quadratus_lumborum",
        )
        for side in ("left", "right")
    },
    **{f"psoas_major_{side}": f"psoas_{side}" for side in ("left", "right")},
    "skeletal_muscle": "skeletal_muscle",
}

# The muscle classes of each task as TotalSegmentator v2 numbers them in its output files
# (totalsegmentator/map_to_binary.py; abdominal_muscles as released with 2.5). When the package
# is installed its own class map is used instead.
KNOWN_CLASSES: dict[str, dict[int, str]] = {
    "total": {
        80: "gluteus_maximus_left",
        81: "gluteus_maximus_right",
        82: "gluteus_medius_left",
        83: "gluteus_medius_right",
        84: "gluteus_minimus_left",
        85: "gluteus_minimus_right",
        86: "autochthon_left",
        87: "autochthon_right",
        88: "iliopsoas_left",
        89: "iliopsoas_right",
    },
    "total_mr": {
        40: "gluteus_maximus_left",
        41: "gluteus_maximus_right",
        42: "gluteus_medius_left",
        43: "gluteus_medius_right",
        44: "gluteus_minimus_left",
        45: "gluteus_minimus_right",
        46: "autochthon_left",
        47: "autochthon_right",
        48: "iliopsoas_left",
        49: "iliopsoas_right",
    },
    "abdominal_muscles": {
        3: "rectus_abdominis_right",
        4: "rectus_abdominis_left",
        11: "external_oblique_right",
        12: "external_oblique_left",
        13: "internal_oblique_right",
        14: "internal_oblique_left",
        15: "erector_spinae_right",
        16: "erector_spinae_left",
        17: "transversospinalis_right",
        18: "transversospinalis_left",
        19: "psoas_major_right",
        20: "psoas_major_left",
        21: "quadratus_lumborum_right",
        22: "quadratus_lumborum_left",
    },
    "tissue_types": {3: "skeletal_muscle"},
}
# TotalSegmentator's nnU-Net dataset ids per task: their weights must be on disk.
TASK_DATASETS = {
    "total": (291, 292, 293, 294, 295),
    "total_mr": (850, 851),
    "abdominal_muscles": (952,),
    "tissue_types": (481,),
}


def class_map(task: str) -> dict[int, str]:
    """Label value -> class name for a task: the installed package's, else the table above."""
    try:
        from totalsegmentator.map_to_binary import class_map as installed
    except ImportError:
        installed = {}
    if task in installed:
        return dict(installed[task])
    if task not in KNOWN_CLASSES:
        raise EngineError(f"unknown TotalSegmentator task {task!r}; known: {sorted(KNOWN_CLASSES)}")
    return KNOWN_CLASSES[task]


def map_output(labels: np.ndarray, task: str) -> tuple[np.ndarray, dict[int, Structure], list[str]]:
    """TotalSegmentator labels -> (node label map, structures, notes).

    Node labels are numbered 1..N in the order of the task's mapped classes, whether or not a
    class is present, so label values are stable across studies; unmapped classes (organs,
    bones, vessels) become background. Only the structures found are returned; the others
    are named in a note.
    """
    classes = class_map(task)
    mapped = [
        (value, NAME_TO_KEY[name]) for value, name in sorted(classes.items()) if name in NAME_TO_KEY
    ]
    lookup = np.zeros(max(int(labels.max(initial=0)), max(classes)) + 1, dtype=np.uint16)
    structures: dict[int, Structure] = {}
    for number, (value, key) in enumerate(mapped, start=1):
        lookup[value] = number
        structures[number] = STRUCTURES[key]
    out = lookup[labels.astype(np.int64)]
    found = set(np.unique(out).tolist())
    missing = [structures[n].name for n in structures if n not in found]
    notes = [f"TotalSegmentator task {task}: classes outside the node's muscle list are ignored."]
    if missing:
        notes.append("Not found by TotalSegmentator: " + ", ".join(missing) + ".")
    return out, {n: s for n, s in structures.items() if n in found}, notes


def weights_dir() -> Path:
    """Where TotalSegmentator keeps its weights ($TOTALSEG_HOME_DIR/nnunet/results)."""
    home = os.environ.get("TOTALSEG_HOME_DIR") or str(Path.home() / ".totalsegmentator")
    return Path(os.environ.get("TOTALSEG_WEIGHTS_PATH") or Path(home) / "nnunet" / "results")


def missing_requirements(task: str) -> str | None:
    """Why the live engine cannot run offline (package or weights absent), or None."""
    try:
        import totalsegmentator  # noqa: F401
    except ImportError:
        return "the totalsegmentator package is not installed"
    folder = weights_dir()
    missing = [
        dataset
        for dataset in TASK_DATASETS.get(task, ())
        if not any(folder.glob(f"Dataset{dataset}_*"))
    ]
    if task not in TASK_DATASETS:
        return f"unknown TotalSegmentator task {task!r}"
    if missing:
        return (
            f"weights for task {task} (datasets {missing}) are not in {folder}; the node does "
            "not download them"
        )
    return None


def algorithm_for(task: str) -> Algorithm:
    """How SEG and SR identify a TotalSegmentator task (its installed package's version)."""
    import importlib.metadata

    return Algorithm(
        name=f"TotalSegmentator-{task}",
        version=importlib.metadata.version("TotalSegmentator"),
        family=codes.cid7162.ArtificialIntelligence,
        kind="deep learning",
        intended_use="research",
        parameters={"task": task},
    )


def identify_task(argument: str | None) -> EngineIdentity:
    """A task's identity if its package and weights are installed; `EngineError` says what is
    missing (the node never downloads them)."""
    task = argument or "total"
    reason = missing_requirements(task)
    if reason:
        raise EngineError(f"TotalSegmentator engine unavailable: {reason}")
    return EngineIdentity(algorithm_for(task), "segmentation")


class TotalSegmentatorEngine:
    def __init__(self, task: str) -> None:
        self.algorithm = identify_task(task).algorithm
        self.task = task

    def segment(self, volume: Volume) -> LabelMap:
        import nibabel as nib
        from totalsegmentator.python_api import totalsegmentator

        # TotalSegmentator reads NIfTI: the array goes in as (i, j, k) with the RAS affine.
        image = nib.Nifti1Image(
            np.ascontiguousarray(volume.array.transpose(2, 1, 0)), volume.geometry.ras_affine()
        )
        result = totalsegmentator(image, None, task=self.task, ml=True, quiet=True)
        labels = np.asarray(result.dataobj).transpose(2, 1, 0)
        mapped, structures, notes = map_output(labels, self.task)
        return LabelMap(labels=mapped, structures=structures, notes=notes)


ENGINES = {
    "totalsegmentator": EngineKind(
        create=lambda argument: TotalSegmentatorEngine(argument or "total"),
        identify=identify_task,
    )
}
