"""Model bundles: a folder in MONAI bundle layout with a manifest the node can trust.

Layout (MONAI bundle specification, plus a ``myonode`` section in the metadata)::

    <bundle>/configs/metadata.json    MONAI metadata + the myonode manifest
    <bundle>/configs/inference.json   MONAI config: network_def, inferer, post-processing
    <bundle>/configs/train.json       MONAI config: the paper's training recipe
    <bundle>/models/...               weights, each listed in the manifest with its sha256
    <bundle>/docs/README.md           what the bundle is, its data and its limits

The manifest says what the weights expect (channels, spacing, intensity window), what their
labels mean (structure keys of `myonode.anatomy`, with codes), where they come from (training
provenance, validation metrics) and what they may be used for (demo / research / clinical).
Loading verifies every weights file against its sha256 before anything is deserialised.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydicom.sr.codedict import codes

from myonode.anatomy import STRUCTURES, Structure
from myonode.engines import Algorithm

METADATA = Path("configs/metadata.json")
INFERENCE = Path("configs/inference.json")
TRAIN = Path("configs/train.json")
README = Path("docs/README.md")
MONAI_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
    "0.8.1/meta_schema_20240725.json"
)


class BundleError(ValueError):
    """A bundle is missing, malformed or its weights do not match their checksum."""


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


class Bundle:
    """A bundle folder whose manifest has been validated (weights are verified separately)."""

    def __init__(self, root: Path, manifest: Manifest, inference: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self.inference = inference

    @property
    def has_weights(self) -> bool:
        return bool(self.manifest.weights)

    def algorithm(self, **parameters: str) -> Algorithm:
        """How SEG and SR identify this model (PS3.3 C.8.20.2, TID 4019): name, version,
        intended use, architecture and the weights' checksums, plus `parameters`."""
        manifest = self.manifest
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

    def structures(self) -> dict[int, Structure]:
        """Label value -> the node's structure, checked against the manifest's codes."""
        return {label: _structure_for(spec) for label, spec in self.manifest.labels.items()}

    def verified_weights(self) -> dict[str, Path]:
        """Every weights file, checked against its sha256; refuses any mismatch."""
        if not self.manifest.weights:
            raise BundleError(f"bundle {self.root} has no weights (train it first)")
        verified = {}
        for entry in self.manifest.weights:
            path = (self.root / entry.path).resolve()
            if self.root.resolve() not in path.parents:
                raise BundleError(f"weights path {entry.path!r} leaves the bundle folder")
            if not path.is_file():
                raise BundleError(f"weights file {path} listed in the manifest is missing")
            actual = sha256_of(path)
            if actual != entry.sha256:
                raise BundleError(
                    f"checksum mismatch for {path}: manifest sha256 {entry.sha256}, file "
                    f"{actual}; refusing to load weights that are not the ones the manifest "
                    "describes"
                )
            verified[entry.path] = path
        return verified

    def train_config(self) -> dict[str, Any]:
        path = self.root / TRAIN
        if not path.is_file():
            raise BundleError(f"{path} is missing: this bundle has no training recipe")
        return json.loads(path.read_text())

    def readme(self) -> str:
        path = self.root / README
        return path.read_text() if path.is_file() else ""


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


def load_bundle(root: Path | str) -> Bundle:
    """Read and validate a bundle's manifest and inference config (weights not yet read)."""
    root = Path(root)
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
    inference_path = root / INFERENCE
    if not inference_path.is_file():
        raise BundleError(f"{root} has no {INFERENCE}")
    inference = json.loads(inference_path.read_text())
    if "network_def" not in inference:
        raise BundleError(f"{inference_path} has no network_def")
    bundle = Bundle(root, manifest, inference)
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
    """Write a bundle's configs and docs (weights are added by training)."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    write_metadata(root, manifest)
    (root / INFERENCE).write_text(json.dumps(inference, indent=2) + "\n")
    if train is not None:
        (root / TRAIN).write_text(json.dumps(train, indent=2) + "\n")
    (root / README).parent.mkdir(parents=True, exist_ok=True)
    (root / README).write_text(readme)
    return load_bundle(root)


def record_weights(root: Path, manifest: Manifest, files: dict[str, str]) -> Manifest:
    """List weights files (bundle-relative path -> format) with their sha256 in the manifest."""
    entries = [
        WeightsFile(path=rel, sha256=sha256_of(root / rel), format=fmt)  # type: ignore[arg-type]
        for rel, fmt in files.items()
    ]
    updated = manifest.model_copy(update={"weights": entries})
    write_metadata(root, updated)
    return updated
