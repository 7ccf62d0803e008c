"""Bundle templates for the seed architectures: paper size (to train on a site's data, on a
GPU) or demo size (trained on phantoms by `train_demo_bundles`, exercised in CI).

A template is a bundle without weights: manifest, inference and training configs following
the paper, and a README. `myonode bundle init TEMPLATE OUT` writes one; `myonode train OUT
--data DIR` gives it weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from myonode.dicom.anatomy import SEED000_GROUPS, SEED002_STRUCTURES, STRUCTURES
from myonode.models.bundle import Architecture, InputSpec, Manifest, TargetSpec, label_spec
from myonode.models.phantoms import THIGH_KEYS

SEED000 = "Vu et al., 3D abdominal muscle IDPs from CT in a medical biobank (seed 000)"
SEED001 = "Fitzpatrick, Basty et al., iliopsoas volume in the UK Biobank (seed 001)"
SEED002 = "Kim et al., Dixon MRI pelvic-thigh muscle distribution, UK Biobank (seed 002)"
SEED004 = "Ryu et al., SARC-CXR: sarcopenia from chest radiographs (seed 004)"


@dataclass(frozen=True)
class Template:
    manifest: Manifest
    inference: dict[str, Any]
    train: dict[str, Any]
    readme: str


def _labels(keys) -> dict:
    return {n: label_spec(STRUCTURES[key]) for n, key in enumerate(keys, start=1)}


def _sliding(roi: list[int], batch: int, overlap: float) -> dict[str, Any]:
    return {
        "_target_": "SlidingWindowInferer",
        "roi_size": roi,
        "sw_batch_size": batch,
        "overlap": overlap,
        "mode": "gaussian",
    }


def _readme(manifest: Manifest, recipe: str, limits: list[str]) -> str:
    use = {
        "demo": "**Demo only.** Trained on generated phantoms to exercise the runtime; its "
        "outputs say so and are not measurements of real anatomy.",
        "research": "Research use; not validated for clinical decisions.",
        "clinical": "Clinical use as validated by the site (see the validation section).",
    }[manifest.intended_use]
    labels = "\n".join(
        f"| {n} | `{spec.key}` | {spec.property_type.scheme} {spec.property_type.value} "
        f"{spec.property_type.meaning}"
        + (f" ({spec.laterality.meaning})" if spec.laterality else "")
        + " |"
        for n, spec in sorted(manifest.labels.items())
    )
    outputs = (
        "| label | structure key | code |\n|---|---|---|\n" + labels
        if manifest.labels
        else "\n".join(f"- `{k}`: {t.description} ({t.unit})" for k, t in manifest.targets.items())
    )
    return (
        f"# {manifest.name} {manifest.version}\n\n{manifest.description}\n\n"
        f"## Intended use\n\n{use}\n\n"
        f"## Architecture\n\n{manifest.architecture.name}. Reference: "
        f"{manifest.architecture.reference}. {manifest.architecture.notes}\n\n"
        f"## Input\n\n`{manifest.input.model_dump_json()}`\n\n## Outputs\n\n{outputs}\n\n"
        f"## Training recipe\n\n{recipe}\n\n"
        "Training provenance and validation metrics are in `configs/metadata.json` "
        "(`myonode.training`, `myonode.validation`), with the sha256 of `configs/inference.json`, "
        "`configs/train.json` (`myonode.configs`) and of every weights file (`myonode.weights`); "
        "loading refuses a file that differs.\n\n"
        "## Limitations\n\n" + "\n".join(f"- {line}" for line in limits) + "\n"
    )


def _seed_manifest(name: str, demo: bool, **fields: Any) -> Manifest:
    """A seed template's manifest: version 0.1.0; the demo variant is named and used as such."""
    return Manifest(
        name=name + ("-demo" if demo else ""),
        version="0.1.0",
        intended_use="demo" if demo else "research",
        **fields,
    )


def ct_muscle_seed000(demo: bool = False) -> Template:
    """Seed 000: 2D residual U-Net, 12 abdominal muscle groups, window 400/40."""
    channels = [8, 16, 32, 64] if demo else [16, 32, 64, 128]
    manifest = _seed_manifest(
        "ct-abdominal-muscles-seed000",
        demo,
        description="12 abdominal muscle groups on axial CT slices (seed 000 architecture).",
        task="segmentation",
        modality="CT",
        input=InputSpec(channels=["image"], window=(-160.0, 240.0), normalize="window"),
        labels=_labels(s.key for s in SEED000_GROUPS),
        architecture=Architecture(
            name="MONAI UNet, 2D, 4 encoding / 3 decoding levels, 4 residual units, PReLU, "
            f"batch norm, channels {channels}",
            reference=SEED000,
            notes="The paper gives no layer widths; MONAI's tutorial widths are used. "
            "Post-processing: argmax, then SimpleITK binary hole filling per label and slice.",
        ),
    )
    recipe = (
        "Adam 1e-4 for 100 epochs, then 100 at 1e-5 and 100 at 1e-6 (`lr_stages`); zoom "
        "±20 % and rotation ±20° applied with p = 0.8; window 400/40. The paper does not name "
        "its loss: Dice + cross-entropy is used."
    )
    inference = {
        "network_def": {
            "_target_": "myonode.models.networks.ct_residual_unet",
            "out_channels": 13,
            "channels": channels,
            "num_res_units": 4,
        },
        "inferer": _sliding([-1, -1], 8, 0.0),  # whole axial slices, 8 per forward pass
        "divisible": 8,  # three stride-2 levels
        "spatial_dims": 2,
        "slice_batch": 8,
        "activation": "softmax",
        "fill_holes": True,
    }
    train = {
        "recipe": recipe,
        "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
        "optimizer": {"_target_": "torch.optim.Adam", "_mode_": "callable", "lr": 1e-4},
        "lr_stages": [[100, 1e-4], [100, 1e-5], [100, 1e-6]],
        "batch_size": 16,
        "val_fraction": 0.2,
        "amp": True,
        "num_workers": 0 if demo else 4,
        "augmentation": [
            {
                "_target_": "ResizeWithPadOrCropd",
                "keys": ["image", "label"],
                "spatial_size": [96, 96] if demo else [512, 512],
            },
            {
                "_target_": "RandAffined",
                "keys": ["image", "label"],
                "prob": 0.8,
                "rotate_range": [math.radians(20)],
                "scale_range": [0.2, 0.2],
                "mode": ["bilinear", "nearest"],
                "padding_mode": "zeros",
            },
        ],
    }
    limits = [
        "Series selection (axial, soft kernel, >= 2 mm, unenhanced preferred) and the region "
        "from the lung base to L5 are the pipeline's job, not the bundle's.",
        "Seed 000 test Dice: ES 0.916, GM 0.904, RA 0.855, psoas 0.852, LA 0.849, QL 0.770.",
    ]
    if demo:
        limits.insert(0, "Trained on `models/phantoms.py` CT phantoms only.")
        train["lr_stages"] = [[50, 1e-3]]
        train["recipe"] = recipe = f"{recipe} Demo run: 50 epochs at 1e-3, 96x96 slices."
    return Template(manifest, inference, train, _readme(manifest, recipe, limits))


def mr_iliopsoas_seed001(demo: bool = False) -> Template:
    """Seed 001: residual V-Net-like 3D network, Dixon water, one side at a time."""
    filters = [4, 8, 8, 16, 16] if demo else [8, 16, 32, 64, 128]
    kernel = 3 if demo else 5
    roi = [32, 48, 32] if demo else [192, 96, 96]
    manifest = _seed_manifest(
        "mr-iliopsoas-seed001",
        demo,
        description="Left and right iliopsoas on Dixon water MR (seed 001 architecture).",
        task="segmentation",
        modality="MR",
        input=InputSpec(
            channels=["image"],
            spacing_mm=None if demo else (2.232, 2.232, 3.0),
            normalize="zscore",
        ),
        labels=_labels(["iliopsoas_right", "iliopsoas_left"]),
        architecture=Architecture(
            name=f"residual V-Net-like 3D network, {kernel}^3 convolutions, SELU, "
            f"filters {filters}",
            reference=SEED001,
            notes="One binary (sigmoid) network for one side: the right side as is, the "
            "left side mirrored (the paper's L/R mirroring), split at the body midline "
            "because the node has no hip-landmark detector. Each side is z-scored after the "
            "split, as the paper normalises after cropping.",
        ),
    )
    recipe = (
        "Dice loss, Adam 1e-4, batch 3, 100 epochs; per side, translations up to 24 voxels "
        "out-of-plane and 6 in-plane, scaling ±50 % out-of-plane and ±25 % in-plane (7 of 8 "
        f"samples augmented, as the paper adds 7 transforms per original); patches {roi} "
        "(slice, row, column) centred on the muscle."
    )
    inference = {
        "network_def": {
            "_target_": "myonode.models.networks.IliopsoasNet",
            "filters": filters,
            "kernel_size": kernel,
        },
        "inferer": _sliding(roi, 2, 0.25),
        "spatial_dims": 3,
        "activation": "sigmoid",
        "threshold": 0.5,
        "mirror_lr": {"right": 1, "left": 2},
    }
    train = {
        "recipe": recipe,
        "loss": {"_target_": "DiceLoss", "sigmoid": True},
        "optimizer": {"_target_": "torch.optim.Adam", "_mode_": "callable", "lr": 1e-4},
        "lr_stages": [[100, 1e-4]],
        "batch_size": 3,
        "val_fraction": 0.2,
        "amp": True,
        "num_workers": 0 if demo else 4,
        "augmentation": [
            {
                "_target_": "RandAffined",
                "keys": ["image", "label"],
                "prob": 7 / 8,
                "translate_range": [24, 6, 6],
                "scale_range": [0.5, 0.25, 0.25],
                "mode": ["bilinear", "nearest"],
                "padding_mode": "zeros",
            },
            {"_target_": "SpatialPadd", "keys": ["image", "label"], "spatial_size": roi},
            {
                "_target_": "RandCropByPosNegLabeld",
                "keys": ["image", "label"],
                "label_key": "label",
                "spatial_size": roi,
                "pos": 1,
                "neg": 0,
                "num_samples": 1,
            },
        ],
    }
    limits = [
        "Assumes the body's left-right centre is its midline (no hip landmarks).",
        "Seed 001: DSC 0.912 ± 0.018; volume bias −4.3 mL (limits +15.2 / −23.4 mL).",
    ]
    if demo:
        limits.insert(0, "Trained on `models/phantoms.py` MR pelvis phantoms only.")
        # The phantoms are 32 slices deep: the paper's shifts would push the muscle out.
        train["augmentation"][0].update(translate_range=[4, 2, 2], scale_range=[0.2, 0.1, 0.1])
        train["lr_stages"] = [[80, 1e-3]]
        train["recipe"] = recipe = (
            f"{recipe} Demo run: 80 epochs at 1e-3; shifts up to 4 (out-of-plane) and 2 "
            "voxels, scaling ±20 % and ±10 %, for 32-slice phantoms."
        )
    return Template(manifest, inference, train, _readme(manifest, recipe, limits))


def mr_thigh_seed002(demo: bool = False) -> Template:
    """Seed 002: UNETR, 27 pelvic-thigh structures, window [80, 450], 1.5x1.5x2 mm."""
    roi = [32, 32, 32] if demo else [96, 96, 96]
    # The demo predicts only the 12 structures its phantom draws (a smaller output head).
    keys = THIGH_KEYS if demo else [s.key for s in SEED002_STRUCTURES]
    size = (
        {"feature_size": 8, "hidden_size": 32, "mlp_dim": 64, "num_heads": 2}
        if demo
        else {"feature_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_heads": 12}
    )
    manifest = _seed_manifest(
        "mr-thigh-seed002",
        demo,
        description=f"{len(keys)} pelvic-thigh muscles and bones on Dixon MR (seed 002 net).",
        task="segmentation",
        modality="MR",
        input=InputSpec(
            channels=["image"],
            spacing_mm=(4.5, 4.5, 6.0) if demo else (1.5, 1.5, 2.0),
            window=(80.0, 450.0),
            normalize="window",
        ),
        labels=_labels(keys),
        architecture=Architecture(
            name=f"MONAI UNETR, 12 transformer layers, {size}, instance norm, residual "
            f"decoder blocks, patches {roi}",
            reference=SEED002,
            notes="The paper writes 29 output channels for 27 structures + background; 28 "
            "are used. It does not say which Dixon channel it windows to [80, 450]; "
            "`image` is the series the pipeline routes (e.g. water or in-phase).",
        ),
    )
    recipe = (
        "Dice + cross-entropy, AdamW 2e-5 (weight decay 1e-5), batch 2, AMP; 96^3 patches, "
        "4 per volume, positive:negative 1:1 (RandCropByPosNegLabel); the paper trained up to "
        "12,000 epochs with early stopping."
    )
    inference = {
        "network_def": {
            "_target_": "myonode.models.networks.thigh_unetr",
            "out_channels": len(keys) + 1,
            "img_size": roi,
            **size,
        },
        "inferer": _sliding(roi, 4, 0.5),
        "spatial_dims": 3,
        "activation": "softmax",
    }
    train = {
        "recipe": recipe,
        "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
        "optimizer": {
            "_target_": "torch.optim.AdamW",
            "_mode_": "callable",
            "lr": 2e-5,
            "weight_decay": 1e-5,
        },
        "lr_stages": [[12000, 2e-5]],
        "batch_size": 2,
        "val_fraction": 0.2,
        "amp": True,
        "num_workers": 0 if demo else 4,
        "augmentation": [
            {"_target_": "SpatialPadd", "keys": ["image", "label"], "spatial_size": roi},
            {
                "_target_": "RandCropByPosNegLabeld",
                "keys": ["image", "label"],
                "label_key": "label",
                "spatial_size": roi,
                "pos": 1,
                "neg": 1,
                "num_samples": 4,
            },
        ],
    }
    limits = [
        "Multi-station fusion (seed 002) happens before the bundle: it needs one volume.",
        "Seed 002: mean Dice 0.896, IoU 0.814 (UK Biobank).",
    ]
    if demo:
        limits.insert(
            0,
            "Trained on `models/phantoms.py` thigh phantoms, which draw 12 of the 27 "
            "structures: the demo bundle has those 12 labels only. Coarse 4.5x4.5x6 mm grid.",
        )
        train["lr_stages"] = [[150, 3e-3]]
        train["weights_dtype"] = "float16"  # keeps the committed file under 2 MB
        train["recipe"] = recipe = (
            f"{recipe} Demo run: 150 epochs at 3e-3, 32^3 patches, float16 weights file."
        )
    return Template(manifest, inference, train, _readme(manifest, recipe, limits))


def cxr_sarcopenia_seed004(demo: bool = False) -> Template:
    """Seed 004: deep ensembles of Gaussian regressors + calibrated random forest."""
    size = [64, 64] if demo else [224, 224]
    backbone = (
        {"layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 16, 32]}
        if demo
        else {"layers": [2, 2, 2, 2], "block_inplanes": [64, 128, 256, 512]}
    )
    members = 3 if demo else 5
    manifest = _seed_manifest(
        "cxr-sarcopenia-seed004",
        demo,
        description="ALM, handgrip strength and chair-rise time (mu, sigma) from a PA chest "
        "radiograph, and a calibrated sarcopenia probability (seed 004 two-step model).",
        task="regression",
        modality="CR/DX",
        input=InputSpec(channels=["image"], normalize="none", image_size=tuple(size), clahe=True),
        targets={
            "alm": TargetSpec(unit="kg", description="appendicular lean mass"),
            "hgs": TargetSpec(unit="kg", description="handgrip strength"),
            "crt": TargetSpec(unit="s", description="five-times chair-rise time"),
        },
        architecture=Architecture(
            name=f"deep ensembles ({members} members per target) of Gaussian regressors on a "
            f"MONAI ResNet backbone {backbone} with global average pooling; random forest "
            "with sigmoid calibration on (mu, sigma) x 3 + age, sex, BMI",
            reference=SEED004,
            notes="The paper's backbone is an ImageNet-pretrained VGG16; no torchvision or "
            "downloaded weights are used here, so the MONAI ResNet is trained from scratch. "
            "The paper does not give the ensemble size; 5 follows Lakshminarayanan et al.",
        ),
    )
    recipe = (
        "Step 1: per target, each ensemble member minimises the Gaussian negative "
        "log-likelihood with Adam and cosine annealing, up to 100 epochs with early stopping "
        "(patience 15), batch 32; augmentation: shift, rotation, horizontal flip, zoom, "
        "brightness. Step 2: random forest on the ensembles' mu and sigma plus age, sex and "
        "BMI, calibrated with the sigmoid method (3-fold)."
    )
    inference = {
        "network_def": {
            "_target_": "myonode.models.networks.GaussianRegressor",
            "backbone": {
                "_target_": "monai.networks.nets.ResNet",
                "block": "basic",
                "spatial_dims": 2,
                "n_input_channels": 1,
                "num_classes": 2,
                **backbone,
            },
        },
        "members": members,
        "clinical_features": ["age", "sex", "bmi"],
    }
    train = {
        "recipe": recipe,
        "optimizer": {"_target_": "torch.optim.Adam", "_mode_": "callable", "lr": 1e-3},
        "epochs": 30 if demo else 100,
        "patience": 15,
        "batch_size": 32,
        "val_fraction": 0.2,
        "amp": True,
        "num_workers": 0 if demo else 4,
        "augmentation": [
            {
                "_target_": "RandAffined",
                "keys": ["image"],
                "prob": 0.8,
                "rotate_range": [math.radians(10)],
                "translate_range": [0.05 * size[0], 0.05 * size[1]],
                "scale_range": [0.1, 0.1],
                "padding_mode": "zeros",
            },
            {"_target_": "RandFlipd", "keys": ["image"], "prob": 0.5, "spatial_axis": 1},
            {"_target_": "RandScaleIntensityd", "keys": ["image"], "prob": 0.5, "factors": 0.1},
        ],
        "forest": {"n_estimators": 300, "min_samples_leaf": 3, "calibration_cv": 3},
    }
    limits = [
        "No public weights or data exist for seed 004; without a site-trained bundle the node "
        "emits no clinical score.",
        "Seed 004 results: ALM concordance 0.80/0.76, sarcopenia AUROC 0.813/0.780 "
        "(internal/external).",
        "The random forest is fitted on the ensembles' predictions for the training images "
        "(in-sample), which makes step 2 see less uncertainty than it will meet.",
    ]
    if demo:
        limits.insert(
            0,
            "Trained on `models/phantoms.py` radiographs whose 'physiology' is invented; the "
            "numbers mean nothing about people.",
        )
        train["recipe"] = recipe = f"{recipe} Demo run: 30 epochs, 64x64 images, 3 members."
    return Template(manifest, inference, train, _readme(manifest, recipe, limits))


TEMPLATES: dict[str, Callable[[bool], Template]] = {
    "ct-abdominal-muscles-seed000": ct_muscle_seed000,
    "mr-iliopsoas-seed001": mr_iliopsoas_seed001,
    "mr-thigh-seed002": mr_thigh_seed002,
    "cxr-sarcopenia-seed004": cxr_sarcopenia_seed004,
}
