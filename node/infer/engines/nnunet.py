"""nnU-Net v2 trained-model folders as resident engines: ``nnunet:FOLDER[,FOLDER...][?OPTIONS]``.

A folder is what nnU-Net writes and TotalSegmentator ships: ``plans.json``, ``dataset.json``
and ``fold_*/checkpoint_final.pth`` (the model folder ``Trainer__Plans__configuration``, or
the ``DatasetNNN_Name`` folder above it when it holds exactly one). FOLDER may also be a
dataset name or number under ``$nnUNet_results``. OPTIONS: ``step=0.5`` (tile step size, as
a fraction of the patch), ``mirroring=on|off`` (test-time mirroring where the checkpoint
allows it), ``device=cpu|cuda``, ``folds=0,1`` (default: every fold found, as an ensemble).

`describe_folder` checks a folder and names what it can segment without torch or nnU-Net,
so routing and ``myonode models`` can call it. The engine reads each checkpoint once,
hashes the bytes it deserialises (tensors only), checks them against the plans, and keeps
the networks resident for every later job. Label names map to the node's structures by the
TotalSegmentator table (`class_names.NAME_TO_KEY`) or by structure key, or by a small
``myonode_classes.json`` beside the folder; classes that map to nothing are dropped with a note.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import numpy as np
from pydicom.sr.codedict import codes

from myonode.core.types import (
    Algorithm,
    EngineError,
    EngineIdentity,
    EngineKind,
    IntendedUse,
    LabelMap,
)
from myonode.core.volume import Volume
from myonode.dicom.anatomy import STRUCTURES, Structure
from myonode.infer.engines.class_names import NAME_TO_KEY

MAPPING_FILE = "myonode_classes.json"
CHECKPOINT = "checkpoint_final.pth"
# Channel names nnU-Net users give MR inputs (CT is nnU-Net's own "CT" normalisation).
MR_CHANNELS = {"mr", "mri", "t1", "t2", "t1w", "t2w", "water", "fat", "in", "out", "dixon"}
# Checkpoint reads per model folder in this process: residency is asserted on it.
checkpoint_loads: Counter[str] = Counter()

T = TypeVar("T")


@dataclass(frozen=True)
class FolderDescription:
    """What a model folder is and can segment, read without torch."""

    path: Path  # the model folder (Trainer__Plans__configuration)
    dataset: str  # DatasetNNN_Name
    trainer: str
    plans_name: str
    configuration: str
    folds: tuple[str, ...]
    modality: str  # "CT" or "MR"
    channels: tuple[str, ...]  # dataset.json channel names, in input order
    classes: dict[int, str]  # label value -> class name (background excluded)
    structures: dict[int, str]  # label value -> node structure key (the mapped classes)
    intended_use: IntendedUse
    file_digests: dict[str, str]  # relative path -> sha256 (checkpoints only if hashed)

    @property
    def unmapped(self) -> list[str]:
        return [
            name for value, name in sorted(self.classes.items()) if value not in self.structures
        ]

    @property
    def checksum(self) -> str:
        """sha256 over every file's name and sha256: plans, dataset, class map, checkpoints."""
        return combined_checksum(self.file_digests)

    @property
    def version(self) -> str:
        return f"sha256:{self.checksum[:16]}"


def combined_checksum(file_digests: dict[str, str]) -> str:
    text = "\n".join(f"{name} {digest}" for name, digest in sorted(file_digests.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EngineError(f"{path.parent} is not an nnU-Net model folder: no {path.name}") from None
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read {path}: {exc}") from exc


def model_folder(path: Path) -> Path:
    """The model folder `path` names: itself when it holds plans.json, else its single
    ``Trainer__Plans__configuration`` subfolder."""
    if not path.is_dir():
        raise EngineError(f"nnU-Net folder {path} does not exist")
    if (path / "plans.json").is_file():
        return path
    candidates = sorted(p for p in path.iterdir() if (p / "plans.json").is_file())
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise EngineError(f"{path} holds no nnU-Net model folder (no */plans.json)")
    names = ", ".join(p.name for p in candidates)
    raise EngineError(f"{path} holds several model folders ({names}); name one of them")


def _configuration(plans: dict, name: str) -> dict:
    """A plans configuration with its ``inherits_from`` chain resolved."""
    configurations = plans.get("configurations") or {}
    if name not in configurations:
        raise EngineError(
            f"plans.json has no configuration {name!r} (it has {sorted(configurations)})"
        )
    config = dict(configurations[name])
    seen = {name}
    while parent := config.pop("inherits_from", None):
        if parent in seen or parent not in configurations:
            raise EngineError(f"plans.json configuration {name!r} inherits from {parent!r}")
        seen.add(parent)
        config = {**configurations[parent], **config}
    return config


def read_classes(folder: Path) -> dict[int, str]:
    """Label value -> class name of a model folder's dataset.json (background excluded)."""
    dataset = _read_json(folder / "dataset.json")
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise EngineError(f"{folder}/dataset.json has no labels")
    classes: dict[int, str] = {}
    for name, value in labels.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise EngineError(
                f"{folder}/dataset.json label {name!r} is {value!r}: region-based models are "
                "not supported (one integer per class is)"
            )
        if value in classes or (value == 0 and name != "background"):
            raise EngineError(f"{folder}/dataset.json gives label value {value} twice")
        if value:
            classes[value] = name
    return classes


def default_structure(name: str) -> str | None:
    """The node structure a class name stands for: TotalSegmentator's name, or the key."""
    return NAME_TO_KEY.get(name) or (name if name in STRUCTURES else None)


def _mapping(folder: Path) -> tuple[dict, Path | None]:
    for where in (folder, folder.parent):
        path = where / MAPPING_FILE
        if path.is_file():
            mapping = _read_json(path)
            if not isinstance(mapping, dict):
                raise EngineError(f"{path} must hold a JSON object")
            return mapping, path
    return {}, None


def describe_folder(path: Path, hash_checkpoints: bool = True) -> FolderDescription:
    """Check an nnU-Net v2 model folder and say what it segments; `EngineError` says why a
    folder cannot be used. Needs neither torch nor nnU-Net. With `hash_checkpoints` the
    checksum covers the weights too (it reads every checkpoint once)."""
    folder = model_folder(Path(path))
    parts = folder.name.split("__")
    if len(parts) != 3:
        raise EngineError(
            f"{folder.name!r} is not named Trainer__Plans__configuration as nnU-Net names "
            "model folders"
        )
    trainer, plans_name, configuration = parts
    plans = _read_json(folder / "plans.json")
    if plans.get("plans_name", plans_name) != plans_name:
        raise EngineError(
            f"{folder}/plans.json is plans {plans.get('plans_name')!r}, the folder says "
            f"{plans_name!r}"
        )
    config = _configuration(plans, configuration)
    if config.get("previous_stage"):
        raise EngineError(
            f"{folder}: configuration {configuration} is a cascade stage; it needs the "
            f"predictions of {config['previous_stage']}, which the node does not run"
        )
    for key in ("patch_size", "spacing", "architecture", "normalization_schemes"):
        if key not in config:
            raise EngineError(f"{folder}/plans.json configuration {configuration} lacks {key!r}")
    _check_architecture(folder, config["architecture"])
    dataset = _read_json(folder / "dataset.json")
    classes = read_classes(folder)
    channel_names = dataset.get("channel_names") or dataset.get("modality") or {}
    channels = tuple(str(channel_names[k]) for k in sorted(channel_names, key=int))
    if not channels:
        raise EngineError(f"{folder}/dataset.json names no input channels (channel_names)")
    if len(config["normalization_schemes"]) != len(channels):
        raise EngineError(
            f"{folder}: plans.json normalises {len(config['normalization_schemes'])} channels, "
            f"dataset.json names {len(channels)}"
        )
    folds = tuple(
        sorted(p.parent.name.removeprefix("fold_") for p in folder.glob(f"fold_*/{CHECKPOINT}"))
    )
    if not folds:
        raise EngineError(f"{folder} has no trained fold (no fold_*/{CHECKPOINT})")

    mapping, mapping_path = _mapping(folder)
    modality = mapping.get("modality") or _modality(channels, config["normalization_schemes"])
    if modality not in ("CT", "MR"):
        raise EngineError(
            f"{folder}: cannot tell whether the input channels {list(channels)} are CT or MR; "
            f'set "modality" in {MAPPING_FILE}'
        )
    structures = _structures(classes, mapping.get("classes") or {}, mapping_path)
    intended_use = mapping.get("intended_use", "research")
    if intended_use not in ("demo", "research", "clinical"):
        raise EngineError(f"{mapping_path}: unknown intended_use {intended_use!r}")

    digests = {name: _sha256_file(folder / name) for name in ("plans.json", "dataset.json")}
    if mapping_path is not None:
        digests[MAPPING_FILE] = _sha256_file(mapping_path)
    if hash_checkpoints:
        for fold in folds:
            name = f"fold_{fold}/{CHECKPOINT}"
            digests[name] = _sha256_file(folder / name)
    return FolderDescription(
        path=folder,
        dataset=folder.parent.name,
        trainer=trainer,
        plans_name=plans_name,
        configuration=configuration,
        folds=folds,
        modality=modality,
        channels=channels,
        classes=classes,
        structures=structures,
        intended_use=intended_use,
        file_digests=digests,
    )


def _check_architecture(folder: Path, architecture: dict) -> None:
    """plans.json names classes that nnU-Net imports and instantiates: only its network
    library's architectures and torch.nn building blocks are allowed."""
    network = str(architecture.get("network_class_name", ""))
    if not network.startswith("dynamic_network_architectures.architectures."):
        raise EngineError(
            f"{folder}/plans.json names network {network!r}; only "
            "dynamic_network_architectures networks are loaded"
        )
    kwargs = architecture.get("arch_kwargs") or {}
    for key in architecture.get("_kw_requires_import") or []:
        value = kwargs.get(key)
        if value is not None and not str(value).startswith("torch.nn."):
            raise EngineError(f"{folder}/plans.json: {key} {value!r} is not a torch.nn class")


def _modality(channels: Sequence[str], schemes: Sequence[str]) -> str | None:
    if schemes[0] == "CTNormalization" or channels[0].upper() == "CT":
        return "CT"
    if channels[0].lower() in MR_CHANNELS:
        return "MR"
    return None


def _structures(
    classes: dict[int, str], explicit: dict[str, str], source: Path | None
) -> dict[int, str]:
    value_of = {name: value for value, name in classes.items()}
    for name, key in explicit.items():
        if name not in value_of:
            raise EngineError(f"{source}: class {name!r} is not in the folder's dataset.json")
        if key is not None and key not in STRUCTURES:
            raise EngineError(f"{source}: class {name!r} maps to unknown structure {key!r}")
    structures = {}
    for value, name in classes.items():
        key = explicit[name] if name in explicit else default_structure(name)
        if key is not None:
            structures[value] = key
    return structures


# --- options and fallback (pure) --------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """How the predictor runs: nnU-Net's defaults except where the spec says otherwise."""

    tile_step: float = 0.5
    mirroring: bool = True
    device: str | None = None  # None: CUDA when available
    folds: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> Options:
        values: dict[str, Any] = {}
        for key, value in parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)):
            if key == "step":
                step = float(value)
                if not 0 < step <= 1:
                    raise EngineError(f"step must be in (0, 1], not {value}")
                values["tile_step"] = step
            elif key == "mirroring":
                if value not in ("on", "off"):
                    raise EngineError(f"mirroring must be on or off, not {value!r}")
                values["mirroring"] = value == "on"
            elif key == "device":
                if value not in ("cpu", "cuda") and not value.startswith("cuda:"):
                    raise EngineError(f"device must be cpu or cuda, not {value!r}")
                values["device"] = value
            elif key == "folds":
                values["folds"] = tuple(value.split(","))
            else:
                raise EngineError(f"unknown nnunet option {key!r} (step, mirroring, device, folds)")
        return cls(**values)

    def as_parameters(self) -> dict[str, str]:
        return {"tile_step": f"{self.tile_step:g}", "mirroring": "on" if self.mirroring else "off"}


def parse_spec(argument: str | None) -> tuple[list[str], Options]:
    """``FOLDER[,FOLDER...][?OPTIONS]`` -> (folders, options)."""
    if not argument:
        raise EngineError("the nnunet engine needs a folder: nnunet:/path/to/DatasetNNN_Name")
    folders, _, query = argument.partition("?")
    names = [name for name in folders.split(",") if name]
    if not names:
        raise EngineError(f"no folder in nnunet:{argument}")
    return names, Options.parse(query)


def resolve_name(name: str) -> Path:
    """A folder path, or a dataset name/number under ``$nnUNet_results``."""
    path = Path(name)
    if path.is_absolute() or path.exists():
        return path
    root = os.environ.get("nnUNet_results")
    if not root:
        raise EngineError(f"nnU-Net folder {name!r} does not exist (and $nnUNet_results is unset)")
    pattern = f"Dataset{int(name):03d}_*" if name.isdigit() else name
    found = sorted(Path(root).glob(pattern))
    if len(found) != 1:
        raise EngineError(f"{len(found)} folders match {pattern!r} in $nnUNet_results={root}")
    return found[0]


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an error is a device running out of memory (CUDA's own class or message)."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def run_with_fallback(
    attempt: Callable[[str], T],
    devices: Sequence[str],
    is_oom: Callable[[BaseException], bool] = is_out_of_memory,
) -> tuple[T, list[str]]:
    """Run `attempt(device)` on the first device; when it runs out of memory, on the next.
    Returns (result, notes saying what fell back). Other errors, and running out of memory
    on the last device, propagate: the job fails with that reason and the worker stays up."""
    notes: list[str] = []
    for n, device in enumerate(devices):
        try:
            return attempt(device), notes
        except Exception as exc:
            if not is_oom(exc) or n == len(devices) - 1:
                raise
            notes.append(f"Out of memory on {device} ({exc}); this job ran on {devices[n + 1]}.")
    raise EngineError("no device to run on")


# --- orientation (pure) -----------------------------------------------------------------------


def to_nnunet(array: np.ndarray, volume: Volume) -> tuple[np.ndarray, list[float], np.ndarray]:
    """A [k, j, i] array on the volume's grid as nnU-Net sees a RAS-canonical NIfTI read by
    SimpleITK, TotalSegmentator's way: (array [z, y, x], spacing [z, y, x], orientation)."""
    import nibabel as nib

    affine = volume.geometry.ras_affine()
    orientation = nib.orientations.io_orientation(affine)
    canonical = nib.orientations.apply_orientation(array.transpose(2, 1, 0), orientation)
    spacing = [0.0, 0.0, 0.0]
    for axis, (canonical_axis, _) in enumerate(orientation):
        spacing[int(canonical_axis)] = float(volume.geometry.spacing[axis])
    return np.ascontiguousarray(canonical.transpose(2, 1, 0)), spacing[::-1], orientation


def from_nnunet(labels: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """`to_nnunet`'s inverse for a label array: back to [k, j, i] on the source grid."""
    import nibabel as nib

    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    back = nib.orientations.ornt_transform(ras, orientation)
    source = nib.orientations.apply_orientation(labels.transpose(2, 1, 0), back)
    return np.ascontiguousarray(source.transpose(2, 1, 0))


# --- the resident model ------------------------------------------------------------------------


class ResidentModel:
    """One model folder loaded once: checkpoints hashed and checked, network on its device,
    nnU-Net's predictor ready for any number of volumes."""

    def __init__(self, description: FolderDescription, options: Options) -> None:
        self.description = description
        self.options = options
        self.folds = folds = options.folds or description.folds
        missing = [f for f in folds if f not in description.folds]
        if missing:
            raise EngineError(
                f"{description.path} has no fold {missing} (it has {description.folds})"
            )
        self.device = _device(options.device)
        digests = dict(description.file_digests)
        checkpoints = []
        for fold in folds:
            name = f"fold_{fold}/{CHECKPOINT}"
            data = (description.path / name).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if name in digests and digests[name] != digest:
                raise EngineError(f"{description.path / name} changed while it was being loaded")
            digests[name] = digest
            checkpoints.append(_read_checkpoint(data, description.path / name))
            checkpoint_loads[str(description.path)] += 1
        self.checksum = combined_checksum(digests)
        self._cpu_parameters = [c["network_weights"] for c in checkpoints]
        self._check_checkpoints(checkpoints)
        self.network = self._build_network()
        try:
            self.network.load_state_dict(self._cpu_parameters[0])
        except RuntimeError as exc:
            raise EngineError(
                f"{description.path}: the checkpoint does not fit the network plans.json "
                f"describes: {str(exc).splitlines()[0]}"
            ) from exc
        self.mirror_axes = checkpoints[0].get("inference_allowed_mirroring_axes")
        self._predictors: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._running = threading.Lock()  # nnU-Net reloads the weights per call: one job at a time
        self._predictor(str(self.device))  # network and weights on the device now, not per job

    def _check_checkpoints(self, checkpoints: list[dict]) -> None:
        d = self.description
        for checkpoint in checkpoints:
            init = checkpoint.get("init_args") or {}
            if init.get("configuration", d.configuration) != d.configuration:
                raise EngineError(
                    f"{d.path}: a checkpoint was trained for configuration "
                    f"{init.get('configuration')!r}, the folder is {d.configuration!r}"
                )
            trained = (init.get("plans") or {}).get("configurations", {}).get(d.configuration, {})
            planned = _configuration(_read_json(d.path / "plans.json"), d.configuration)
            if trained and trained.get("architecture") not in (None, planned["architecture"]):
                raise EngineError(
                    f"{d.path}: a checkpoint was trained with another architecture than "
                    "plans.json describes"
                )
            if checkpoint.get("trainer_name", d.trainer) != d.trainer:
                raise EngineError(
                    f"{d.path}: a checkpoint was written by {checkpoint['trainer_name']}, the "
                    f"folder says {d.trainer}"
                )

    def _build_network(self):
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        d = self.description
        self.plans_manager = PlansManager(_read_json(d.path / "plans.json"))
        self.configuration_manager = self.plans_manager.get_configuration(d.configuration)
        self.dataset_json = _read_json(d.path / "dataset.json")
        heads = self.plans_manager.get_label_manager(self.dataset_json).num_segmentation_heads
        cm = self.configuration_manager
        return get_network_from_plans(
            cm.network_arch_class_name,
            cm.network_arch_init_kwargs,
            cm.network_arch_init_kwargs_req_import,
            len(d.channels),
            heads,
            allow_init=False,
            deep_supervision=False,
        )

    def _predictor(self, device: str):
        """nnU-Net's predictor on `device`, built once (a CPU copy only when a job needs it)."""
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        with self._lock:
            if device in self._predictors:
                return self._predictors[device]
            target = torch.device(device)
            if target == self.device:
                network = self.network
            else:  # a second copy built on the host, not copied from a full GPU
                network = self._build_network()
                network.load_state_dict(self._cpu_parameters[0])
            network = network.to(target).eval()
            parameters = [{k: v.to(target) for k, v in p.items()} for p in self._cpu_parameters]
            predictor = nnUNetPredictor(
                tile_step_size=self.options.tile_step,
                use_gaussian=True,
                use_mirroring=self.options.mirroring,
                perform_everything_on_device=target.type == "cuda",
                device=target,
                allow_tqdm=False,
            )
            predictor.manual_initialization(
                network,
                self.plans_manager,
                self.configuration_manager,
                parameters,
                self.dataset_json,
                self.description.trainer,
                self.mirror_axes,
            )
            self._predictors[device] = predictor
            return predictor

    def predict(self, image: np.ndarray, spacing: list[float]) -> tuple[np.ndarray, list[str]]:
        """Labels [z, y, x] (dataset.json values) for an image [c, z, y, x]; notes say when
        the job fell back from CUDA to the CPU."""
        devices = [str(self.device)] + (["cpu"] if self.device.type == "cuda" else [])

        def attempt(device: str) -> np.ndarray:
            predictor = self._predictor(device)
            return predictor.predict_single_npy_array(image, {"spacing": spacing})

        with self._running:
            labels, notes = run_with_fallback(attempt, devices)
        return np.asarray(labels), notes


def _device(preference: str | None):
    import torch

    if preference and preference.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError("CUDA was requested but no CUDA device is available")
    return torch.device(preference or ("cuda" if torch.cuda.is_available() else "cpu"))


def _numpy_data_types() -> list:
    """What nnU-Net's training log stores besides tensors (numpy scalars and arrays): data
    types that rebuild values from bytes and cannot call anything else."""
    from numpy._core import multiarray

    kinds = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
    dtypes = [type(np.dtype(kind)) for kind in kinds]
    return [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]


def _read_checkpoint(data: bytes, path: Path) -> dict:
    """A checkpoint's dictionary: tensors, plain values and numpy data only (a checkpoint
    cannot run code while it is read)."""
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_data_types()):
            checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EngineError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise EngineError(f"{path} is not an nnU-Net checkpoint (no network_weights)")
    return checkpoint


# --- the engine ---------------------------------------------------------------------------------


@dataclass
class _Part:
    model: ResidentModel
    lookup: np.ndarray  # dataset.json value -> node label
    dropped: list[str] = field(default_factory=list)


class NnUNetEngine:
    """One or more nnU-Net folders behind the `SegmentationEngine` interface.

    Node labels run 1..N over the folders' mapped classes in folder order, so they are
    stable across studies; where two folders label one voxel, the earlier folder wins.
    """

    def __init__(
        self,
        descriptions: Sequence[FolderDescription],
        options: Options,
        name: str | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        modalities = {d.modality for d in descriptions}
        if len(modalities) != 1:
            raise EngineError(f"the folders mix modalities {sorted(modalities)}")
        self.modality = modalities.pop()
        self.options = options
        self.structures: dict[int, Structure] = {}
        self.parts: list[_Part] = []
        self._notes = list(notes)
        for d in descriptions:
            if not d.structures:
                raise EngineError(
                    f"{d.path}: none of its classes is a structure the node measures "
                    f"({', '.join(d.classes.values())}); map them in {MAPPING_FILE}"
                )
        for d in descriptions:
            lookup = np.zeros(max(d.classes) + 1, dtype=np.uint16)
            for value, key in sorted(d.structures.items()):
                label = len(self.structures) + 1
                self.structures[label] = STRUCTURES[key]
                lookup[value] = label
            self.parts.append(_Part(ResidentModel(d, options), lookup, d.unmapped))
        use = {d.intended_use for d in descriptions}
        intended_use: IntendedUse = "demo" if "demo" in use else "research"
        version = (
            self.parts[0].model.checksum
            if len(self.parts) == 1
            else combined_checksum(
                {p.model.description.dataset: p.model.checksum for p in self.parts}
            )
        )
        self.algorithm = Algorithm(
            name=(name or "nnU-Net " + "+".join(d.dataset for d in descriptions))[:64],
            version=f"sha256:{version[:16]}",
            family=codes.cid7162.ArtificialIntelligence,
            kind="deep learning",
            intended_use=intended_use,
            parameters={
                "models": ",".join(
                    f"{p.model.description.dataset}/{p.model.description.configuration}"
                    f"/folds {'+'.join(p.model.folds)}"
                    for p in self.parts
                ),
                **options.as_parameters(),
                "device": str(self.parts[0].model.device),
            },
        )

    def segment(self, volume: Volume) -> LabelMap:
        modality = str(getattr(volume.datasets[0], "Modality", "")) if volume.datasets else ""
        if modality and modality != self.modality:
            raise EngineError(f"this model segments {self.modality} images, not {modality}")
        labels = np.zeros(volume.shape, dtype=np.uint16)
        notes = list(self._notes)
        for part in self.parts:
            d = part.model.description
            image, spacing, orientation = _input(volume, d)
            raw, fallback = part.model.predict(image, spacing)
            notes += fallback
            mapped = from_nnunet(part.lookup[raw.astype(np.int64)], orientation)
            np.copyto(labels, mapped, where=(labels == 0))
            if part.dropped:
                notes.append(
                    f"{d.dataset}: classes the node does not measure were ignored "
                    f"({len(part.dropped)}: {', '.join(part.dropped[:8])}"
                    f"{', …' if len(part.dropped) > 8 else ''})."
                )
        if any(p.model.description.intended_use == "demo" for p in self.parts):
            notes.insert(
                0,
                "Demo model trained on generated phantoms; its labels are not "
                "measurements of real anatomy.",
            )
        found = set(np.unique(labels).tolist())
        missing = [s.name for n, s in self.structures.items() if n not in found]
        if missing:
            notes.append("Not found by the model: " + ", ".join(missing) + ".")
        return LabelMap(
            labels=labels,
            structures={n: s for n, s in self.structures.items() if n in found},
            notes=notes,
        )


def _input(volume: Volume, d: FolderDescription) -> tuple[np.ndarray, list[float], np.ndarray]:
    """The volume's channels in the folder's order, oriented as nnU-Net was trained."""
    arrays = []
    for n, name in enumerate(d.channels):
        if n == 0:
            arrays.append(volume.array)
        elif name.lower() in volume.channels:
            arrays.append(volume.channels[name.lower()])
        else:
            raise EngineError(f"{d.dataset} needs a {name!r} channel, which this job lacks")
    oriented = [to_nnunet(a.astype(np.float32), volume) for a in arrays]
    return np.stack([o[0] for o in oriented]), oriented[0][1], oriented[0][2]


def create_nnunet_engine(argument: str | None) -> NnUNetEngine:
    """``nnunet:FOLDER[,FOLDER...][?OPTIONS]`` -> a resident engine (see the module doc)."""
    names, options = parse_spec(argument)
    descriptions = [describe_folder(resolve_name(name), hash_checkpoints=False) for name in names]
    return NnUNetEngine(descriptions, options)


_CHECKPOINT_DIGESTS: dict[tuple[str, int, int], str] = {}


def _checkpoint_digest(path: Path) -> str:
    """A checkpoint's sha256, hashed again only when its size or modification time changed."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CHECKPOINT_DIGESTS:
        _CHECKPOINT_DIGESTS[key] = _sha256_file(path)
    return _CHECKPOINT_DIGESTS[key]


def folders_identity(
    folders: Sequence[Path], options: Options, name: str | None = None
) -> EngineIdentity:
    """What an engine over these folders will call itself (the same name and checksum version
    as `NnUNetEngine`), read without torch or nnU-Net: what routing asks."""
    descriptions = [describe_folder(folder, hash_checkpoints=False) for folder in folders]
    modalities = {d.modality for d in descriptions}
    if len(modalities) != 1:
        raise EngineError(f"the folders mix modalities {sorted(modalities)}")
    checksums = {}
    for d in descriptions:
        if not d.structures:
            raise EngineError(f"{d.path}: none of its classes is a structure the node measures")
        digests = dict(d.file_digests)
        for fold in options.folds or d.folds:
            if fold not in d.folds:
                raise EngineError(f"{d.path} has no fold {fold!r} (it has {d.folds})")
            digests[f"fold_{fold}/{CHECKPOINT}"] = _checkpoint_digest(
                d.path / f"fold_{fold}" / CHECKPOINT
            )
        checksums[d.dataset] = combined_checksum(digests)
    version = (
        next(iter(checksums.values())) if len(checksums) == 1 else combined_checksum(checksums)
    )
    intended_use: IntendedUse = (
        "demo" if any(d.intended_use == "demo" for d in descriptions) else "research"
    )
    algorithm = Algorithm(
        name=(name or "nnU-Net " + "+".join(d.dataset for d in descriptions))[:64],
        version=f"sha256:{version[:16]}",
        family=codes.cid7162.ArtificialIntelligence,
        kind="deep learning",
        intended_use=intended_use,
    )
    return EngineIdentity(algorithm, "segmentation", modalities.pop())


def identify_nnunet(argument: str | None) -> EngineIdentity:
    """``nnunet:...`` named from its folders' files and checksums; no model is loaded."""
    names, options = parse_spec(argument)
    return folders_identity([resolve_name(name) for name in names], options)


ENGINES = {"nnunet": EngineKind(create=create_nnunet_engine, identify=identify_nnunet)}
