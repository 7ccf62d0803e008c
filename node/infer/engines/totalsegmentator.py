"""TotalSegmentator's weights as a resident engine: ``totalsegmentator:TASK[?OPTIONS]`` (total,
total_mr, abdominal_muscles, tissue_types).

TotalSegmentator's weights are nnU-Net v2 dataset folders under
``$TOTALSEG_HOME_DIR/nnunet/results``. The engine finds the task's folders there, keeps only
those whose classes include a muscle the node measures (for ``total``, the muscles part), and
runs them through the resident `nnunet` engine: loaded once per worker, not once per study
as TotalSegmentator's own API does. The TotalSegmentator package is not needed and nothing is
ever downloaded. Class names map to the node's structure keys (and so to its codes) by
`NAME_TO_KEY`; `map_output` maps the label files TotalSegmentator itself writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from myonode.core.types import EngineError, EngineIdentity, EngineKind
from myonode.dicom.anatomy import STRUCTURES, Structure
from myonode.infer.engines.class_names import NAME_TO_KEY

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
# TotalSegmentator's nnU-Net dataset ids per task (the muscles of `total` are in 294).
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
    """Where TotalSegmentator keeps its weights ($TOTALSEG_HOME_DIR/nnunet/results, or
    $TOTALSEG_WEIGHTS_PATH)."""
    home = os.environ.get("TOTALSEG_HOME_DIR") or str(Path.home() / ".totalsegmentator")
    return Path(os.environ.get("TOTALSEG_WEIGHTS_PATH") or Path(home) / "nnunet" / "results")


@dataclass(frozen=True)
class TaskFolders:
    """What is installed for a task: the model folders the node needs (those with a class
    it measures), the installed ones it skips, and the datasets that are not on disk."""

    task: str
    needed: list[Path]
    skipped: list[Path]
    missing: list[int]


def task_folders(task: str, root: Path | None = None) -> TaskFolders:
    """The task's dataset folders under `root` (default `weights_dir()`), sorted into those
    whose dataset.json names a muscle the node measures and the rest; no torch needed."""
    from myonode.infer.engines.nnunet import default_structure, model_folder, read_classes

    if task not in TASK_DATASETS:
        raise EngineError(f"unknown TotalSegmentator task {task!r}; known: {sorted(TASK_DATASETS)}")
    root = weights_dir() if root is None else root
    needed, skipped, missing = [], [], []
    for dataset in TASK_DATASETS[task]:
        found = sorted(root.glob(f"Dataset{dataset}_*"))
        if not found:
            missing.append(dataset)
            continue
        folder = model_folder(found[0])
        classes = read_classes(folder)
        if any(default_structure(name) for name in classes.values()):
            needed.append(folder)
        else:
            skipped.append(folder)
    return TaskFolders(task, needed, skipped, missing)


def missing_requirements(task: str) -> str | None:
    """Why the task cannot run from the installed weights, or None."""
    try:
        folders = task_folders(task)
    except EngineError as exc:
        return str(exc)
    if not folders.needed:
        return (
            f"weights for task {task} are not in {weights_dir()}: none of the installed "
            f"datasets holds a muscle the node measures (missing: {folders.missing}); copy "
            "the dataset folders there (README, TotalSegmentator weights); the node does not "
            "download them"
        )
    return None


def create_engine(argument: str | None):
    """``totalsegmentator:TASK[?OPTIONS]``: the task's folders that hold a muscle the node
    measures, resident in one `nnunet` engine (options as for ``nnunet``)."""
    from myonode.infer.engines.nnunet import NnUNetEngine, Options, describe_folder

    task, _, query = (argument or "total").partition("?")
    reason = missing_requirements(task)
    if reason:
        raise EngineError(f"TotalSegmentator engine unavailable: {reason}")
    folders = task_folders(task)
    options = Options.parse(query)
    if "mirroring=" not in query:  # TotalSegmentator's trainers do not mirror
        options = replace(options, mirroring=False)
    descriptions = [describe_folder(folder, hash_checkpoints=False) for folder in folders.needed]
    notes = []
    if folders.skipped:
        notes.append(
            f"TotalSegmentator task {task}: datasets without muscles were not run "
            f"({', '.join(p.parent.name for p in folders.skipped)})."
        )
    return NnUNetEngine(descriptions, options, name=f"TotalSegmentator-{task}", notes=notes)


def identify_task(argument: str | None) -> EngineIdentity:
    """A task's identity from its installed folders (checked, checkpoints hashed once per
    file version), without loading a model; `EngineError` says what is missing."""
    from myonode.infer.engines.nnunet import Options, folders_identity

    task, _, query = (argument or "total").partition("?")
    reason = missing_requirements(task)
    if reason:
        raise EngineError(f"TotalSegmentator engine unavailable: {reason}")
    return folders_identity(
        task_folders(task).needed, Options.parse(query), name=f"TotalSegmentator-{task}"
    )


ENGINES = {"totalsegmentator": EngineKind(create=create_engine, identify=identify_task)}
