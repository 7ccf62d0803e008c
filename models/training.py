"""Train a segmentation bundle on labelled cases, with the recipe in its `configs/train.json`.

The recipe is MONAI config: `loss`, `optimizer` (a callable taking the parameters),
`augmentation` (MONAI dictionary transforms, e.g. seed 000's zoom and rotation with p = 0.8,
seed 002's positive/negative patch sampling), `lr_stages` ([[epochs, lr], ...], e.g. seed 000's
100 epochs at 1e-4, 1e-5 and 1e-6), `batch_size`, `val_fraction`, `amp`, `num_workers`
(data-loading processes) and `weights_dtype` (``float16`` ships half-size weights). Cases go
through exactly the preprocessing inference uses (canonical orientation, spacing,
normalisation, left/right mirroring for seed 001), so what is learned is what runs.

A checkpoint is written after every epoch to ``<bundle>/train/checkpoint.pt``; `resume=True`
continues from it. At the end the weights go to ``models/model.pt``, their sha256, the
training provenance and the validation metrics (held-out cases) into the manifest. (Seed 004
regression bundles train in `cxr`: ``train/ensembles_checkpoint.pt`` per finished ensemble
member, then ``models/ensembles.pt`` and ``models/sarcopenia_rf.pkl``.) The configs' sha256
recorded when the bundle was written stay in the manifest; every config is parsed through
`bundle.config_parser` (allow-listed, no ``$`` expressions).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset, list_data_collate
from monai.transforms import Compose, EnsureTyped
from monai.utils import set_determinism

from myonode.models.bundle import (
    Bundle,
    BundleError,
    Provenance,
    Validation,
    config_parser,
    load_bundle,
    record_weights,
    write_metadata,
)
from myonode.models.checkpoints import (
    TrainOptions,
    TrainResult,
    prepare_output,
    progress_bars,
    save_checkpoint,
)
from myonode.models.data import Case, load_cases
from myonode.models.preprocess import (
    normalize,
    orientation_of,
    resampled_shape,
    resize,
    sides,
    stack_channels,
)
from myonode.models.runtime import autocast, build_network, load_state, resolve_device

WEIGHTS = "models/model.pt"
CHECKPOINT = Path("train/checkpoint.pt")


def training_samples(
    cases: list[Case], bundle: Bundle, settings: dict[str, Any], rng: np.random.Generator
) -> list[dict[str, np.ndarray]]:
    """Network-ready {"image": [C, ...], "label": [1, ...]} samples: volumes (3D) or axial
    slices (2D; every labelled slice and as many unlabelled ones at most)."""
    spec = bundle.manifest.input
    mirror = settings.get("mirror_lr")
    two_d = int(settings.get("spatial_dims", 3)) == 2
    binary = settings.get("activation", "softmax") == "sigmoid"
    samples, empty = [], []
    for case in cases:
        orientation = orientation_of(case.volume.geometry)
        image = orientation.to_canonical(stack_channels(case.volume, spec.channels))
        labels = orientation.to_canonical(case.labels)
        spacing = orientation.spacing(case.volume.geometry)
        for side in sides(image[0], bool(mirror)):
            part = side.cut(image)
            target = side.cut(labels)
            if mirror:
                target = target == mirror[side.name]
            elif binary:
                target = target > 0
            shape = resampled_shape(part.shape[1:], spacing, spec.spacing_mm, two_d)
            part = resize(torch.from_numpy(part)[None], shape, "trilinear")[0].numpy()
            target = resize(
                torch.from_numpy(target.astype(np.float32))[None, None], shape, "nearest"
            )[0].numpy()
            part = normalize(part, spec)
            if not two_d:
                samples.append({"image": part, "label": target})
                continue
            for k in range(part.shape[1]):
                sample = {"image": part[:, k], "label": target[:, k]}
                (samples if target[:, k].any() else empty).append(sample)
    if two_d and empty:
        keep = rng.choice(len(empty), size=min(len(empty), max(1, len(samples))), replace=False)
        samples += [empty[n] for n in sorted(keep)]
    return samples


def split_cases(cases: list[Case], fraction: float) -> tuple[list[Case], list[Case]]:
    """Last cases (by name) held out for validation; none when there are fewer than three."""
    if len(cases) < 3 or fraction <= 0:
        return cases, []
    held = min(max(round(len(cases) * fraction), 1), len(cases) - 1)
    return cases[: len(cases) - held], cases[len(cases) - held :]


def lr_schedule(config: dict[str, Any], epochs: int | None) -> list[float]:
    """Learning rate per epoch: the recipe's stages, truncated (or extended) to `epochs`."""
    stages = config.get("lr_stages") or [[int(config.get("epochs", 1)), None]]
    rates = [lr for count, lr in stages for _ in range(int(count))]
    if epochs is not None:
        rates = (rates + [rates[-1]] * epochs)[:epochs]
    return rates


def stored_weights(network: torch.nn.Module, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict to ship; `weights_dtype: float16` halves the file (loading casts back)."""
    state = network.state_dict()
    if config.get("weights_dtype") == "float16":
        return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    return state


def train_segmentation(
    source: Path, data_dir: Path, out: Path | None = None, options: TrainOptions | None = None
) -> TrainResult:
    options = options or TrainOptions()
    source = Path(source)
    load_bundle(source)  # validate before copying anything
    root = prepare_output(source, Path(out) if out else None, options.finetune)
    bundle = load_bundle(root)
    if bundle.manifest.task != "segmentation":
        raise BundleError(f"{root} is a {bundle.manifest.task} bundle")
    config = bundle.train_config()
    settings = bundle.inference
    device = resolve_device(options.device)
    set_determinism(seed=options.seed)
    rng = np.random.default_rng(options.seed)

    cases = load_cases(data_dir, bundle)
    train_cases, val_cases = split_cases(cases, float(config.get("val_fraction", 0.2)))
    samples = training_samples(train_cases, bundle, settings, rng)
    parser = config_parser(config, "configs/train.json")
    augmentation = parser.get_parsed_content("augmentation") if "augmentation" in config else []
    transform = Compose(
        [*augmentation, EnsureTyped(keys=["image", "label"], dtype=torch.float32, track_meta=False)]
    )
    loader = DataLoader(
        Dataset(samples, transform),
        batch_size=int(config.get("batch_size", 2)),
        shuffle=True,
        num_workers=int(config.get("num_workers", 0)),
        collate_fn=list_data_collate,
        generator=torch.Generator().manual_seed(options.seed),
    )

    network = build_network(bundle).to(device)
    if options.finetune:
        network.load_state_dict(load_state(next(iter(bundle.verified_weights().values())), device))
    loss_fn = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")(network.parameters())
    rates = lr_schedule(config, options.epochs)
    amp = device.type == "cuda" and bool(config.get("amp", True))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    checkpoint_path = root / CHECKPOINT
    start, losses = 0, []
    if checkpoint_path.exists():
        if not options.resume:
            raise BundleError(
                f"{checkpoint_path} exists: pass resume to continue it, or delete it to start over"
            )
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start, losses = int(state["epoch"]) + 1, list(state["losses"])

    with progress_bars(options.progress) as progress:
        epochs_task = progress.add_task("epochs", total=len(rates), completed=start, status="")
        batches_task = progress.add_task("batches", total=len(loader), status="")
        for epoch in range(start, len(rates)):
            if rates[epoch] is not None:
                for group in optimizer.param_groups:
                    group["lr"] = rates[epoch]
            network.train()
            progress.reset(batches_task, total=len(loader))
            total, count = 0.0, 0
            for batch in loader:
                image = batch["image"].to(device)
                label = batch["label"].to(device)
                optimizer.zero_grad(set_to_none=True)
                with autocast(device):
                    loss = loss_fn(network(image), label)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                total, count = total + float(loss.detach()), count + 1
                progress.update(batches_task, advance=1, status=f"loss {total / count:.4f}")
            losses.append(total / max(count, 1))
            save_checkpoint(
                checkpoint_path,
                {
                    "epoch": epoch,
                    "network": network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "losses": losses,
                },
            )
            with (root / "train" / "log.jsonl").open("a") as log:
                log.write(json.dumps({"epoch": epoch, "loss": losses[-1]}) + "\n")
            progress.update(epochs_task, advance=1, status=f"loss {losses[-1]:.4f}")

    torch.save(stored_weights(network, config), root / WEIGHTS)
    manifest = record_weights(root, bundle.manifest, {WEIGHTS: "torch"})
    return _finish(
        root, manifest, data_dir, cases, train_cases, val_cases, rates, losses, config, options
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return str(device)


def _software() -> dict[str, str]:
    import monai

    return {"monai": monai.__version__, "torch": torch.__version__, "numpy": np.__version__}


def _finish(
    root, manifest, data_dir, cases, train_cases, val_cases, rates, losses, config, options
):
    """Write provenance and validation metrics into the manifest of the trained bundle."""
    from myonode.models.evaluate import evaluate_cases, validation_metrics

    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    device = resolve_device(options.device)
    provenance = Provenance(
        data=options.data_description or f"{len(cases)} cases from {Path(data_dir).name}/",
        cases=len(train_cases),
        epochs=len(rates),
        recipe=str(config.get("recipe", "")),
        trained_at=now,
        device=_device_name(device),
        software=_software(),
        command=options.command,
        final_loss=round(losses[-1], 6) if losses else None,
    )
    manifest = manifest.model_copy(
        update={"training": provenance, "intended_use": options.intended_use, "validation": None}
    )
    write_metadata(root, manifest)
    metrics: dict[str, float] = {}
    if val_cases:
        bundle = load_bundle(root)
        metrics = validation_metrics(evaluate_cases(bundle, val_cases, options.device))
        manifest = manifest.model_copy(
            update={
                "validation": Validation(
                    data=f"{len(val_cases)} held-out cases of the training data",
                    cases=len(val_cases),
                    metrics=metrics,
                    evaluated_at=now,
                )
            }
        )
        write_metadata(root, manifest)
    return TrainResult(load_bundle(root), len(rates), losses, metrics)


def train(
    source: Path, data_dir: Path, out: Path | None = None, options: TrainOptions | None = None
) -> TrainResult:
    """Train any bundle: segmentation here, regression (seed 004) in `cxr`."""
    if load_bundle(Path(source)).manifest.task == "regression":
        from myonode.models.cxr import train_cxr

        return train_cxr(Path(source), Path(data_dir), out, options)
    return train_segmentation(Path(source), Path(data_dir), out, options)
