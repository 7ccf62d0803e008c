"""Model bundles: a folder in MONAI bundle layout with a manifest the node can trust.

Layout (MONAI bundle specification, plus a ``myonode`` section in the metadata)::

    <bundle>/configs/metadata.json    MONAI metadata + the myonode manifest
    <bundle>/configs/inference.json   MONAI config: network_def, inferer, post-processing
    <bundle>/configs/train.json       MONAI config: the paper's training recipe
    <bundle>/models/...               weights, each listed in the manifest with its sha256
    <bundle>/docs/README.md           what the bundle is, its data and its limits

The manifest says what the weights expect (channels, spacing, intensity window), what their
labels mean (structure keys of `myonode.dicom.anatomy`, with codes), where they come from (training
provenance, validation metrics) and what they may be used for (demo / research / clinical).

What is trusted: the manifest. It lists the sha256 of `configs/inference.json`,
`configs/train.json` (`configs`) and of every weights file (`weights`); metadata.json holds the
manifest and cannot hash itself, so the manifest is what a site reviews, signs or pins.
`load_bundle` reads each config file once, checks those bytes against the manifest and only
then parses them as JSON; a config file that is missing from the manifest or differs from it
is refused before MONAI sees it. A checksum proves only that a file is the one the manifest
names, not that it is harmless, so every config must also pass `checked_config`: no ``$``
expressions (MONAI evaluates them as Python), no ``%`` macros (they read other files), and
``_target_`` only for classes of MONAI networks, losses, inferers and transforms (no I/O
transforms), `torch.nn` and `torch.optim`, or the node's own `myonode.models.networks`.
Every MONAI `ConfigParser` the node builds goes through `config_parser`, which applies it.
Weights are read once: the bytes that were hashed are the bytes deserialised
(`verified_weights`), torch state with ``weights_only=True``; a pickle (seed 004's forest) is
unpickled only after its checksum matched, which is why a manifest must come from someone
the site trusts.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import pydoc
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydicom.sr.codedict import codes

from myonode.core.types import Algorithm
from myonode.dicom.anatomy import STRUCTURES, Structure

METADATA = Path("configs/metadata.json")
INFERENCE = Path("configs/inference.json")
TRAIN = Path("configs/train.json")
README = Path("docs/README.md")
MONAI_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
    "0.8.1/meta_schema_20240725.json"
)


CONFIGS = (INFERENCE, TRAIN)  # hashed in the manifest's `configs`

# `_target_` of a bundle config must resolve (as MONAI resolves it) to a class whose module
# starts with one of these, or to a function of the node's own networks module. Refused
# inside them: MONAI's I/O transforms (they read and write files) and lambdas.
ALLOWED_TARGETS = (
    "monai.networks.",
    "monai.losses.",
    "monai.inferers.",
    "monai.transforms.",
    "torch.nn.",
    "torch.optim.",
    "myonode.models.networks.",
)
DENIED_TARGETS = ("monai.transforms.io.",)
DENIED_NAMES = ("Lambda", "Save", "Load", "Write")
NETWORK_FUNCTIONS = "myonode.models.networks."
ALLOWED_MODES = ("default", "callable", "partial")


class BundleError(ValueError):
    """A bundle is missing or malformed, a file does not match its checksum, or a config
    uses something the node does not allow."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodeSpec(_Strict):
    value: str
    scheme: str
    meaning: str


class LabelSpec(_Strict):
    """One output label: the node's structure key and, for readers, its codes."""

    key: str
    property_type: CodeSpec
    laterality: CodeSpec | None = None


class TargetSpec(_Strict):
    """One regression target; the network predicts it standardised by `mean` and `std`."""

    unit: str
    description: str
    mean: float = 0.0
    std: float = 1.0


class InputSpec(_Strict):
    """What the network expects.

    `channels`: image roles in order; ``"image"`` is `Volume.array` (CT HU, Dixon water, the
    radiograph), any other name is `Volume.channels[name]` (e.g. ``"fat"``).
    `spacing_mm`: resampling target as (i, j, k) = (column, row, slice) mm, like
    `Geometry.spacing`; None keeps the native grid (seed 000 works on native axial slices).
    `window`: (low, high) clipped and scaled to [0, 1] (CT 400/40 is (-160, 240)).
    `normalize`: ``"window"``, ``"zscore"`` (per channel, after any crop) or ``"none"``.
    `image_size` and `clahe`: 2D radiograph resize and contrast-limited equalisation.
    """

    channels: list[str] = Field(default_factory=lambda: ["image"], min_length=1)
    spacing_mm: tuple[float, float, float] | None = None
    window: tuple[float, float] | None = None
    normalize: Literal["window", "zscore", "none"] = "window"
    image_size: tuple[int, int] | None = None
    clahe: bool = False

    @model_validator(mode="after")
    def _window_when_windowing(self) -> InputSpec:
        if self.normalize == "window" and self.window is None:
            raise ValueError("normalize 'window' needs input.window")
        return self


class WeightsFile(_Strict):
    path: str
    sha256: str
    format: Literal["torch", "pickle"] = "torch"


class Architecture(_Strict):
    name: str
    reference: str
    notes: str = ""


class Provenance(_Strict):
    """How the weights were produced."""

    data: str
    cases: int
    epochs: int
    recipe: str
    trained_at: str
    device: str
    software: dict[str, str] = Field(default_factory=dict)
    command: str = ""
    final_loss: float | None = None


class Validation(_Strict):
    data: str
    cases: int
    metrics: dict[str, float]
    evaluated_at: str


class Manifest(_Strict):
    name: str
    version: str
    description: str
    task: Literal["segmentation", "regression"]
    modality: str
    intended_use: Literal["demo", "research", "clinical"]
    input: InputSpec
    labels: dict[int, LabelSpec] = Field(default_factory=dict)
    targets: dict[str, TargetSpec] = Field(default_factory=dict)
    architecture: Architecture
    configs: dict[str, str] = Field(default_factory=dict)  # bundle-relative path -> sha256
    weights: list[WeightsFile] = Field(default_factory=list)
    training: Provenance | None = None
    validation: Validation | None = None

    @model_validator(mode="after")
    def _outputs_match_task(self) -> Manifest:
        if self.task == "segmentation" and not self.labels:
            raise ValueError("a segmentation bundle needs labels")
        if self.task == "regression" and not self.targets:
            raise ValueError("a regression bundle needs targets")
        if 0 in self.labels:
            raise ValueError("label 0 is background and cannot name a structure")
        unknown = set(self.configs) - {str(c) for c in CONFIGS}
        if unknown:
            raise ValueError(f"configs may only list {[str(c) for c in CONFIGS]}: {unknown}")
        return self


def label_spec(structure: Structure) -> LabelSpec:
    """The manifest entry for one of the node's structures."""

    def code(c) -> CodeSpec:
        return CodeSpec(value=c.value, scheme=c.scheme_designator, meaning=c.meaning)

    return LabelSpec(
        key=structure.key,
        property_type=code(structure.property_type),
        laterality=code(structure.laterality) if structure.laterality else None,
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _refuse_target(source: str, where: str, target: Any, why: str) -> BundleError:
    return BundleError(
        f"{source} {where}: _target_ {target!r} refused ({why}); bundle configs may only "
        f"instantiate classes under {', '.join(ALLOWED_TARGETS)} (not {DENIED_TARGETS[0]}*, "
        "lambdas or savers/loaders) or functions of myonode.models.networks"
    )


_LOCATOR = None


def _resolve_target(target: Any, where: str, source: str) -> str:
    """The full dotted path MONAI would instantiate for `target`, if the allow-list permits it."""
    global _LOCATOR
    if not isinstance(target, str) or not target:
        raise _refuse_target(source, where, target, "not a name")
    path = target
    if "." not in target:  # MONAI looks short names up among the loaded monai modules
        if _LOCATOR is None:
            import monai  # noqa: F401  (loads the submodules the locator scans)
            from monai.bundle.config_item import ComponentLocator

            _LOCATOR = ComponentLocator()
        module = _LOCATOR.get_component_module_name(target)
        if module is None:
            raise _refuse_target(source, where, target, "not a MONAI component")
        path = f"{module[0] if isinstance(module, list) else module}.{target}"
    if not path.startswith(ALLOWED_TARGETS) or path.startswith(DENIED_TARGETS):
        raise _refuse_target(source, where, target, f"{path} is outside the allow-list")
    try:
        obj = pydoc.locate(path)
    except Exception as exc:  # an import error inside an allowed package
        raise _refuse_target(source, where, target, f"cannot import {path}: {exc}") from exc
    if obj is None:
        raise _refuse_target(source, where, target, f"{path} does not exist")
    # Attribute chains can reach other modules (e.g. "torch.nn.functional.torch.load"): the
    # object itself must be defined inside the allow-list.
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__name__", "")
    defined = f"{module}."
    if not defined.startswith(ALLOWED_TARGETS) or defined.startswith(DENIED_TARGETS):
        raise _refuse_target(source, where, target, f"{path} is defined in {module or '?'}")
    if name.startswith(DENIED_NAMES) or "Lambda" in name:
        raise _refuse_target(source, where, target, f"{name} is refused by name")
    if not (inspect.isclass(obj) or (inspect.isfunction(obj) and defined == NETWORK_FUNCTIONS)):
        raise _refuse_target(source, where, target, f"{path} is not a class")
    return path


def checked_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """`config` with every ``_target_`` replaced by the full path it resolves to, or
    `BundleError` when it holds a ``$`` expression, a ``%`` macro, an unknown ``_mode_`` or a
    ``_target_`` outside the allow-list. Resolving targets here, once, means MONAI's own
    short-name lookup never decides what is instantiated."""

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, str):
            if node.startswith("$"):
                raise BundleError(
                    f"{source} {where}: expression {node[:80]!r} refused; bundle configs may "
                    "not contain $ expressions (MONAI evaluates them as Python)"
                )
            if node.startswith("%"):
                raise BundleError(
                    f"{source} {where}: macro {node[:80]!r} refused; bundle configs may not "
                    "pull in other files (% macros)"
                )
            return node
        if isinstance(node, list):
            return [walk(item, f"{where}[{n}]") for n, item in enumerate(node)]
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if not isinstance(key, str):
                    raise BundleError(f"{source} {where}: non-string key {key!r}")
                inner = f"{where}.{key}" if where else key
                if key == "_target_":
                    out[key] = _resolve_target(value, where or "(top)", source)
                elif key == "_mode_" and value not in ALLOWED_MODES:
                    raise BundleError(
                        f"{source} {inner}: _mode_ {value!r} refused (allowed: {ALLOWED_MODES})"
                    )
                else:
                    out[key] = walk(value, inner)
            return out
        return copy.deepcopy(node)

    if not isinstance(config, dict):
        raise BundleError(f"{source} is not a JSON object")
    return walk(config, "")


def config_parser(config: dict[str, Any], source: str = "config"):
    """A MONAI `ConfigParser` over `config` once it passed `checked_config`; the node builds
    no other."""
    from monai.bundle import ConfigParser

    return ConfigParser(checked_config(config, source))


def _config_hashes(root: Path) -> dict[str, str]:
    return {str(rel): sha256_of(root / rel) for rel in CONFIGS if (root / rel).is_file()}


def _verified_configs(root: Path, manifest: Manifest) -> dict[Path, dict[str, Any]]:
    """Each config file read once, its bytes checked against the manifest's sha256, and only
    then parsed as JSON and checked against the allow-list."""
    configs = {}
    for rel in CONFIGS:
        path = root / rel
        expected = manifest.configs.get(str(rel))
        if not path.is_file():
            if expected is not None or rel == INFERENCE:
                raise BundleError(f"{root} has no {rel} (the manifest lists it)")
            continue
        if expected is None:
            raise BundleError(
                f"{path} has no sha256 in the manifest (myonode.configs): refusing to read a "
                "config the manifest does not vouch for"
            )
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise BundleError(
                f"checksum mismatch for {path}: manifest sha256 {expected}, file {actual}; "
                "refusing to parse a config that is not the one the manifest describes"
            )
        try:
            parsed = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path} is not valid JSON: {exc}") from exc
        configs[rel] = checked_config(parsed, str(rel))
    return configs


class Bundle:
    """A bundle whose manifest is validated and whose configs matched their sha256 and the
    allow-list (weights are verified separately, by `verified_weights`)."""

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        inference: dict[str, Any],
        train: dict[str, Any] | None = None,
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.inference = inference
        self.train = train

    @property
    def has_weights(self) -> bool:
        return bool(self.manifest.weights)

    def algorithm(self, **parameters: str) -> Algorithm:
        """How SEG and SR identify this model; see `algorithm_of`."""
        return algorithm_of(self.manifest, **parameters)

    def demo_statement(self) -> str | None:
        """What every output of a demo bundle opens its caveat with; None for other bundles."""
        if self.manifest.intended_use != "demo":
            return None
        return (
            f"Model {self.manifest.name} {self.manifest.version} is a demo bundle trained on "
            "generated phantoms"
        )

    def structures(self) -> dict[int, Structure]:
        """Label value -> the node's structure, checked against the manifest's codes."""
        return {label: _structure_for(spec) for label, spec in self.manifest.labels.items()}

    def verified_weights(self) -> dict[str, bytes]:
        """Every weights file's bytes, read once and checked against its sha256; refuses any
        mismatch. Deserialise these bytes, never the file again (it could change between)."""
        if not self.manifest.weights:
            raise BundleError(f"bundle {self.root} has no weights (train it first)")
        verified = {}
        for entry in self.manifest.weights:
            path = (self.root / entry.path).resolve()
            if self.root.resolve() not in path.parents:
                raise BundleError(f"weights path {entry.path!r} leaves the bundle folder")
            if not path.is_file():
                raise BundleError(f"weights file {path} listed in the manifest is missing")
            data = path.read_bytes()
            actual = hashlib.sha256(data).hexdigest()
            if actual != entry.sha256:
                raise BundleError(
                    f"checksum mismatch for {path}: manifest sha256 {entry.sha256}, file "
                    f"{actual}; refusing to load weights that are not the ones the manifest "
                    "describes"
                )
            verified[entry.path] = data
        return verified

    def train_config(self) -> dict[str, Any]:
        """configs/train.json as verified by `load_bundle` (not read again)."""
        if self.train is None:
            raise BundleError(f"{self.root / TRAIN} is missing: this bundle has no training recipe")
        return copy.deepcopy(self.train)

    def readme(self) -> str:
        path = self.root / README
        return path.read_text() if path.is_file() else ""


def algorithm_of(manifest: Manifest, **parameters: str) -> Algorithm:
    """How SEG and SR identify a bundle's model (PS3.3 C.8.20.2, TID 4019): name, version,
    intended use, architecture and the weights' checksums, plus `parameters`."""
    return Algorithm(
        name=manifest.name,
        version=manifest.version,
        family=codes.cid7162.ArtificialIntelligence,
        kind="deep learning",
        intended_use=manifest.intended_use,
        parameters={
            "architecture": manifest.architecture.name[:64],
            "weights_sha256": ",".join(w.sha256[:16] for w in manifest.weights),
            **parameters,
        },
    )


_CHECKED_FILES: dict[tuple[Path, int, int], str] = {}


def _sha256_cached(path: Path) -> str:
    """A file's sha256, hashed again only when its size or modification time changed."""
    stat = path.stat()
    key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
    if key not in _CHECKED_FILES:
        _CHECKED_FILES[key] = sha256_of(path)
    return _CHECKED_FILES[key]


def checked_manifest(root: Path | str) -> Manifest:
    """A bundle's manifest, with every config and weights file present and matching its sha256,
    without parsing a config or importing torch: what routing needs to know that a pipeline
    can run and which version it is. `load_bundle` still checks everything again at load."""
    root = Path(root)
    manifest = _read_manifest(root)
    listed = {**manifest.configs, **{w.path: w.sha256 for w in manifest.weights}}
    if str(INFERENCE) not in manifest.configs:
        raise BundleError(f"{root} has no {INFERENCE} in its manifest")
    if not manifest.weights:
        raise BundleError(f"bundle {root} has no weights (train it first)")
    for rel, expected in listed.items():
        path = (root / rel).resolve()
        if root.resolve() not in path.parents:
            raise BundleError(f"{rel!r} leaves the bundle folder")
        if not path.is_file():
            raise BundleError(f"{path} listed in the manifest is missing")
        actual = _sha256_cached(path)
        if actual != expected:
            raise BundleError(
                f"checksum mismatch for {path}: manifest sha256 {expected}, file {actual}"
            )
    return manifest


def _structure_for(spec: LabelSpec) -> Structure:
    structure = STRUCTURES.get(spec.key)
    if structure is None:
        raise BundleError(f"label key {spec.key!r} is not a structure this node knows")
    expected = label_spec(structure)
    if expected != spec:
        raise BundleError(
            f"label {spec.key!r}: manifest codes {spec.model_dump()} differ from the node's "
            f"{expected.model_dump()}"
        )
    return structure


def _read_manifest(root: Path) -> Manifest:
    metadata_path = root / METADATA
    if not metadata_path.is_file():
        raise BundleError(f"{root} is not a bundle: {METADATA} is missing")
    try:
        metadata = json.loads(metadata_path.read_text())
        manifest = Manifest.model_validate(metadata.get("myonode"))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise BundleError(f"invalid manifest in {metadata_path}: {exc}") from exc
    for key in ("name", "version", "intended_use"):
        if key in metadata and metadata[key] != getattr(manifest, key):
            raise BundleError(
                f"{metadata_path}: top-level {key!r} ({metadata[key]!r}) disagrees with the "
                f"myonode manifest ({getattr(manifest, key)!r})"
            )
    return manifest


def load_bundle(root: Path | str) -> Bundle:
    """Read and validate a bundle's manifest, then its configs: each checked against its
    sha256 in the manifest before it is parsed, and against the allow-list after (weights not
    yet read)."""
    root = Path(root)
    manifest = _read_manifest(root)
    configs = _verified_configs(root, manifest)
    inference = configs[INFERENCE]
    if "network_def" not in inference:
        raise BundleError(f"{root / INFERENCE} has no network_def")
    bundle = Bundle(root, manifest, inference, configs.get(TRAIN))
    bundle.structures()  # unknown keys or mismatched codes fail here, not mid-job
    return bundle


def monai_metadata(manifest: Manifest, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """metadata.json: the MONAI bundle keys derived from the manifest, and the manifest."""
    import monai
    import numpy
    import torch

    outputs: dict[str, Any]
    if manifest.task == "segmentation":
        outputs = {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 1,
                "dtype": "uint16",
                "value_range": [0, max(manifest.labels)],
                "is_patch_data": False,
                "channel_def": {
                    "0": "label map: "
                    + ", ".join(f"{k}={v.key}" for k, v in sorted(manifest.labels.items()))
                },
            }
        }
    else:
        outputs = {
            "pred": {
                "type": "vector",
                "format": "gaussian",
                "num_channels": 2 * len(manifest.targets),
                "dtype": "float32",
                "channel_def": {
                    str(i): f"{name} {part}"
                    for i, (name, part) in enumerate(
                        (n, p) for n in manifest.targets for p in ("mu", "sigma")
                    )
                },
            }
        }
    return {
        "schema": MONAI_SCHEMA,
        "name": manifest.name,
        "version": manifest.version,
        "changelog": {manifest.version: manifest.description},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {},
        "task": f"{manifest.modality} {manifest.task}",
        "description": manifest.description,
        "authors": "myonode contributors",
        "copyright": "Apache-2.0",
        "intended_use": manifest.intended_use,
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": manifest.modality,
                    "num_channels": len(manifest.input.channels),
                    "dtype": "float32",
                    "is_patch_data": False,
                    "channel_def": dict(enumerate(manifest.input.channels)),
                }
            },
            "outputs": outputs,
        },
        **(extra or {}),
        "myonode": json.loads(manifest.model_dump_json()),
    }


def write_metadata(root: Path, manifest: Manifest) -> None:
    path = root / METADATA
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(monai_metadata(manifest), indent=2) + "\n")


def write_bundle(
    root: Path,
    manifest: Manifest,
    inference: dict[str, Any],
    train: dict[str, Any] | None,
    readme: str,
) -> Bundle:
    """Write a bundle's configs and docs, the configs' sha256 in its manifest (weights are
    added by training). Configs outside the allow-list are refused before anything is written."""
    checked_config(inference, str(INFERENCE))
    if train is not None:
        checked_config(train, str(TRAIN))
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / INFERENCE).parent.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for rel, config in ((INFERENCE, inference), (TRAIN, train)):
        if config is None:
            continue
        data = (json.dumps(config, indent=2) + "\n").encode()
        (root / rel).write_bytes(data)
        hashes[str(rel)] = hashlib.sha256(data).hexdigest()
    write_metadata(root, manifest.model_copy(update={"configs": hashes}))
    (root / README).parent.mkdir(parents=True, exist_ok=True)
    (root / README).write_text(readme)
    return load_bundle(root)


def record_configs(root: Path | str) -> Manifest:
    """Record the sha256 of the bundle's config files as they are now in its manifest, after
    checking them against the allow-list. This vouches for the files: review them first (it
    is how the committed demo bundles got their config checksums without retraining)."""
    root = Path(root)
    manifest = _read_manifest(root)
    for rel in CONFIGS:
        if (root / rel).is_file():
            checked_config(json.loads((root / rel).read_bytes()), str(rel))
    updated = manifest.model_copy(update={"configs": _config_hashes(root)})
    write_metadata(root, updated)
    load_bundle(root)
    return updated


def record_weights(root: Path, manifest: Manifest, files: dict[str, str]) -> Manifest:
    """List weights files (bundle-relative path -> format) with their sha256 in the manifest.
    The config checksums stay those of `manifest` (a bundle loaded, so verified, before)."""
    entries = [
        WeightsFile(path=rel, sha256=sha256_of(root / rel), format=fmt)  # type: ignore[arg-type]
        for rel, fmt in files.items()
    ]
    updated = manifest.model_copy(update={"weights": entries})
    write_metadata(root, updated)
    return updated
