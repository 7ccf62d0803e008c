"""Resident nnU-Net engine vs a fresh load per study, as TotalSegmentator's API does it.

    .venv/bin/python benchmarks/nnunet_resident.py [--n 3] [--shape 512,512,300]
        [--spacing 0.78,0.78,1.5] [--patch 128] [--device cpu|cuda] [--step 0.5]

Writes an nnU-Net v2 folder of TotalSegmentator's size: nnU-Net's default 3d_fullres
PlainConvUNet for a 1.5 mm plan (6 stages, 32…320 features, 24 outputs as its muscles part,
random weights: timing only, the labels mean nothing), with a checkpoint that holds weights
and optimiser state as nnU-Net's do. Then runs N studies of one CT volume both ways:

* per-call: for every study a new `nnUNetPredictor`, the steps of nnU-Net's
  `initialize_from_trained_model_folder` (read the checkpoint, build the network) and the
  move to the device, then inference;
* resident: the node's `nnunet` engine created once, then `segment` per study.

For each job it prints the time outside inference (what the way spends on imports, building
the network, reading checkpoints and moving them to the device) and the inference time, then
`overhead ratio per-call/resident: R`, the mean overhead per job of each way over the N jobs
(the resident engine's one load spread over its N jobs, so R grows with N). `--patch` shrinks
the sliding-window patch (not the network's weights) so that CPU runs finish (64 at least:
the sixth stage must keep more than one voxel); on a GPU use the default 128. On CUDA it
also prints GPU time per study, studies/hour both ways and peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# TotalSegmentator's Dataset294 (muscles part) classes, in its order (24 outputs).
MUSCLE_PART = (
    "humerus_left humerus_right scapula_left scapula_right clavicula_left clavicula_right "
    "femur_left femur_right hip_left hip_right spinal_cord gluteus_maximus_left "
    "gluteus_maximus_right gluteus_medius_left gluteus_medius_right gluteus_minimus_left "
    "gluteus_minimus_right autochthon_left autochthon_right iliopsoas_left iliopsoas_right "
    "brain skull"
).split()
TRAINER, PLANS, CONFIGURATION = "nnUNetTrainerNoMirroring", "nnUNetPlans", "3d_fullres"


def default_plans(patch: int) -> dict:
    """nnU-Net's default 3d_fullres plan for 1.5 mm isotropic CT (as TotalSegmentator's)."""
    stages = 6
    return {
        "dataset_name": "Dataset294_TotalSegmentator_part4_muscles_1559subj",
        "plans_name": PLANS,
        "original_median_spacing_after_transp": [1.5, 1.5, 1.5],
        "original_median_shape_after_transp": [300, 260, 260],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            CONFIGURATION: {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [patch] * 3,
                "median_image_size_in_voxels": [300, 260, 260],
                "spacing": [1.5, 1.5, 1.5],
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {
                    "is_seg": False,
                    "order": 3,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_seg_kwargs": {
                    "is_seg": True,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "architecture": {
                    "network_class_name": (
                        "dynamic_network_architectures.architectures.unet.PlainConvUNet"
                    ),
                    "arch_kwargs": {
                        "n_stages": stages,
                        "features_per_stage": [32, 64, 128, 256, 320, 320],
                        "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[3, 3, 3]] * stages,
                        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1),
                        "n_conv_per_stage": [2] * stages,
                        "n_conv_per_stage_decoder": [2] * (stages - 1),
                        "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                        "dropout_op": None,
                        "dropout_op_kwargs": None,
                        "nonlin": "torch.nn.LeakyReLU",
                        "nonlin_kwargs": {"inplace": True},
                    },
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 3000.0,
                "mean": 100.0,
                "median": 60.0,
                "min": -1000.0,
                "percentile_00_5": -900.0,
                "percentile_99_5": 1500.0,
                "std": 300.0,
            }
        },
    }


def write_folder(root: Path, patch: int) -> tuple[Path, int, float]:
    """The model folder; returns (path, parameters, checkpoint MiB)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    folder = root / "Dataset294_TotalSegmentator_part4_muscles_1559subj"
    folder = folder / f"{TRAINER}__{PLANS}__{CONFIGURATION}"
    (folder / "fold_0").mkdir(parents=True)
    plans = default_plans(patch)
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{n: v for v, n in enumerate(MUSCLE_PART, start=1)}},
        "numTraining": 1559,
        "file_ending": ".nii.gz",
    }
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    arch = plans["configurations"][CONFIGURATION]["architecture"]
    network = get_network_from_plans(
        arch["network_class_name"],
        arch["arch_kwargs"],
        arch["_kw_requires_import"],
        1,
        len(MUSCLE_PART) + 1,
        allow_init=True,
        deep_supervision=True,
    )
    weights = network.state_dict()
    momentum = {n: torch.zeros_like(p) for n, p in network.named_parameters()}
    checkpoint = {
        "network_weights": weights,
        "optimizer_state": {"state": momentum, "param_groups": [{"lr": 1e-2, "momentum": 0.99}]},
        "init_args": {
            "plans": plans,
            "configuration": CONFIGURATION,
            "fold": 0,
            "dataset_json": dataset,
        },
        "trainer_name": TRAINER,
        "inference_allowed_mirroring_axes": None,
        "current_epoch": 1000,
    }
    path = folder / "fold_0" / "checkpoint_final.pth"
    torch.save(checkpoint, path)
    parameters = sum(p.numel() for p in network.parameters())
    return folder, parameters, path.stat().st_size / 2**20


def ct_volume(shape: tuple[int, int, int], spacing: tuple[float, float, float]):
    """A CT-like volume [k, j, i] (HU noise in a body ellipse) on an axial LPS grid."""
    from myonode.core.volume import Geometry, Volume

    ni, nj, nk = shape
    rng = np.random.default_rng(0)
    j, i = np.mgrid[0:nj, 0:ni]
    body = ((j - nj / 2) / (0.4 * nj)) ** 2 + ((i - ni / 2) / (0.45 * ni)) ** 2 <= 1
    array = np.where(body, 40.0, -1000.0).astype(np.float32)[None].repeat(nk, axis=0)
    array += rng.normal(0, 20, size=array.shape).astype(np.float32)
    geometry = Geometry(np.zeros(3), np.eye(3), np.array(spacing, dtype=float))
    return Volume(array=array, geometry=geometry)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def per_call_job(folder: Path, volume, device: torch.device, step: float) -> tuple[float, float]:
    """(outside inference, inference) seconds of one study the way TotalSegmentator runs it:
    the steps of nnU-Net's `initialize_from_trained_model_folder` (read the checkpoint with
    `torch.load`, build the network through the trainer class, load the weights), then the
    move to the device. The trainer class is imported directly rather than found by
    nnU-Net's scan of every trainer module (which also imports timm and torchvision, and
    fails where torchvision does not match a CPU-only torch), so per-call is if anything
    timed as cheaper than it is."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (  # noqa: E501
        nnUNetTrainerNoMirroring,
    )
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from myonode.infer.engines.nnunet import to_nnunet

    start = time.perf_counter()
    predictor = nnUNetPredictor(
        tile_step_size=step,
        use_mirroring=False,
        perform_everything_on_device=device.type == "cuda",
        device=device,
        allow_tqdm=False,
    )
    dataset = json.loads((folder / "dataset.json").read_text())
    plans = PlansManager(json.loads((folder / "plans.json").read_text()))
    checkpoint = torch.load(
        folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False
    )
    configuration = plans.get_configuration(checkpoint["init_args"]["configuration"])
    network = nnUNetTrainerNoMirroring.build_network_architecture(
        plans,
        configuration,
        1,
        plans.get_label_manager(dataset).num_segmentation_heads,
        enable_deep_supervision=False,
    )
    network.load_state_dict(checkpoint["network_weights"])
    predictor.manual_initialization(
        network.to(device),
        plans,
        configuration,
        [checkpoint["network_weights"]],
        dataset,
        checkpoint["trainer_name"],
        checkpoint["inference_allowed_mirroring_axes"],
    )
    sync(device)
    loaded = time.perf_counter()
    image, spacing, _ = to_nnunet(volume.array, volume)
    predictor.predict_single_npy_array(image[None], {"spacing": spacing})
    sync(device)
    return loaded - start, time.perf_counter() - loaded


def fresh_process_imports_s() -> float:
    """What a new process per study (TotalSegmentator's command line) pays in imports."""
    code = "import torch; from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3, help="studies per way")
    parser.add_argument("--shape", default="512,512,300", help="columns,rows,slices")
    parser.add_argument("--spacing", default="0.78,0.78,1.5", help="mm per column,row,slice")
    parser.add_argument("--patch", type=int, default=128, help="sliding-window patch edge")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--step", type=float, default=0.5, help="tile step (fraction of patch)")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    spacing = tuple(float(v) for v in args.spacing.split(","))
    device = torch.device(args.device)

    start = time.perf_counter()
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: F401

    from myonode.infer.engines import create as create_engine
    from myonode.infer.engines.nnunet import ResidentModel

    imports_s = time.perf_counter() - start
    volume = ct_volume(shape, spacing)
    with tempfile.TemporaryDirectory() as tmp:
        folder, parameters, mib = write_folder(Path(tmp), args.patch)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"device {name}; torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(
            f"network: nnU-Net 3d_fullres PlainConvUNet, 6 stages, {parameters / 1e6:.1f} M "
            f"parameters, checkpoint {mib:.0f} MiB; patch {args.patch}^3, tile step {args.step}"
        )
        print(f"volume {shape[0]}x{shape[1]}x{shape[2]} at {args.spacing} mm; N = {args.n}")
        print(f"imports in this process (paid once by both ways): {imports_s:.2f} s")

        per_call = []
        for _ in range(args.n):
            per_call.append(per_call_job(folder, volume, device, args.step))

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        engine = create_engine(f"nnunet:{folder}?step={args.step}&mirroring=off&device={device}")
        sync(device)
        load_s = time.perf_counter() - start
        model: ResidentModel = engine.parts[0].model
        resident = []
        for n in range(args.n):
            timed = _TimedPredict(model, device)
            start = time.perf_counter()
            engine.segment(volume)
            sync(device)
            total = time.perf_counter() - start
            outside = (load_s if n == 0 else 0.0) + total - timed.seconds
            resident.append((outside, timed.seconds))
            timed.undo()

        print(f"{'job':>4} {'way':>9} {'outside inference s':>20} {'inference s':>12}")
        for n in range(args.n):
            print(f"{n + 1:>4} {'per-call':>9} {per_call[n][0]:>20.2f} {per_call[n][1]:>12.2f}")
            print(f"{n + 1:>4} {'resident':>9} {resident[n][0]:>20.2f} {resident[n][1]:>12.2f}")
        per_call_overhead = sum(o for o, _ in per_call) / args.n
        resident_overhead = sum(o for o, _ in resident) / args.n
        print(
            f"mean outside inference per job: per-call {per_call_overhead:.2f} s, resident "
            f"{resident_overhead:.3f} s (its one load {load_s:.2f} s over {args.n} jobs)"
        )
        print(f"overhead ratio per-call/resident: {per_call_overhead / resident_overhead:.1f}")
        print(
            f"a fresh process per study (TotalSegmentator's command line) would add "
            f"{fresh_process_imports_s():.2f} s of imports per study"
        )
        per_call_job_s = sum(o + i for o, i in per_call) / args.n
        resident_job_s = sum(o + i for o, i in resident) / args.n
        print(
            f"studies/hour: per-call {3600 / per_call_job_s:.1f}, resident "
            f"{3600 / resident_job_s:.1f} (ratio {per_call_job_s / resident_job_s:.2f})"
        )
        if device.type == "cuda":
            mean_gpu = sum(i for _, i in resident) / args.n
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            print(f"GPU time per study (resident inference): {mean_gpu:.2f} s")
            print(f"peak GPU memory (resident engine): {peak:.2f} GiB")


class _TimedPredict:
    """Times the resident model's `predict` (nnU-Net's preprocessing, sliding window and
    resampling back: the inference) inside `segment`."""

    def __init__(self, model, device: torch.device) -> None:
        self.model, self.seconds = model, 0.0
        self._original = model.predict

        def predict(image, spacing):
            start = time.perf_counter()
            result = self._original(image, spacing)
            sync(device)
            self.seconds += time.perf_counter() - start
            return result

        model.predict = predict

    def undo(self) -> None:
        del self.model.predict


if __name__ == "__main__":
    main()
