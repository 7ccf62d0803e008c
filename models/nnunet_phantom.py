"""A small, real nnU-Net v2 model folder trained on generated phantoms (tests, demos).

No TotalSegmentator weights can be downloaded in CI, so the `nnunet` engine is tested on a
folder nnU-Net itself made: the phantom cases are written as an nnU-Net raw dataset, nnU-Net
fingerprints, plans and preprocesses them, and its trainer (nnU-Net's `nnUNetTrainerNoDA`: no
augmentation and, like TotalSegmentator's trainers, no mirroring; with Adam at a constant
3e-3: in a trial it reached Dice 0.95 on validation patches after 100 iterations, where
nnU-Net's SGD schedule still segmented nothing after 120) trains 200 iterations on the CPU,
from seed 1 (from seed 0 one of the four classes was still unlearnt after 200 iterations: a
network this small can start with a class it barely predicts).
The result is the layout nnU-Net and TotalSegmentator ship: ``DatasetNNN_Name/nnUNetTrainer…__
nnUNetPlans__3d_fullres/{plans.json, dataset.json, fold_0/checkpoint_final.pth}``. Classes are
named as TotalSegmentator names them, so the node maps them with the same table.

Run as ``python -m myonode.models.nnunet_phantom OUT`` (nnU-Net reads its folders from the
environment at import, so training runs in its own process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from myonode.core.volume import Geometry, Volume
from myonode.models.phantoms import _ellipse

DATASET_ID = 501
DATASET_NAME = f"Dataset{DATASET_ID}_MyoPhantom"
TRAINER = "nnUNetTrainerPhantom"
CONFIGURATION = "3d_fullres"
# nnU-Net label value -> TotalSegmentator class name (the phantom's psoas and erector spinae).
CLASS_NAMES = {
    1: "iliopsoas_left",
    2: "iliopsoas_right",
    3: "autochthon_left",
    4: "autochthon_right",
}
PHANTOM_SHAPE = (12, 48, 48)  # [k, j, i]
PHANTOM_SPACING = (3.0, 3.0, 3.0)  # (i, j, k) mm


def phantom_case(seed: int) -> tuple[Volume, np.ndarray]:
    """(CT volume in HU, labels [k, j, i] with `CLASS_NAMES` values): an axial abdomen with
    a vertebra, psoas beside it and the deep back muscles behind it, whose size, position
    and intensities vary with the seed. Small enough that a 3D network trains on two CPU
    cores; column i runs towards patient Left, as in `phantoms`."""
    rng = np.random.default_rng(seed)
    nk, nj, ni = PHANTOM_SHAPE
    j, i = np.mgrid[0:nj, 0:ni].astype(float)
    scale = rng.uniform(0.9, 1.1)
    cj, ci = nj / 2 + rng.uniform(-2, 2), ni / 2 + rng.uniform(-2, 2)
    muscle_hu, noise = rng.uniform(35, 60), rng.uniform(5, 12)
    hu = np.full(PHANTOM_SHAPE, -1000.0, dtype=np.float32)
    labels = np.zeros(PHANTOM_SHAPE, dtype=np.uint8)
    for k in range(nk):
        grow = scale * (1.0 + 0.15 * (nk - 1 - k) / (nk - 1))  # psoas widens caudally
        plane = np.where(
            _ellipse(j, i, cj, ci, 0.42 * nj * scale, 0.46 * ni * scale), -90.0, -1000.0
        )
        lab = np.zeros((nj, ni), dtype=np.uint8)
        for side, sign in (("left", 1.0), ("right", -1.0)):
            psoas = _ellipse(
                j, i, cj + 0.06 * nj, ci + sign * 0.2 * ni, 0.1 * nj * grow, 0.08 * ni * grow
            )
            back = _ellipse(
                j, i, cj + 0.27 * nj, ci + sign * 0.13 * ni, 0.1 * nj * scale, 0.1 * ni * scale
            )
            lab[psoas] = 1 if side == "left" else 2
            lab[back] = 3 if side == "left" else 4
        vertebra = _ellipse(j, i, cj + 0.1 * nj, ci, 0.09 * nj * scale, 0.08 * ni * scale)
        lab[vertebra] = 0
        plane[lab > 0] = muscle_hu
        plane[vertebra] = 350.0
        hu[k], labels[k] = plane, lab
    hu += (rng.normal(0, noise, size=PHANTOM_SHAPE) * (hu > -900)).astype(np.float32)
    nk_mm = np.array(PHANTOM_SPACING) * np.array([ni, nj, nk])
    geometry = Geometry(origin=-nk_mm / 2, directions=np.eye(3), spacing=np.array(PHANTOM_SPACING))
    return Volume(array=hu, geometry=geometry), labels


def canonical_nifti(array: np.ndarray, volume: Volume) -> nib.Nifti1Image:
    """An array on the volume's grid as a RAS-canonical NIfTI, as TotalSegmentator hands its
    images to nnU-Net."""
    image = nib.Nifti1Image(
        np.ascontiguousarray(array.transpose(2, 1, 0)), volume.geometry.ras_affine()
    )
    return nib.as_closest_canonical(image)


def write_raw_dataset(raw_dir: Path, cases: int, seed: int = 0) -> Path:
    """nnU-Net's raw layout (imagesTr/, labelsTr/, dataset.json) with `cases` phantoms."""
    folder = raw_dir / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for n in range(cases):
        volume, labels = phantom_case(seed + n)
        image = canonical_nifti(volume.array.astype(np.float32), volume)
        label = canonical_nifti(labels, volume)
        nib.save(image, folder / "imagesTr" / f"phantom_{n:03d}_0000.nii.gz")
        nib.save(label, folder / "labelsTr" / f"phantom_{n:03d}.nii.gz")
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{name: value for value, name in CLASS_NAMES.items()}},
        "numTraining": cases,
        "file_ending": ".nii.gz",
        "name": DATASET_NAME,
        "description": "myonode phantom (generated; knows nothing about real anatomy)",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def shrink(configuration: dict) -> None:
    """nnU-Net's planned PlainConvUNet cut to three stages of 8-32 features, so that a few
    hundred iterations fit a CI run on two CPU cores (editing plans.json before
    preprocessing is how nnU-Net expects plans to be changed)."""
    patch = configuration["patch_size"]
    kwargs = configuration["architecture"]["arch_kwargs"]
    kwargs.update(
        n_stages=3,
        features_per_stage=[8, 16, 32],
        kernel_sizes=[[3, 3, 3]] * 3,
        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        n_conv_per_stage=[2, 2, 2],
        n_conv_per_stage_decoder=[2, 2],
    )
    configuration["patch_size"] = [n - n % 4 for n in patch]


def train(work: Path, cases: int, epochs: int, iterations: int, seed: int = 0) -> Path:
    """Plan, preprocess and train in this process; `work` holds raw/, preprocessed/ and
    results/. Returns the trained model folder. Needs the nnU-Net environment variables set
    to those folders before nnunetv2 is first imported (see `train_in_subprocess`)."""
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    torch.manual_seed(seed)
    np.random.seed(seed)  # nnU-Net's data loader draws from numpy's global generator
    write_raw_dataset(work / "raw", cases, seed)
    extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=True)
    plan_experiments([DATASET_ID])
    preprocessed = work / "preprocessed" / DATASET_NAME
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    shrink(plans["configurations"][CONFIGURATION])
    (preprocessed / "nnUNetPlans.json").write_text(json.dumps(plans, indent=1))
    preprocess([DATASET_ID], configurations=(CONFIGURATION,), num_processes=(1,))
    dataset = json.loads((preprocessed / "dataset.json").read_text())
    plans["continue_training"] = False  # what nnU-Net's own entry point passes in
    os.environ["nnUNet_n_proc_DA"] = "0"  # batches in this process (planning needs >= 1)
    trainer = _trainer_class()(plans, CONFIGURATION, 0, dataset, torch.device("cpu"))
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = 2
    trainer.run_training()
    return Path(trainer.output_folder).parent


def _trainer_class() -> type:
    """nnU-Net's no-augmentation trainer with Adam at a constant learning rate."""
    import torch
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoDA import (
        nnUNetTrainerNoDA,
    )

    class nnUNetTrainerPhantom(nnUNetTrainerNoDA):
        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.network.parameters(), lr=3e-3)
            return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

    return nnUNetTrainerPhantom


def train_in_subprocess(
    work: Path, cases: int = 8, epochs: int = 4, iterations: int = 50, seed: int = 1
) -> Path:
    """`train` in a fresh interpreter with nnU-Net's folders pointed into `work`."""
    env = {
        **os.environ,
        "nnUNet_raw": str(work / "raw"),
        "nnUNet_preprocessed": str(work / "preprocessed"),
        "nnUNet_results": str(work / "results"),
        "nnUNet_n_proc_DA": "1",
        "nnUNet_compile": "false",
    }
    command = [sys.executable, "-m", "myonode.models.nnunet_phantom", str(work)]
    command += ["--cases", str(cases), "--epochs", str(epochs), "--iterations", str(iterations)]
    command += ["--seed", str(seed)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"nnU-Net phantom training failed:\n{completed.stderr[-4000:]}")
    return Path(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("work", type=Path)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if "nnUNet_results" not in os.environ:
        os.environ["nnUNet_raw"] = str(args.work / "raw")
        os.environ["nnUNet_preprocessed"] = str(args.work / "preprocessed")
        os.environ["nnUNet_results"] = str(args.work / "results")
    folder = train(args.work, args.cases, args.epochs, args.iterations, args.seed)
    print(folder)


if __name__ == "__main__":
    main()
