"""What every training run shares: its options and result, the folder it trains into, atomic
checkpoints and progress bars. Segmentation (`training`) and SARC-CXR (`cxr`) training both
build on it, so neither imports the other's module for these.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from myonode.models.bundle import Bundle, BundleError, load_bundle, write_metadata


@dataclass
class TrainOptions:
    epochs: int | None = None  # run the first N epochs of the recipe (tiny runs)
    resume: bool = False
    finetune: bool = False  # start from the source bundle's weights instead of scratch
    device: str | None = None
    intended_use: Literal["demo", "research"] = "research"
    progress: bool = True
    seed: int = 0
    data_description: str | None = None
    command: str = ""


@dataclass
class TrainResult:
    bundle: Bundle
    epochs: int
    losses: list[float] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)


def prepare_output(source: Path, out: Path | None, finetune: bool) -> Path:
    """The bundle folder to train into: `source` itself, or a copy of its configs and docs."""
    if out is None or out.resolve() == source.resolve():
        return source
    if (out / "configs").exists():
        raise BundleError(f"{out} already holds a bundle; choose another --out or train it")
    shutil.copytree(source / "configs", out / "configs")
    if (source / "docs").is_dir():
        shutil.copytree(source / "docs", out / "docs")
    (out / "models").mkdir(parents=True, exist_ok=True)
    if finetune:
        shutil.copytree(source / "models", out / "models", dirs_exist_ok=True)
    else:  # a new model: the source's weights, provenance and metrics do not describe it
        manifest = load_bundle(out).manifest
        write_metadata(
            out, manifest.model_copy(update={"weights": [], "training": None, "validation": None})
        )
    return out


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically: a killed run leaves the previous one, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def progress_bars(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )
