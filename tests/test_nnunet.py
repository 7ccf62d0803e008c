"""nnU-Net v2 model folders as resident engines, and TotalSegmentator's weights through them.

No weights are downloaded: the session trains a small real nnU-Net folder on generated
phantoms with nnU-Net's own planner, preprocessor and trainer (`models/nnunet_phantom.py`),
and every test below loads that folder (or a copy laid out as TotalSegmentator's) the way a
hospital's would be loaded. No GPU is used; the CUDA-only logic is tested as pure functions.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from test_outputs import dciodvfy_errors

from myonode.app.demo.synthetic import write_ct_series
from myonode.app.process import process_folder
from myonode.core.types import EngineError
from myonode.core.volume import Geometry, Volume
from myonode.infer.engines import create as create_engine
from myonode.infer.engines.nnunet import (
    CHECKPOINT,
    MAPPING_FILE,
    Options,
    checkpoint_loads,
    combined_checksum,
    describe_folder,
    from_nnunet,
    is_out_of_memory,
    run_with_fallback,
    to_nnunet,
)
from myonode.infer.engines.totalsegmentator import task_folders
from myonode.models.nnunet_phantom import CLASS_NAMES, phantom_case, train_in_subprocess
from myonode.pipelines import PipelineUnavailable
from myonode.route.profiles import builtin_pipelines, builtin_profiles_dir
from myonode.worker.runner import Runner

from conftest import make_settings

# Held-out phantoms: training used seeds 1..8.
TEST_SEEDS = (100, 101, 102)
MUSCLES_DATASET = "Dataset294_TotalSegmentator_part4_muscles_1559subj"
ORGANS_DATASET = "Dataset291_TotalSegmentator_part1_organs_1559subj"


@pytest.fixture(scope="session")
def trained_folder(tmp_path_factory) -> Path:
    """A real nnU-Net v2 model folder, trained once per test session (200 iterations)."""
    work = tmp_path_factory.mktemp("nnunet")
    return train_in_subprocess(work, cases=8, epochs=4, iterations=50)


@pytest.fixture
def folder(trained_folder, tmp_path) -> Path:
    """A private copy of the trained folder, marked as a demo model, that a test may break."""
    copy = shutil.copytree(trained_folder.parent, tmp_path / trained_folder.parent.name)
    model = copy / trained_folder.name
    (model / MAPPING_FILE).write_text(json.dumps({"intended_use": "demo"}))
    return model


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def assert_segments_phantoms(engine) -> None:
    """Dice >= 0.9 per muscle on held-out phantoms, each label on the right side."""
    by_key = {s.key: label for label, s in engine.structures.items()}
    for seed in TEST_SEEDS:
        volume, truth = phantom_case(seed)
        result = engine.segment(volume)
        assert result.labels.shape == volume.shape
        for value, name in CLASS_NAMES.items():
            key = {"autochthon": "deep_back_muscles"}.get(name.rsplit("_", 1)[0], "iliopsoas")
            key = f"{key}_{name.rsplit('_', 1)[1]}"
            predicted = result.labels == by_key[key]
            assert dice(predicted, truth == value) >= 0.9, (seed, name)
            # Column i runs to patient Left: the left muscle lies at larger i.
            columns = np.argwhere(predicted)[:, 2].mean()
            assert (columns > volume.shape[2] / 2) == name.endswith("_left")


# --- folders read without torch ---------------------------------------------------------------


def test_describe_folder_names_classes_and_checksum_without_torch(trained_folder):
    code = (
        "import sys, json\n"
        "from myonode.infer.engines.nnunet import describe_folder\n"
        f"d = describe_folder({str(trained_folder)!r})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'nnunet': 'nnunetv2' in sys.modules,"
        " 'structures': d.structures, 'modality': d.modality, 'folds': d.folds,"
        " 'checksum': d.checksum, 'digests': d.file_digests}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["torch"] is False and result["nnunet"] is False
    assert result["modality"] == "CT" and result["folds"] == ["0"]
    assert set(result["structures"].values()) == {
        "iliopsoas_left",
        "iliopsoas_right",
        "deep_back_muscles_left",
        "deep_back_muscles_right",
    }
    assert f"fold_0/{CHECKPOINT}" in result["digests"]
    assert result["checksum"] == combined_checksum(result["digests"])


def test_routing_and_cli_do_not_import_nnunet():
    code = (
        "import sys\n"
        "import myonode.app.cli, myonode.route, myonode.assemble.study\n"
        "from myonode.infer.engines import _load_builtin_engines\n"
        "_load_builtin_engines()\n"
        "print('nnunetv2' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (lambda f: (f / "dataset.json").unlink(), "no dataset.json"),
        (lambda f: shutil.rmtree(f / "fold_0"), "no trained fold"),
        (
            lambda f: _edit_json(f / "dataset.json", lambda d: d["labels"].update(x=[1, 2])),
            "region-based",
        ),
        (
            lambda f: (f / MAPPING_FILE).write_text(json.dumps({"classes": {"spleen": "liver"}})),
            "class 'spleen' is not in",
        ),
        (
            lambda f: (f / MAPPING_FILE).write_text(
                json.dumps({"classes": {"iliopsoas_left": "no_such_muscle"}})
            ),
            "unknown structure 'no_such_muscle'",
        ),
        (
            lambda f: _edit_json(
                f / "plans.json",
                lambda p: p["configurations"]["3d_fullres"].update(previous_stage="3d_lowres"),
            ),
            "cascade stage",
        ),
        (
            lambda f: _edit_json(f / "plans.json", lambda p: p.update(plans_name="otherPlans")),
            "the folder says 'nnUNetPlans'",
        ),
        (
            lambda f: _edit_json(
                f / "plans.json",
                lambda p: p["configurations"]["3d_fullres"]["architecture"].update(
                    network_class_name="os.system"
                ),
            ),
            "only dynamic_network_architectures networks",
        ),
    ],
)
def test_broken_folders_are_refused_with_the_reason(folder, breakage, reason):
    breakage(folder)
    with pytest.raises(EngineError, match=reason):
        describe_folder(folder)
    with pytest.raises(EngineError, match=reason):
        create_engine(f"nnunet:{folder}")


def test_checkpoint_that_does_not_fit_its_plans_is_refused(folder):
    def wider(plans):
        kwargs = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
        kwargs["features_per_stage"] = [16, 32, 64]

    _edit_json(folder / "plans.json", wider)
    with pytest.raises(EngineError, match=r"another architecture|does not fit the network"):
        create_engine(f"nnunet:{folder}")


def test_checkpoint_is_read_as_tensors_only(folder):
    """A checkpoint holding an object that would run code when unpickled is refused."""
    checkpoint = torch.load(folder / "fold_0" / CHECKPOINT, weights_only=False)
    checkpoint["payload"] = shutil.copytree  # any importable callable: not tensor data
    torch.save(checkpoint, folder / "fold_0" / CHECKPOINT)
    with pytest.raises(EngineError, match="cannot read checkpoint"):
        create_engine(f"nnunet:{folder}")


def test_folder_without_node_structures_is_refused(folder):
    _edit_json(folder / "dataset.json", lambda d: d.update(labels=_organs()))
    with pytest.raises(EngineError, match="none of its classes is a structure the node measures"):
        create_engine(f"nnunet:{folder}")


def _organs() -> dict[str, int]:
    return {"background": 0, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 4}


# --- the resident engine ------------------------------------------------------------------------


def test_engine_loads_once_and_segments_held_out_phantoms(folder):
    engine = create_engine(f"nnunet:{folder}?step=0.5&mirroring=off&device=cpu")
    assert checkpoint_loads[str(folder)] == 1
    assert_segments_phantoms(engine)  # three jobs
    assert checkpoint_loads[str(folder)] == 1
    assert engine.algorithm.intended_use == "demo"
    assert engine.algorithm.version == f"sha256:{describe_folder(folder).checksum[:16]}"
    assert engine.algorithm.parameters["tile_step"] == "0.5"


def test_engine_labels_land_on_the_source_voxels_of_a_flipped_grid(folder):
    """The same phantom stored with rows and slices reversed (another acquisition order)
    gets the same labels, reversed: orientation is undone exactly."""
    engine = create_engine(f"nnunet:{folder}")
    volume, _ = phantom_case(TEST_SEEDS[0])
    g = volume.geometry
    flip = np.diag([1.0, -1.0, -1.0])
    nk, nj, _ = volume.shape
    origin = g.origin + g.directions @ (g.spacing * np.array([0, nj - 1, nk - 1]))
    flipped = Volume(
        array=np.ascontiguousarray(volume.array[::-1, ::-1, :]),
        geometry=Geometry(origin=origin, directions=g.directions @ flip, spacing=g.spacing),
    )
    straight = engine.segment(volume).labels
    reversed_ = engine.segment(flipped).labels
    assert np.array_equal(reversed_[::-1, ::-1, :], straight)


def test_pipeline_writes_valid_seg_and_sr_with_a_resident_nnunet_engine(folder, tmp_path):
    pipelines = {"ct_muscle": replace(builtin_pipelines()["ct_muscle"], engine=f"nnunet:{folder}")}
    runner = Runner(pipelines=pipelines)
    for n, seed in enumerate(TEST_SEEDS[:2]):
        volume, _ = phantom_case(seed)
        paths = write_ct_series(volume.array, volume.geometry, tmp_path / f"ct{n}", seed=f"nn{n}")
        out = runner.run("ct_muscle", paths, tmp_path / f"out{n}")
        seg = next(p.path for p in out.files if p.path.name == "seg.dcm")
        sr = next(p.path for p in out.files if p.path.name == "sr.dcm")
        assert dciodvfy_errors(seg) == [] and dciodvfy_errors(sr) == []
        segments = {str(s.SegmentLabel) for s in pydicom.dcmread(seg).SegmentSequence}
        assert len(segments) == 4
    assert runner.engine_loads == 1 and checkpoint_loads[str(folder)] == 1


def test_process_routes_a_study_to_the_nnunet_engine(folder, tmp_path):
    """`myonode process` with a site profile that names the folder: routed, measured, SEG
    written. The phantom is stored at 3.2 mm pixels (the profile wants a 150 mm field of
    view); nnU-Net resamples it to its 3 mm plan and back."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    text = (builtin_profiles_dir() / "ct_abdominal_muscle.yaml").read_text()
    text = text.replace("engine: classical-ct", f"engine: nnunet:{folder}")
    (profiles / "ct_abdominal_muscle.yaml").write_text(text)
    volume, _ = phantom_case(TEST_SEEDS[1])
    g = volume.geometry
    geometry = Geometry(g.origin, g.directions, np.array([3.2, 3.2, 3.0]))
    write_ct_series(volume.array, geometry, tmp_path / "study", seed="nn-process")
    settings = make_settings(tmp_path, **{"routing.profiles_dir": str(profiles)})
    report, _index = process_folder(tmp_path / "study", tmp_path / "out", settings)
    assert (report.jobs_done, report.jobs_failed) == (1, 0)
    seg = next((tmp_path / "out" / "results").rglob("seg.dcm"))
    assert len(pydicom.dcmread(seg).SegmentSequence) == 4


def test_engine_for_another_modality_makes_the_pipeline_unavailable(folder):
    pipelines = {"mr_muscle": replace(builtin_pipelines()["mr_muscle"], engine=f"nnunet:{folder}")}
    with pytest.raises(PipelineUnavailable, match="segments CT images; pipeline mr_muscle"):
        Runner(pipelines=pipelines).engine("mr_muscle")


# --- TotalSegmentator folders -------------------------------------------------------------------


@pytest.fixture
def totalseg_home(trained_folder, tmp_path, monkeypatch) -> Path:
    """$TOTALSEG_HOME_DIR laid out as TotalSegmentator installs `total`: the phantom model as
    its muscles dataset, and an organs dataset (no muscle) beside it; 292, 293, 295 absent."""
    results = tmp_path / "totalseg" / "nnunet" / "results"
    for dataset in (MUSCLES_DATASET, ORGANS_DATASET):
        shutil.copytree(trained_folder, results / dataset / trained_folder.name)
    organs = results / ORGANS_DATASET / trained_folder.name / "dataset.json"
    _edit_json(organs, lambda d: d.update(labels=_organs()))
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "totalseg"))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    return results


def test_totalsegmentator_task_runs_only_its_muscle_folder_resident(totalseg_home):
    folders = task_folders("total")
    assert [p.parent.name for p in folders.needed] == [MUSCLES_DATASET]
    assert [p.parent.name for p in folders.skipped] == [ORGANS_DATASET]
    assert folders.missing == [292, 293, 295]
    engine = create_engine("totalsegmentator:total")
    name = folders.needed[0].name
    muscles, organs = (str(totalseg_home / d / name) for d in (MUSCLES_DATASET, ORGANS_DATASET))
    assert checkpoint_loads[muscles] == 1 and checkpoint_loads[organs] == 0
    assert engine.algorithm.name == "TotalSegmentator-total"
    assert engine.algorithm.parameters["mirroring"] == "off"
    assert_segments_phantoms(engine)
    assert checkpoint_loads[muscles] == 1
    notes = engine.segment(phantom_case(TEST_SEEDS[0])[0]).notes
    assert any(ORGANS_DATASET in note and "not run" in note for note in notes)


def test_totalsegmentator_without_its_muscle_dataset_is_unavailable(totalseg_home):
    shutil.rmtree(totalseg_home / MUSCLES_DATASET)
    with pytest.raises(EngineError, match="unavailable: weights for task total"):
        create_engine("totalsegmentator:total")


def test_models_command_lists_installed_folders_and_checksums(totalseg_home, folder):
    out = subprocess.run(
        [sys.executable, "-m", "myonode.app.cli", "models", str(folder.parent), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    listing = json.loads(out.stdout)
    by_path = {Path(m["path"]).parent.name: m for m in listing["models"]}
    assert by_path[MUSCLES_DATASET]["engine"] == "totalsegmentator:total"
    assert "iliopsoas_left" in by_path[MUSCLES_DATASET]["structures"]
    assert by_path[ORGANS_DATASET]["structures"] == []
    assert by_path[folder.parent.name]["engine"] == "nnunet"
    assert by_path[folder.parent.name]["sha256"] == describe_folder(folder).checksum


# --- pure parts: options, orientation, CUDA fallback ----------------------------------------


def test_options_parse_and_refuse_unknown_keys():
    options = Options.parse("step=0.8&mirroring=off&device=cpu&folds=0,1")
    assert options == Options(tile_step=0.8, mirroring=False, device="cpu", folds=("0", "1"))
    for bad in ("step=0", "mirroring=maybe", "device=tpu", "speed=fast"):
        with pytest.raises(EngineError):
            Options.parse(bad)


def test_orientation_round_trip_on_a_permuted_flipped_grid():
    """A sagittal-like grid (array axes not in R, A, S order, some reversed) goes to
    nnU-Net's canonical order with its spacing permuted alike, and labels come back exactly."""
    rng = np.random.default_rng(0)
    directions = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    geometry = Geometry(np.zeros(3), directions, np.array([0.7, 0.9, 4.0]))
    array = rng.normal(size=(5, 6, 7)).astype(np.float32)
    volume = Volume(array=array, geometry=geometry)
    canonical, spacing, orientation = to_nnunet(array, volume)
    # i (0.7 mm) runs to Posterior -> y; j (0.9 mm) to Inferior -> z; k (4 mm) to Right -> x.
    assert spacing == [0.9, 0.7, 4.0]  # nnU-Net's [z, y, x]
    assert canonical.shape == (6, 7, 5)
    # The voxel nearest patient Right, Anterior, Superior of the source is canonical [-1,-1,-1]:
    # largest k (Right), smallest i (Anterior), smallest j (Superior).
    assert canonical[-1, -1, -1] == array[-1, 0, 0]
    labels = (canonical > 0).astype(np.uint16)
    assert np.array_equal(from_nnunet(labels, orientation), (array > 0).astype(np.uint16))


def test_out_of_memory_on_cuda_reruns_the_job_on_cpu_and_other_errors_propagate():
    tried = []

    def attempt(device: str) -> str:
        tried.append(device)
        if device == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"labels from {device}"

    result, notes = run_with_fallback(attempt, ["cuda", "cpu"])
    assert result == "labels from cpu" and tried == ["cuda", "cpu"]
    assert "Out of memory on cuda" in notes[0]

    def broken(device: str) -> str:
        raise ValueError("not memory")

    with pytest.raises(ValueError, match="not memory"):
        run_with_fallback(broken, ["cuda", "cpu"])
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_with_fallback(attempt, ["cuda"])  # nowhere left to go: the job fails cleanly
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
