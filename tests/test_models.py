"""Model runtime: bundles, seed architectures, resident inference, geometry, TotalSegmentator
mapping and the committed demo bundles. Training tests are in test_model_training.py."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from myonode.app.demo.synthetic import write_ct_series
from myonode.core.types import EngineError
from myonode.core.volume import Geometry, Volume, load_nifti, load_series, save_nifti
from myonode.infer.engines import create as create_engine
from myonode.infer.engines.totalsegmentator import map_output, missing_requirements
from myonode.models import BUNDLES_DIR
from myonode.models.bundle import BundleError, load_bundle
from myonode.models.networks import (
    GaussianRegressor,
    IliopsoasNet,
    ct_residual_unet,
    thigh_unetr,
)
from myonode.models.phantoms import ct_abdomen, mr_iliopsoas, mr_thighs
from myonode.models.preprocess import orientation_of
from myonode.models.runtime import SegmentationModel

DEMO_SEGMENTATION = {
    "ct-abdominal-muscles-seed000-demo": ct_abdomen,
    "mr-iliopsoas-seed001-demo": mr_iliopsoas,
    "mr-thigh-seed002-demo": mr_thighs,
}
DEMO_BUNDLES = [*DEMO_SEGMENTATION, "cxr-sarcopenia-seed004-demo"]


# --- architectures ------------------------------------------------------------------------


def test_ct_residual_unet_paper_size_forward():
    net = ct_residual_unet().eval()  # 13 classes, 4 residual units, paper layout
    with torch.no_grad():
        out = net(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 13, 64, 64)
    assert sum(isinstance(m, torch.nn.PReLU) for m in net.modules()) > 0


def test_iliopsoas_net_paper_size_forward():
    net = IliopsoasNet().eval()  # filters (8, 16, 32, 64, 128), 5x5x5 kernels, SELU
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 32, 48))
    assert out.shape == (1, 1, 32, 32, 48)
    assert any(isinstance(m, torch.nn.SELU) for m in net.modules())


def test_thigh_unetr_paper_width_forward_on_small_patch():
    net = thigh_unetr(img_size=(32, 32, 32)).eval()  # hidden 768, 12 heads, 12 layers
    assert len(net.vit.blocks) == 12
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 32, 32))
    assert out.shape == (1, 28, 32, 32, 32)


def test_gaussian_regressor_gives_mu_and_positive_sigma():
    from monai.networks.nets import ResNet

    backbone = ResNet("basic", [2, 2, 2, 2], [64, 128, 256, 512], 2, 1, num_classes=2)
    out = GaussianRegressor(backbone).eval()(torch.randn(3, 1, 64, 64))
    assert out.shape == (3, 2)
    assert torch.all(out[:, 1] > 0)


# --- geometry -------------------------------------------------------------------------------


def test_dicom_lps_array_nifti_ras_round_trip(tmp_path):
    """A series whose rows run to patient Right and slices to Inferior survives DICOM ->
    Volume -> NIfTI -> Volume unchanged, and the NIfTI holds the RAS affine."""
    case = ct_abdomen(3, shape=(6, 40, 48))
    directions = np.array([[-1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]])
    geometry = Geometry(np.array([30.0, -20.0, 100.0]), directions, np.array([0.9, 1.1, 2.5]))
    paths = write_ct_series(case.volume.array, geometry, tmp_path / "dicom", seed="roundtrip")
    from_dicom = load_series(paths)
    assert np.allclose(from_dicom.geometry.affine, geometry.affine, atol=1e-4)
    assert np.array_equal(from_dicom.array, np.rint(case.volume.array).clip(-1024, 3071))

    save_nifti(from_dicom.array, from_dicom.geometry, tmp_path / "volume.nii.gz")
    stored = nib.load(tmp_path / "volume.nii.gz")
    assert np.allclose(stored.affine, from_dicom.geometry.ras_affine(), atol=1e-4)
    assert np.array_equal(np.asarray(stored.dataobj).transpose(2, 1, 0), from_dicom.array)
    back = load_nifti(tmp_path / "volume.nii.gz")
    assert np.array_equal(back.array, from_dicom.array)
    assert np.allclose(back.geometry.affine, from_dicom.geometry.affine, atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_canonical_orientation_is_exact_and_points_s_p_l(seed):
    rng = np.random.default_rng(seed)
    permutation = rng.permutation(3)
    directions = np.eye(3)[:, permutation] * rng.choice([-1.0, 1.0], size=3)
    geometry = Geometry(rng.normal(size=3) * 50, directions, np.array([0.7, 1.3, 2.9]))
    shape = (5, 6, 7)
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape[::-1]), indexing="ij"), -1)
    lps = geometry.index_to_lps(ijk.reshape(-1, 3)).reshape(*shape[::-1], 3)
    lps = lps.transpose(2, 1, 0, 3)  # to array order [k, j, i, xyz]
    orientation = orientation_of(geometry)
    canonical = orientation.to_canonical(np.moveaxis(lps, -1, 0))  # [xyz, k', j', i']
    assert np.all(np.diff(canonical[2], axis=0) > 0)  # k' runs to Superior (+z)
    assert np.all(np.diff(canonical[1], axis=1) > 0)  # j' runs to Posterior (+y)
    assert np.all(np.diff(canonical[0], axis=2) > 0)  # i' runs to Left (+x)
    assert np.array_equal(orientation.from_canonical(canonical), np.moveaxis(lps, -1, 0))
    spacing = orientation.spacing(geometry)
    assert spacing == tuple(float(s) for s in np.abs(directions) @ geometry.spacing)  # x, y, z


# --- bundles ----------------------------------------------------------------------------------


@pytest.fixture
def demo_copy(tmp_path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(BUNDLES_DIR / "ct-abdominal-muscles-seed000-demo", target)
    return target


def test_checksum_mismatch_is_refused(demo_copy):
    weights = demo_copy / "models" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch"):
        SegmentationModel(load_bundle(demo_copy))
    with pytest.raises(EngineError, match="checksum mismatch"):
        create_engine(f"bundle:{demo_copy}")


def test_missing_weights_and_foreign_codes_are_refused(demo_copy):
    import json

    (demo_copy / "models" / "model.pt").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(demo_copy).verified_weights()
    metadata = json.loads((demo_copy / "configs" / "metadata.json").read_text())
    metadata["myonode"]["labels"]["1"]["property_type"]["value"] = "64038003"
    (demo_copy / "configs" / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match="differ from the node's"):
        load_bundle(demo_copy)


@pytest.mark.parametrize("name", DEMO_BUNDLES)
def test_committed_demo_bundles_verify_and_are_small(name):
    bundle = load_bundle(BUNDLES_DIR / name)
    assert bundle.manifest.intended_use == "demo"
    assert bundle.manifest.training is not None
    assert "generated" in bundle.manifest.training.data
    assert set(bundle.manifest.configs) == {"configs/inference.json", "configs/train.json"}
    for data in bundle.verified_weights().values():
        assert len(data) < 2 * 1024 * 1024
    assert "Demo only" in bundle.readme()
    assert "myonode.configs" in bundle.readme()


@pytest.mark.parametrize("name", DEMO_BUNDLES)
def test_bundle_verify_reports_configs_and_weights(name, capsys):
    from myonode.app.cli import main

    assert main(["bundle", "verify", str(BUNDLES_DIR / name)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "configs/inference.json, configs/train.json match their sha256" in out
    assert "weights file(s) match their sha256" in out


def _inject(config_path: Path, marker: Path) -> None:
    """The reviewer's attack: a `$` expression in the inferer that creates `marker`."""
    import json

    config = json.loads(config_path.read_text())
    config["inferer"]["sw_batch_size"] = (
        f"$__import__('pathlib').Path({str(marker)!r}).write_text('ran') and 8"
    )
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def _rehash(bundle: Path) -> None:
    """What an attacker who can also edit the manifest does: make the checksum match."""
    import hashlib
    import json

    metadata_path = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    for rel in metadata["myonode"]["configs"]:
        digest = hashlib.sha256((bundle / rel).read_bytes()).hexdigest()
        metadata["myonode"]["configs"][rel] = digest
    metadata_path.write_text(json.dumps(metadata, indent=2))


def test_altered_inference_config_is_refused_before_it_is_parsed(demo_copy, tmp_path, capsys):
    from myonode.app.cli import main

    marker = tmp_path / "expression-ran"
    _inject(demo_copy / "configs" / "inference.json", marker)
    weights = demo_copy / "models" / "model.pt"  # corrupted too, as in the report
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match=r"checksum mismatch for .*inference\.json"):
        load_bundle(demo_copy)
    with pytest.raises(EngineError, match=r"checksum mismatch for .*inference\.json"):
        create_engine(f"bundle:{demo_copy}")
    assert main(["bundle", "verify", str(demo_copy)]) == 1
    assert "inference.json" in capsys.readouterr().err
    assert not marker.exists()


def test_config_missing_from_the_manifest_is_refused(demo_copy):
    import json

    metadata_path = demo_copy / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    del metadata["myonode"]["configs"]["configs/train.json"]
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match=r"train\.json has no sha256 in the manifest"):
        load_bundle(demo_copy)


@pytest.mark.parametrize(
    "network_def, refused",
    [
        ({"_target_": "os.system", "command": "touch MARKER"}, "outside the allow-list"),
        ({"_target_": "builtins.exec", "source": "open('MARKER', 'w')"}, "outside the allow"),
        ({"_target_": "torch.nn.functional.torch.load", "f": "MARKER"}, "defined in torch.ser"),
        ({"_target_": "eval", "source": "open('MARKER', 'w')"}, "not a MONAI component"),
        ({"_target_": "LoadImaged", "keys": ["MARKER"]}, "outside the allow-list"),
        ({"_target_": "monai.networks.utils.save_state", "src": {}, "path": "MARKER"}, "class"),
        ({"_target_": "torch.nn.Identity", "_mode_": "debug"}, "_mode_ 'debug' refused"),
        ({"_target_": "torch.nn.Identity", "x": "%MARKER.json#a"}, "% macros"),
    ],
)
def test_config_outside_the_allow_list_is_refused_even_with_matching_checksum(
    demo_copy, network_def, refused, monkeypatch, tmp_path
):
    import json

    from myonode.models.bundle import record_configs

    monkeypatch.chdir(tmp_path)
    path = demo_copy / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config["network_def"] = network_def
    path.write_text(json.dumps(config))
    _rehash(demo_copy)
    with pytest.raises(BundleError, match=refused):
        load_bundle(demo_copy)
    with pytest.raises(BundleError, match=refused):
        record_configs(demo_copy)  # the node will not vouch for it either
    assert not (tmp_path / "MARKER").exists()


def test_expression_is_refused_even_with_matching_checksum(demo_copy, tmp_path):
    marker = tmp_path / "expression-ran"
    _inject(demo_copy / "configs" / "inference.json", marker)
    _rehash(demo_copy)
    with pytest.raises(BundleError, match=r"\$ expressions"):
        SegmentationModel(load_bundle(demo_copy))
    with pytest.raises(EngineError, match=r"\$ expressions"):
        create_engine(f"bundle:{demo_copy}")
    assert not marker.exists()


def test_write_bundle_refuses_a_config_outside_the_allow_list(tmp_path):
    from myonode.models.bundle import write_bundle
    from myonode.models.templates import ct_muscle_seed000

    template = ct_muscle_seed000(demo=True)
    train = {**template.train, "loss": "$__import__('os').getcwd()"}
    with pytest.raises(BundleError, match=r"train\.json loss: expression"):
        write_bundle(tmp_path / "b", template.manifest, template.inference, train, "")
    assert not (tmp_path / "b").exists()


def test_weights_are_deserialised_from_the_bytes_that_were_hashed(tmp_path, monkeypatch):
    """A weights file swapped after its checksum matched is never read: the pickle that
    would create `marker` replaces the verified forest between hashing and loading."""
    import pickle

    from myonode.models.bundle import Bundle
    from myonode.models.cxr import FOREST, CxrModel

    bundle_dir = tmp_path / "cxr"
    shutil.copytree(BUNDLES_DIR / "cxr-sarcopenia-seed004-demo", bundle_dir)
    marker = tmp_path / "unpickled"
    verified = Bundle.verified_weights

    def verify_then_swap(self):
        result = verified(self)
        (bundle_dir / FOREST).write_bytes(
            pickle.dumps(type("Evil", (), {"__reduce__": lambda s: (open, (str(marker), "w"))})())
        )
        return result

    monkeypatch.setattr(Bundle, "verified_weights", verify_then_swap)
    model = CxrModel(load_bundle(bundle_dir), "cpu")
    assert not marker.exists()
    assert hasattr(model.forest, "predict_proba")


@pytest.mark.parametrize("name", list(DEMO_SEGMENTATION))
def test_demo_bundle_segments_a_fresh_phantom_and_says_demo(name):
    engine = create_engine(f"bundle:{BUNDLES_DIR / name}")
    case = DEMO_SEGMENTATION[name](999)
    label_map = engine.segment(case.volume)
    assert label_map.labels.shape == case.volume.shape
    assert engine.algorithm.intended_use == "demo"
    assert any("demo bundle" in note for note in label_map.notes)
    present = set(np.unique(label_map.labels).tolist()) - {0}
    assert present and present <= set(label_map.structures)
    assert set(label_map.confidence) == present
    assert all(0.0 < c <= 1.0 for c in label_map.confidence.values())


def test_prediction_follows_the_patient_not_the_array_order():
    """The same anatomy stored with flipped and permuted axes gets the same labels, voxel for
    voxel: canonical reorientation is exact in both directions."""
    model = SegmentationModel(load_bundle(BUNDLES_DIR / "ct-abdominal-muscles-seed000-demo"))
    case = ct_abdomen(7)
    reference = model.predict(case.volume).labels
    g = case.volume.geometry
    # Store the array as [i, j, k] reversed along j: a sagittal-major, anterior-flipped layout.
    array = case.volume.array.transpose(2, 1, 0)[:, ::-1, :]
    nk, nj, ni = array.shape
    directions = np.stack([g.directions[:, 2], -g.directions[:, 1], g.directions[:, 0]], axis=1)
    spacing = np.array([g.spacing[2], g.spacing[1], g.spacing[0]])
    origin = g.origin + g.directions[:, 1] * g.spacing[1] * (case.volume.shape[1] - 1)
    stored = Volume(np.ascontiguousarray(array), Geometry(origin, directions, spacing))
    assert np.allclose(stored.geometry.index_to_lps([0, 0, 0]), g.index_to_lps([0, nj - 1, 0]))
    predicted = model.predict(stored).labels
    assert np.array_equal(predicted.transpose(2, 1, 0)[:, ::-1, :], reference)
    assert predicted.shape == (nk, nj, ni)


def test_channels_must_be_present():
    from myonode.models.preprocess import InputError, stack_channels

    volume = ct_abdomen(1, shape=(2, 16, 16)).volume
    with pytest.raises(InputError, match="'fat'"):
        stack_channels(volume, ["image", "fat"])
    volume.channels["fat"] = volume.array * 0.5
    assert stack_channels(volume, ["image", "fat"]).shape == (2, 2, 16, 16)


# --- resident engines in the pipeline ---------------------------------------------------------


def test_second_job_on_a_resident_model_skips_loading(monkeypatch):
    from myonode.models import runtime
    from myonode.route.profiles import builtin_pipelines
    from myonode.worker.runner import Runner

    spec = f"bundle:{BUNDLES_DIR / 'ct-abdominal-muscles-seed000-demo'}"
    bundle_pipeline = replace(builtin_pipelines()["ct_muscle"], name="ct_bundle", engine=spec)
    loads = []
    original = runtime.SegmentationModel.__init__

    def counting_init(self, *args, **kwargs):
        loads.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(runtime.SegmentationModel, "__init__", counting_init)
    volume = ct_abdomen(11, shape=(6, 96, 96)).volume
    runner = Runner(pipelines={"ct_bundle": bundle_pipeline})
    first = runner.engine("ct_bundle").segment(volume)
    second = runner.engine("ct_bundle").segment(volume)
    assert runner.engine_loads == 1
    assert len(loads) == 1
    assert runner.engine("ct_bundle") is runner.engine("ct_bundle")
    assert first.labels.any()
    assert np.array_equal(first.labels, second.labels)


# --- TotalSegmentator -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["upper_abdomen_labels_totalseg_v2.nii.gz", "totalseg_dicom_series_labels.nii.gz"]
)
def test_totalsegmentator_output_maps_to_node_structures(shared_data, name):
    source = load_nifti(shared_data / "ct" / name)
    raw = np.rint(source.array).astype(np.int64)
    labels, structures, _notes = map_output(raw, "total")
    by_key = {s.key: label for label, s in structures.items()}
    assert {"deep_back_muscles_left", "deep_back_muscles_right"} <= set(by_key)
    for ts_value, key in ((86, "deep_back_muscles_left"), (87, "deep_back_muscles_right")):
        assert np.count_nonzero(labels == by_key[key]) == np.count_nonzero(raw == ts_value) > 0

    # Laterality: the left structure lies at larger LPS x (towards patient Left).
    def mean_x(key):
        ijk = np.argwhere(labels == by_key[key])[:, ::-1]
        return source.geometry.index_to_lps(ijk)[:, 0].mean()

    assert mean_x("deep_back_muscles_left") > mean_x("deep_back_muscles_right")
    assert not np.isin(labels, [0, *structures], invert=True).any()
    organs = (raw > 0) & ~np.isin(raw, list(range(80, 90)))
    assert organs.any() and not labels[organs].any()
    if np.count_nonzero(raw == 88):
        assert mean_x("iliopsoas_left") > mean_x("iliopsoas_right")
        assert structures[by_key["iliopsoas_left"]].property_type.value == "68455001"


def test_totalsegmentator_engine_without_weights_is_unavailable():
    """Without the weights on disk the engine refuses with the reason (tests/test_nnunet.py
    runs it on a TotalSegmentator-like folder)."""
    reason = missing_requirements("total")
    if reason is None:
        pytest.skip("TotalSegmentator weights are installed on this machine")
    with pytest.raises(EngineError, match="unavailable: weights for task total"):
        create_engine("totalsegmentator:total")


def test_hole_filling_per_label_box_equals_whole_slice_filling():
    """Seed 000's SimpleITK hole filling, done per label bounding box, gives exactly what
    filling each label on the whole slice gives (and fills only background)."""
    import SimpleITK as sitk

    from myonode.models.runtime import fill_holes_per_slice

    rng = np.random.default_rng(0)
    labels = np.zeros((4, 64, 64), np.uint16)
    jj, ii = np.mgrid[0:64, 0:64]
    for label in range(1, 6):
        for _ in range(3):
            k, (j, i), r = rng.integers(0, 4), rng.integers(2, 58, 2), rng.integers(2, 8)
            ring = (np.hypot(jj - j, ii - i) <= r) & (np.hypot(jj - j, ii - i) > r - 2)
            labels[k][ring & (labels[k] == 0)] = label
    labels[rng.random(labels.shape) < 0.02] = 0
    expected = labels.copy()
    for k in range(labels.shape[0]):
        for label in set(np.unique(labels[k]).tolist()) - {0}:
            mask = sitk.GetImageFromArray((labels[k] == label).astype(np.uint8))
            holes = sitk.GetArrayFromImage(sitk.BinaryFillhole(mask)).astype(bool)
            expected[k][holes & (expected[k] == 0)] = label
    filled = fill_holes_per_slice(labels)
    assert np.array_equal(filled, expected)
    assert (filled != labels).sum() > 0 and np.all(labels[filled != labels] == 0)
