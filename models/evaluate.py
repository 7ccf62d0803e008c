"""Evaluate a segmentation bundle on labelled cases: per-label Dice, volume error, and a
Bland–Altman plot of volumes (the agreement analysis seeds 001 and 004 report).

Predictions go through the same resident `SegmentationModel` the node uses, so what is
evaluated is what runs.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from myonode.core.agreement import Agreement, agreement
from myonode.models.bundle import Bundle
from myonode.models.data import Case
from myonode.models.runtime import SegmentationModel


@dataclass(frozen=True)
class CaseResult:
    case: str
    structure: str
    agreement: Agreement


@dataclass(frozen=True)
class LabelSummary:
    structure: str
    cases: int
    dice_mean: float
    dice_sd: float
    volume_error_cm3_mean: float
    volume_error_percent_mean: float | None
    limits_of_agreement_cm3: tuple[float, float]


def evaluate_cases(
    bundle: Bundle, cases: list[Case], device: str | None = None, model=None
) -> list[CaseResult]:
    """Every bundle structure present in the reference or the prediction, per case."""
    model = model or SegmentationModel(bundle, device)
    results = []
    for case in cases:
        predicted = model.predict(case.volume).labels
        voxel = case.volume.geometry.voxel_volume_mm3
        for label, spec in sorted(bundle.manifest.labels.items()):
            reference = case.labels == label
            mine = predicted == label
            if not reference.any() and not mine.any():
                continue
            results.append(CaseResult(case.name, spec.key, agreement(mine, reference, voxel)))
    return results


def summarise(results: list[CaseResult]) -> list[LabelSummary]:
    summaries = []
    for key in dict.fromkeys(r.structure for r in results):
        rows = [r.agreement for r in results if r.structure == key]
        dice = np.array([a.dice for a in rows])
        errors = np.array([a.volume_error_cm3 for a in rows])
        percents = [a.volume_error_percent for a in rows if a.volume_error_percent is not None]
        sd = float(errors.std(ddof=1)) if len(errors) > 1 else 0.0
        bias = float(errors.mean())
        summaries.append(
            LabelSummary(
                structure=key,
                cases=len(rows),
                dice_mean=float(dice.mean()),
                dice_sd=float(dice.std(ddof=1)) if len(dice) > 1 else 0.0,
                volume_error_cm3_mean=bias,
                volume_error_percent_mean=float(np.mean(percents)) if percents else None,
                limits_of_agreement_cm3=(bias - 1.96 * sd, bias + 1.96 * sd),
            )
        )
    return summaries


def bland_altman_png(
    pairs: dict[str, list[tuple[float, float]]], path: Path, unit: str | None, title: str
) -> None:
    """One Bland–Altman panel per quantity: mean vs difference (predicted − reference), bias
    and 95 % limits of agreement (bias ± 1.96 SD)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, values in pairs.items() if values]
    columns = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names, strict=False):
        predicted, reference = np.array(pairs[name]).T
        mean, diff = (predicted + reference) / 2, predicted - reference
        bias = float(diff.mean())
        sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
        ax.scatter(mean, diff, s=14)
        ax.axhline(bias, color="k", lw=1, label=f"bias {bias:.3g}")
        for limit in (bias - 1.96 * sd, bias + 1.96 * sd):
            ax.axhline(limit, color="k", lw=0.8, ls="--")
        ax.set_title(name, fontsize=9)
        suffix = f" ({unit})" if unit else ""
        ax.set_xlabel(f"mean of predicted and reference{suffix}", fontsize=8)
        ax.set_ylabel(f"predicted − reference{suffix}", fontsize=8)
        ax.legend(fontsize=7, loc="best")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(bundle: Bundle, results: list[CaseResult], out_dir: Path) -> dict:
    """evaluation.json, evaluation.csv (per case and label) and bland_altman.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = summarise(results)
    with (out_dir / "evaluation.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["case", "structure", "dice", "predicted_cm3", "reference_cm3", "volume_error_cm3"]
        )
        for r in results:
            a = r.agreement
            values = (a.dice, a.predicted_cm3, a.reference_cm3, a.volume_error_cm3)
            writer.writerow([r.case, r.structure, *(f"{v:.4f}" for v in values)])
    pairs: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        pairs.setdefault(r.structure, []).append(
            (r.agreement.predicted_cm3, r.agreement.reference_cm3)
        )
    manifest = bundle.manifest
    bland_altman_png(
        pairs,
        out_dir / "bland_altman.png",
        "cm³",
        f"{manifest.name} {manifest.version} (intended use: {manifest.intended_use})",
    )
    report = {
        "bundle": manifest.name,
        "version": manifest.version,
        "intended_use": manifest.intended_use,
        "cases": len({r.case for r in results}),
        "labels": [asdict(s) for s in summaries],
        "dice_mean": float(np.mean([s.dice_mean for s in summaries])) if summaries else None,
    }
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def validation_metrics(results: list[CaseResult]) -> dict[str, float]:
    """Flat metrics for the manifest: mean Dice overall and per structure."""
    summaries = summarise(results)
    metrics = {f"dice_{s.structure}": round(s.dice_mean, 4) for s in summaries}
    if summaries:
        metrics["dice_mean"] = round(float(np.mean([s.dice_mean for s in summaries])), 4)
    return metrics


def evaluate_regression(bundle: Bundle, data_dir: Path, out_dir: Path, device=None) -> dict:
    """Seed 004 bundles: concordance, MAE and Bland–Altman per target; AUROC and Brier score
    of the sarcopenia probability where `targets.csv` has a sarcopenia column."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    from myonode.models.cxr import CxrModel, concordance, load_cxr_cases

    model = CxrModel(bundle, device)
    cases = load_cxr_cases(data_dir, list(model.targets))
    estimates = [model.estimate(c.image) for c in cases]
    report: dict = {
        "bundle": bundle.manifest.name,
        "version": bundle.manifest.version,
        "intended_use": bundle.manifest.intended_use,
        "cases": len(cases),
        "targets": {},
    }
    pairs = {}
    for target in model.targets:
        predicted = np.array([e[target].mu for e in estimates])
        reference = np.array([c.targets[target] for c in cases])
        sigma = np.array([e[target].sigma for e in estimates])
        diff = predicted - reference
        report["targets"][target] = {
            "unit": bundle.manifest.targets[target].unit,
            "ccc": concordance(predicted, reference),
            "mae": float(np.abs(diff).mean()),
            "bias": float(diff.mean()),
            "sigma_mean": float(sigma.mean()),
        }
        pairs[f"{target} ({bundle.manifest.targets[target].unit})"] = list(
            zip(predicted.tolist(), reference.tolist(), strict=True)
        )
    labelled = [(c, e) for c, e in zip(cases, estimates, strict=True) if c.sarcopenia is not None]
    if model.forest is not None and labelled:
        outcomes = np.array([c.sarcopenia for c, _ in labelled], dtype=int)
        probabilities = np.array([model.sarcopenia_probability(e, c.clinical) for c, e in labelled])
        report["sarcopenia"] = {"brier": float(brier_score_loss(outcomes, probabilities))}
        if len(set(outcomes.tolist())) == 2:
            report["sarcopenia"]["auroc"] = float(roc_auc_score(outcomes, probabilities))
    manifest = bundle.manifest
    bland_altman_png(
        pairs,
        out_dir / "bland_altman.png",
        None,
        f"{manifest.name} {manifest.version} (intended use: {manifest.intended_use})",
    )
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def evaluate_bundle(bundle: Bundle, data_dir: Path, out_dir: Path, device=None) -> dict:
    """Evaluate any bundle on a data folder; writes the report files under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if bundle.manifest.task == "regression":
        return evaluate_regression(bundle, data_dir, out_dir, device)
    from myonode.models.data import load_cases

    results = evaluate_cases(bundle, load_cases(data_dir, bundle), device)
    return write_report(bundle, results, out_dir)
