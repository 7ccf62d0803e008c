"""Seed 004 (SARC-CXR, Ryu et al.): chest radiograph -> ALM, handgrip and chair-rise time as
Gaussians (mu, sigma) from deep ensembles, then a calibrated random forest -> sarcopenia
probability.

Step 1: per target, an ensemble of `GaussianRegressor`s trained on the Gaussian negative
log-likelihood; the ensemble's prediction is the mixture's mean and standard deviation
(Lakshminarayanan et al. 2017, which the paper follows). Step 2: a random forest on the three
(mu, sigma) pairs plus age, sex and BMI, calibrated with the sigmoid method.

Interface for pipelines (`CxrModel`, also what ``engines.create("bundle:PATH")`` returns for a
regression bundle)::

    model = CxrModel(load_bundle(bundle_path))    # once per worker
    volume = load_radiograph(dicom_path)          # routing.cxr: bone bright (MONOCHROME2)
    clinical = Clinical.from_facts(patient_facts(volume.datasets[0]))
    result = model.assess(volume.array[0], clinical)  # estimates, probability or None, notes
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from monai.data import Dataset as MonaiDataset
from monai.transforms import Compose, EnsureTyped
from monai.utils import set_determinism

from myonode.core.radiograph import load_radiograph
from myonode.core.types import Clinical, Estimate, RegressionResult
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
from myonode.models.preprocess import radiograph
from myonode.models.runtime import autocast, build_network, load_state, resolve_device

ENSEMBLES = "models/ensembles.pt"
FOREST = "models/sarcopenia_rf.pkl"
CHECKPOINT = Path("train/ensembles_checkpoint.pt")


def mixture(mus: np.ndarray, sigmas: np.ndarray) -> tuple[float, float]:
    """A uniform mixture of Gaussians as one: mean of mu; variance = mean(sigma² + mu²) − mu*²."""
    mu = float(np.mean(mus))
    variance = float(np.mean(sigmas**2 + mus**2) - mu**2)
    return mu, float(np.sqrt(max(variance, 0.0)))


def concordance(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (seed 004 reports it per target)."""
    predicted, reference = np.asarray(predicted, float), np.asarray(reference, float)
    covariance = float(np.mean((predicted - predicted.mean()) * (reference - reference.mean())))
    denominator = predicted.var() + reference.var() + (predicted.mean() - reference.mean()) ** 2
    return float(2 * covariance / denominator) if denominator > 0 else 0.0


class CxrModel:
    """A seed 004 bundle loaded once and kept resident (a `RegressionEngine`)."""

    def __init__(self, bundle: Bundle, device: str | None = None) -> None:
        manifest = bundle.manifest
        if manifest.task != "regression":
            raise BundleError(f"{bundle.root} is a {manifest.task} bundle")
        self.bundle = bundle
        self.spec = manifest.input
        self.targets = tuple(manifest.targets)
        self.device = resolve_device(device)
        weights = bundle.verified_weights()
        if ENSEMBLES not in weights:
            raise BundleError(f"{bundle.root}: manifest does not list {ENSEMBLES}")
        states = load_state(weights[ENSEMBLES], self.device)
        self.members: dict[str, list[torch.nn.Module]] = {}
        for target in self.targets:
            if not states.get(target):
                raise BundleError(f"{bundle.root}: no ensemble for target {target!r}")
            networks = []
            for state in states[target]:
                network = build_network(bundle)
                network.load_state_dict(state)
                networks.append(network.to(self.device).eval())
            self.members[target] = networks
        self.forest = None
        if FOREST in weights:
            # Unpickling runs code: only the bytes whose checksum matched the manifest above.
            self.forest = pickle.loads(weights[FOREST])
        self.algorithm = bundle.algorithm()

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(radiograph(image, self.spec))[None, None]

    def estimate(self, image: np.ndarray) -> dict[str, Estimate]:
        """(mu, sigma) per target in the target's unit, from the ensembles' mixture."""
        tensor = self.preprocess(image).to(self.device)
        estimates = {}
        with torch.inference_mode(), autocast(self.device):
            for target in self.targets:
                spec = self.bundle.manifest.targets[target]
                out = torch.stack([m(tensor)[0].float() for m in self.members[target]]).cpu()
                mu, sigma = mixture(out[:, 0].numpy(), out[:, 1].numpy())
                estimates[target] = Estimate(
                    mu=mu * spec.std + spec.mean, sigma=sigma * spec.std, unit=spec.unit
                )
        return estimates

    def features(self, estimates: dict[str, Estimate], clinical: Clinical) -> list[float] | None:
        extra = clinical.features()
        if extra is None:
            return None
        return [v for t in self.targets for v in (estimates[t].mu, estimates[t].sigma)] + extra

    def sarcopenia_probability(
        self, estimates: dict[str, Estimate], clinical: Clinical
    ) -> float | None:
        """Step 2's calibrated probability; None without a forest or without age/sex/BMI."""
        features = self.features(estimates, clinical)
        if self.forest is None or features is None:
            return None
        return float(self.forest.predict_proba(np.array([features]))[0, 1])

    def assess(self, image: np.ndarray, clinical: Clinical) -> RegressionResult:
        estimates = self.estimate(image)
        probability = self.sarcopenia_probability(estimates, clinical)
        notes = []
        if self.forest is None:
            notes.append("This bundle has no step-2 model: no sarcopenia probability.")
        elif probability is None:
            missing = ", ".join(clinical.missing())
            notes.append(f"No sarcopenia probability: {missing} unknown (step 2 needs them).")
        intended_use = self.bundle.manifest.intended_use
        if demo := self.bundle.demo_statement():
            notes.append(
                f"{demo}: its predictions are not estimates for a real patient and not a "
                "clinical score."
            )
        elif intended_use != "clinical":
            notes.append(f"Intended use: {intended_use}; not a clinical score.")
        return RegressionResult(estimates, probability, notes)


# --- training -------------------------------------------------------------------------------


@dataclass
class CxrCase:
    name: str
    image: np.ndarray
    targets: dict[str, float]
    clinical: Clinical
    sarcopenia: bool | None


def _read_image(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path).astype(np.float32)
    if path.suffix in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        return np.asarray(Image.open(path).convert("F"), dtype=np.float32)
    return load_radiograph(path).array[0]


def load_cxr_cases(data_dir: Path, targets: list[str]) -> list[CxrCase]:
    """`<data>/targets.csv`: image (path relative to data), one column per target, age, sex
    (M/F), bmi and optionally sarcopenia (0/1). Images: DICOM, .npy or PNG/JPEG."""
    table = Path(data_dir) / "targets.csv"
    if not table.is_file():
        raise BundleError(f"{table} is missing (a regression bundle trains from targets.csv)")
    cases = []
    with table.open(newline="") as handle:
        for row in csv.DictReader(handle):
            missing = [t for t in ("image", *targets, "age", "sex", "bmi") if not row.get(t)]
            if missing:
                raise BundleError(f"{table}: row {row.get('image')!r} lacks {missing}")
            cases.append(
                CxrCase(
                    name=row["image"],
                    image=_read_image(Path(data_dir) / row["image"]),
                    targets={t: float(row[t]) for t in targets},
                    clinical=Clinical(float(row["age"]), row["sex"], float(row["bmi"])),
                    sarcopenia=bool(int(row["sarcopenia"])) if row.get("sarcopenia") else None,
                )
            )
    return cases


def _fit_member(
    bundle: Bundle,
    images: torch.Tensor,
    values: torch.Tensor,
    val_images: torch.Tensor,
    val_values: torch.Tensor,
    config: dict[str, Any],
    transform: Compose,
    device: torch.device,
    seed: int,
    epochs: int,
    on_epoch: Callable[[float], None] = lambda _loss: None,
) -> tuple[dict[str, torch.Tensor], float]:
    """One ensemble member: Gaussian NLL, Adam + cosine annealing, early stopping."""
    torch.manual_seed(seed)
    network = build_network(bundle).to(device)
    optimizer = config_parser(config, "configs/train.json").get_parsed_content("optimizer")(
        network.parameters()
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    loss_fn = torch.nn.GaussianNLLLoss()
    batch = int(config.get("batch_size", 32))
    patience = int(config.get("patience", 15))
    loader = DataLoader(
        MonaiDataset(
            [{"image": x, "target": y} for x, y in zip(images, values, strict=True)], transform
        ),
        batch_size=batch,
        shuffle=True,
        num_workers=int(config.get("num_workers", 0)),
        generator=torch.Generator().manual_seed(seed),
    )
    best, best_loss, waited = None, float("inf"), 0
    amp = device.type == "cuda" and bool(config.get("amp", True))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    for _ in range(epochs):
        network.train()
        for item in loader:
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                out = network(item["image"].to(device))
            out = out.float()
            loss = loss_fn(out[:, 0], item["target"].to(device), out[:, 1] ** 2)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        scheduler.step()
        network.eval()
        with torch.inference_mode():
            out = network(val_images.to(device)).float()
            val_loss = float(loss_fn(out[:, 0], val_values.to(device), out[:, 1] ** 2))
        on_epoch(val_loss)
        if val_loss < best_loss:
            best_loss, waited = val_loss, 0
            best = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    return best, best_loss  # type: ignore[return-value]


def fit_sarcopenia_forest(
    features: np.ndarray, outcomes: np.ndarray, config: dict[str, Any], seed: int = 0
):
    """Step 2: random forest on (mu, sigma) x targets + age, sex, BMI, with sigmoid (Platt)
    calibration by cross-validation, as seed 004 calibrates its chosen model."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import RandomForestClassifier

    forest = CalibratedClassifierCV(
        RandomForestClassifier(
            n_estimators=int(config.get("n_estimators", 300)),
            min_samples_leaf=int(config.get("min_samples_leaf", 1)),
            random_state=seed,
        ),
        method="sigmoid",
        cv=int(config.get("calibration_cv", 3)),
    )
    return forest.fit(features, outcomes)


def train_cxr(
    source: Path, data_dir: Path, out: Path | None = None, options: TrainOptions | None = None
) -> TrainResult:
    """Train both steps of a seed 004 bundle; writes weights, provenance and validation.

    Each finished ensemble member is checkpointed; `options.resume` skips finished members.
    """
    from sklearn.metrics import brier_score_loss, roc_auc_score

    options = options or TrainOptions()
    load_bundle(source)
    root = prepare_output(Path(source), Path(out) if out else None, options.finetune)
    bundle = load_bundle(root)
    if bundle.manifest.task != "regression":
        raise BundleError(f"{root} is a {bundle.manifest.task} bundle")
    config = bundle.train_config()
    device = resolve_device(options.device)
    set_determinism(seed=options.seed)
    targets = list(bundle.manifest.targets)
    cases = load_cxr_cases(data_dir, targets)
    rng = np.random.default_rng(options.seed)
    order = rng.permutation(len(cases))
    held = max(1, round(len(cases) * float(config.get("val_fraction", 0.2))))
    val_cases = [cases[n] for n in order[:held]]
    train_cases = [cases[n] for n in order[held:]]

    spec = bundle.manifest.input
    prepared = {id(c): torch.from_numpy(radiograph(c.image, spec))[None] for c in cases}
    images = torch.stack([prepared[id(c)] for c in train_cases])
    val_images = torch.stack([prepared[id(c)] for c in val_cases])
    parser = config_parser(config, "configs/train.json")
    augmentation = parser.get_parsed_content("augmentation") if "augmentation" in config else []
    transform = Compose([*augmentation, EnsureTyped(keys=["image"], track_meta=False)])
    epochs = options.epochs or int(config.get("epochs", 100))
    members = int(bundle.inference.get("members", 5))

    checkpoint = root / CHECKPOINT
    ensembles: dict[str, list[dict[str, torch.Tensor]]] = {t: [] for t in targets}
    best_losses: list[float] = []
    if checkpoint.exists():
        if not options.resume:
            raise BundleError(
                f"{checkpoint} exists: pass resume to continue it, or delete it to start over"
            )
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        ensembles, best_losses = state["ensembles"], list(state["losses"])
    target_specs = {}
    with progress_bars(options.progress) as progress:
        done = sum(len(v) for v in ensembles.values())
        members_task = progress.add_task(
            "ensemble members", total=len(targets) * members, completed=done, status=""
        )
        epochs_task = progress.add_task("epochs", total=epochs, status="")
        for target in targets:
            raw = np.array([c.targets[target] for c in train_cases])
            mean, std = float(raw.mean()), float(raw.std()) or 1.0
            target_specs[target] = bundle.manifest.targets[target].model_copy(
                update={"mean": mean, "std": std}
            )
            values = torch.tensor((raw - mean) / std, dtype=torch.float32)
            val_raw = np.array([c.targets[target] for c in val_cases])
            val_values = torch.tensor((val_raw - mean) / std, dtype=torch.float32)
            for member in range(len(ensembles[target]), members):
                progress.reset(epochs_task, total=epochs, description=f"{target} #{member + 1}")

                def on_epoch(loss: float) -> None:
                    progress.update(epochs_task, advance=1, status=f"val NLL {loss:.3f}")

                state, loss = _fit_member(
                    bundle, images, values, val_images, val_values, config, transform, device,
                    seed=options.seed + 1000 * targets.index(target) + member, epochs=epochs,
                    on_epoch=on_epoch,
                )  # fmt: skip
                ensembles[target].append(state)
                best_losses.append(loss)
                save_checkpoint(checkpoint, {"ensembles": ensembles, "losses": best_losses})
                progress.update(members_task, advance=1)
    torch.save(ensembles, root / ENSEMBLES)
    manifest = bundle.manifest.model_copy(update={"targets": target_specs})
    manifest = record_weights(root, manifest, {ENSEMBLES: "torch"})
    model = CxrModel(load_bundle(root), options.device)

    estimates: dict[int, dict[str, Estimate]] = {}  # by case: each radiograph inferred once

    def estimate(case: CxrCase) -> dict[str, Estimate]:
        if id(case) not in estimates:
            estimates[id(case)] = model.estimate(case.image)
        return estimates[id(case)]

    def features_of(subset: list[CxrCase]) -> np.ndarray:
        return np.array([model.features(estimate(c), c.clinical) for c in subset])

    metrics: dict[str, float] = {}
    val_estimates = [estimate(c) for c in val_cases]
    for target in targets:
        predicted = np.array([e[target].mu for e in val_estimates])
        reference = np.array([c.targets[target] for c in val_cases])
        metrics[f"ccc_{target}"] = round(concordance(predicted, reference), 4)
        metrics[f"mae_{target}"] = round(float(np.abs(predicted - reference).mean()), 4)
    labelled = [c for c in train_cases if c.sarcopenia is not None]
    files = {ENSEMBLES: "torch"}
    cv = int(config.get("forest", {}).get("calibration_cv", 3))
    positives = sum(bool(c.sarcopenia) for c in labelled)
    if min(positives, len(labelled) - positives) >= cv:
        forest = fit_sarcopenia_forest(
            features_of(labelled),
            np.array([c.sarcopenia for c in labelled], dtype=int),
            config.get("forest", {}),
            options.seed,
        )
        with (root / FOREST).open("wb") as handle:
            pickle.dump(forest, handle)
        files[FOREST] = "pickle"
        val_labelled = [c for c in val_cases if c.sarcopenia is not None]
        outcomes = np.array([c.sarcopenia for c in val_labelled], dtype=int)
        if len(set(outcomes.tolist())) == 2:
            probabilities = forest.predict_proba(features_of(val_labelled))[:, 1]
            metrics["sarcopenia_auroc"] = round(float(roc_auc_score(outcomes, probabilities)), 4)
            metrics["sarcopenia_brier"] = round(float(brier_score_loss(outcomes, probabilities)), 4)
    manifest = record_weights(root, manifest, files)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    manifest = manifest.model_copy(
        update={
            "intended_use": options.intended_use,
            "training": Provenance(
                data=options.data_description or f"{len(cases)} radiographs from {data_dir}",
                cases=len(train_cases),
                epochs=epochs,
                recipe=str(config.get("recipe", "")),
                trained_at=now,
                device=str(device),
                software={"torch": torch.__version__, "sklearn": _sklearn_version()},
                command=options.command,
                final_loss=round(float(np.mean(best_losses)), 6),
            ),
            "validation": Validation(
                data=f"{len(val_cases)} held-out radiographs of the training data",
                cases=len(val_cases),
                metrics=metrics,
                evaluated_at=now,
            ),
        }
    )
    write_metadata(root, manifest)
    (root / "train").mkdir(exist_ok=True)
    (root / "train" / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return TrainResult(load_bundle(root), epochs, best_losses, metrics)


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__
