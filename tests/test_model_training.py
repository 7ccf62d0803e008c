"""Training and evaluation: a tiny bundle learns its phantom, the CLIs checkpoint and resume,
DICOM SEG cases are read as labels, and the seed 004 two-step model is produced and
calibrated on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes

from myonode.app.cli import main
from myonode.app.demo.synthetic import write_ct_series
from myonode.core.types import Algorithm, LabelMap
from myonode.core.volume import load_series
from myonode.dicom.anatomy import STRUCTURES
from myonode.infer.engines import create as create_engine
from myonode.models.bundle import label_spec, load_bundle, write_bundle
from myonode.models.checkpoints import TrainOptions
from myonode.models.cxr import CxrModel, concordance, fit_sarcopenia_forest, mixture
from myonode.models.data import Case, load_case
from myonode.models.evaluate import evaluate_cases, summarise
from myonode.models.phantoms import ct_abdomen, mr_thighs
from myonode.models.templates import ct_muscle_seed000, cxr_sarcopenia_seed004, mr_thigh_seed002
from myonode.models.train_demo_bundles import write_phantom_cases, write_radiographs
from myonode.models.training import train

TINY_KEYS = ("psoas_left", "psoas_right", "erector_spinae_left", "erector_spinae_right")


def tiny_ct_bundle(root: Path):
    """Seed 000's architecture shrunk to CPU-seconds: 4 of its structures, narrow widths."""
    template = ct_muscle_seed000(demo=True)
    manifest = template.manifest.model_copy(
        update={
            "name": "tiny-ct-test",
            "labels": {n: label_spec(STRUCTURES[k]) for n, k in enumerate(TINY_KEYS, start=1)},
        }
    )
    inference = {
        **template.inference,
        "network_def": {
            "_target_": "myonode.models.networks.ct_residual_unet",
            "out_channels": len(TINY_KEYS) + 1,
            "channels": [8, 16, 32, 32],
            "num_res_units": 1,
        },
    }
    train_config = {
        **template.train,
        "lr_stages": [[14, 3e-3]],
        "batch_size": 4,
        "val_fraction": 0.0,
        "augmentation": [],  # the phantom has no pose variation to learn
    }
    return write_bundle(root, manifest, inference, train_config, template.readme)


def four_muscle_phantom(seed: int):
    """The CT phantom with only the four test structures drawn as muscle (others as fat)."""
    case = ct_abdomen(seed, shape=(3, 64, 64))
    keep = [case.keys.index(key) + 1 for key in TINY_KEYS]
    case.volume.array[(case.labels > 0) & ~np.isin(case.labels, keep)] = -100.0
    return case


def test_tiny_bundle_trained_here_reaches_dice_090_on_its_phantom(tmp_path):
    bundle = tiny_ct_bundle(tmp_path / "bundle")
    phantom = four_muscle_phantom
    write_phantom_cases(tmp_path / "data", bundle, phantom, range(24))
    result = train(tmp_path / "bundle", tmp_path / "data", options=TrainOptions(progress=False))
    assert result.losses[-1] < result.losses[0]
    trained = load_bundle(tmp_path / "bundle")
    assert trained.manifest.intended_use == "research"
    assert trained.manifest.training.epochs == 14
    label_of = {spec.key: n for n, spec in trained.manifest.labels.items()}
    unseen = [phantom(seed) for seed in (500, 501)]
    cases = [Case(f"c{n}", c.volume, c.relabelled(label_of)) for n, c in enumerate(unseen)]
    summaries = summarise(evaluate_cases(trained, cases))
    assert {s.structure for s in summaries} == set(TINY_KEYS)
    for summary in summaries:
        assert summary.dice_mean >= 0.9, summary


def test_train_and_evaluate_clis_checkpoint_resume_and_report(tmp_path):
    bundle_dir, data = tmp_path / "bundle", tmp_path / "data"
    assert main(["bundle", "init", "ct-abdominal-muscles-seed000", str(bundle_dir), "--demo"]) == 0
    bundle = load_bundle(bundle_dir)
    assert not bundle.has_weights
    write_phantom_cases(data, bundle, lambda s: ct_abdomen(s, shape=(3, 48, 48)), range(2))
    assert main(["train", str(bundle_dir), "--data", str(data), "--epochs", "1"]) == 0
    log = bundle_dir / "train" / "log.jsonl"
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [0]
    assert main(["train", str(bundle_dir), "--data", str(data), "--epochs", "2"]) == 1
    assert main(["train", str(bundle_dir), "--data", str(data), "--epochs", "2", "--resume"]) == 0
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [0, 1]
    trained = load_bundle(bundle_dir)
    assert trained.manifest.training.epochs == 2
    assert len(trained.verified_weights()) == 1
    assert main(["bundle", "verify", str(bundle_dir)]) == 0
    copy = tmp_path / "copy"
    args = ["train", str(bundle_dir), "--data", str(data), "--epochs", "1", "--out", str(copy)]
    assert main(args) == 0
    assert load_bundle(copy).manifest.training.epochs == 1
    assert load_bundle(bundle_dir).manifest.weights == trained.manifest.weights
    report = tmp_path / "report"
    assert main(["evaluate", str(bundle_dir), "--data", str(data), "--out", str(report)]) == 0
    evaluation = json.loads((report / "evaluation.json").read_text())
    assert evaluation["cases"] == 2 and evaluation["labels"]
    assert {"dice_mean", "volume_error_cm3_mean"} <= set(evaluation["labels"][0])
    assert (report / "bland_altman.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _dicom_case(tmp_path: Path, phantom):
    series = write_ct_series(
        phantom.volume.array, phantom.volume.geometry, tmp_path / "case" / "image", seed="seg"
    )
    return load_series(series)


def test_node_written_seg_is_a_training_label(tmp_path):
    """A SEG the node's own encoder wrote (tracking IDs = structure keys) reads back as the
    bundle's labels, voxel for voxel."""
    from myonode.encode import Device, OutputIdentity, conform_copied_attributes
    from myonode.encode.seg import build_segmentation

    bundle = write_bundle(tmp_path / "bundle", *_template_parts(mr_thigh_seed002(demo=True)))
    phantom = mr_thighs(4, shape=(4, 32, 64))
    volume = _dicom_case(tmp_path, phantom)
    conform_copied_attributes(volume.datasets)
    label_of = {spec.key: n for n, spec in bundle.manifest.labels.items()}
    expected = phantom.relabelled(label_of)
    present = sorted(set(np.unique(expected).tolist()) - {0})
    label_map = LabelMap(expected, {n: bundle.structures()[n] for n in present})
    algorithm = Algorithm("test", "1", codes.cid7162.ArtificialIntelligence, "classical", "demo")
    identity = OutputIdentity(str(volume.datasets[0].SeriesInstanceUID), "test", "1", 9000)
    seg = build_segmentation(volume, label_map, algorithm, identity, Device())
    seg.save_as(tmp_path / "case" / "seg.dcm")
    case = load_case(tmp_path / "case", bundle)
    assert np.array_equal(case.labels, expected)


def test_seg_segments_are_matched_by_code_and_laterality(tmp_path):
    """A SEG from another tool (no tracking IDs): structures are found by property type code
    and laterality modifier; unknown segments are ignored with a note."""
    bundle = write_bundle(tmp_path / "bundle", *_template_parts(ct_muscle_seed000(demo=True)))
    phantom = ct_abdomen(5, shape=(3, 48, 48))
    volume = _dicom_case(tmp_path, phantom)
    label_of = {spec.key: n for n, spec in bundle.manifest.labels.items()}
    expected = phantom.relabelled(label_of)
    chosen = ["psoas_right", "erector_spinae_left"]
    descriptions, masks = [], []
    for number, key in enumerate([*chosen, "muscle_density_tissue"], start=1):
        structure = STRUCTURES[key]
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=structure.name,
            segmented_property_category=structure.category,
            segmented_property_type=structure.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        if structure.laterality is not None:
            item = description.SegmentedPropertyTypeCodeSequence[0]
            item.SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept.from_code(structure.laterality)
            ]
        descriptions.append(description)
        masks.append(expected == label_of[key] if key in label_of else expected == 0)
    seg = hd.seg.Segmentation(
        source_images=volume.datasets,
        pixel_array=np.stack(masks, axis=-1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="reader",
        manufacturer_model_name="editor",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(tmp_path / "case" / "seg.dcm")
    case = load_case(tmp_path / "case", bundle)
    wanted = np.where(np.isin(expected, [label_of[k] for k in chosen]), expected, 0)
    assert np.array_equal(case.labels, wanted)
    assert any("segment 3" in note for note in case.notes)


def _template_parts(template):
    return template.manifest, template.inference, template.train, template.readme


# --- seed 004 -------------------------------------------------------------------------------


def test_deep_ensemble_mixture_hand_computed():
    mu, sigma = mixture(np.array([1.0, 3.0]), np.array([1.0, 1.0]))
    assert mu == pytest.approx(2.0)
    assert sigma == pytest.approx(np.sqrt(2.0))  # mean(1 + mu²) − 2² = (2 + 10)/2 − 4
    assert concordance(np.arange(5.0), np.arange(5.0)) == pytest.approx(1.0)
    assert concordance(np.arange(5.0), np.arange(5.0) + 10) < 0.2


def test_random_forest_probability_is_calibrated_on_synthetic_data():
    """Features drawn like step 1's outputs; outcomes from a known logistic risk. The sigmoid-
    calibrated forest must beat the base rate, come close to the true risk, and match
    observed frequencies (expected calibration error over 10 bins)."""
    rng = np.random.default_rng(0)

    def draw(n):
        alm = rng.normal(16, 3, n)
        features = np.column_stack(
            [
                alm,
                rng.uniform(0.5, 2, n),
                rng.normal(25, 6, n),
                rng.uniform(1, 4, n),
                rng.normal(10, 2, n),
                rng.uniform(0.5, 2, n),
                rng.uniform(60, 90, n),
                rng.integers(0, 2, n),
                rng.normal(24, 3, n),
            ]
        )
        risk = 1 / (1 + np.exp(-(-1.0 - 0.9 * (alm - 16) + 0.05 * (features[:, 6] - 75))))
        return features, (rng.random(n) < risk).astype(int), risk

    train_x, train_y, _ = draw(1500)
    test_x, test_y, risk = draw(2000)
    forest = fit_sarcopenia_forest(train_x, train_y, {"n_estimators": 150, "min_samples_leaf": 5})
    p = forest.predict_proba(test_x)[:, 1]
    assert np.all((p >= 0) & (p <= 1))
    brier, oracle = np.mean((p - test_y) ** 2), np.mean((risk - test_y) ** 2)
    assert brier < 0.6 * np.mean((test_y.mean() - test_y) ** 2)
    assert brier < oracle + 0.03
    assert np.abs(p - risk).mean() < 0.1
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(
        abs(p[bins == b].mean() - test_y[bins == b].mean()) * np.mean(bins == b)
        for b in np.unique(bins)
    )
    assert ece < 0.07


def test_cxr_bundle_trains_and_gives_mu_sigma_and_probability(tmp_path):
    template = cxr_sarcopenia_seed004(demo=True)
    manifest = template.manifest.model_copy(update={"name": "tiny-cxr-test"})
    manifest = manifest.model_copy(
        update={"input": manifest.input.model_copy(update={"image_size": (32, 32)})}
    )
    inference = {**template.inference, "members": 2}
    train_config = {**template.train, "epochs": 3, "augmentation": []}
    train_config["forest"] = {"n_estimators": 50, "calibration_cv": 3}
    write_bundle(tmp_path / "bundle", manifest, inference, train_config, template.readme)
    write_radiographs(tmp_path / "data", range(90))
    result = train(tmp_path / "bundle", tmp_path / "data", options=TrainOptions(progress=False))
    assert {"ccc_alm", "mae_alm", "ccc_crt"} <= set(result.validation)
    engine = create_engine(f"bundle:{tmp_path / 'bundle'}")
    assert isinstance(engine, CxrModel)
    assert engine.targets == ("alm", "hgs", "crt")
    image = np.load(tmp_path / "data" / "cxr0000.npy")
    estimates = engine.estimate(image)
    for name, unit in (("alm", "kg"), ("hgs", "kg"), ("crt", "s")):
        assert np.isfinite(estimates[name].mu) and estimates[name].sigma > 0
        assert estimates[name].unit == unit
    from myonode.models.cxr import Clinical

    assessment = engine.assess(image, Clinical(age=75, sex="F", bmi=22.0))
    assert assessment.probability is not None and 0 <= assessment.probability <= 1
    assert engine.sarcopenia_probability(estimates, Clinical(None, "F", 22.0)) is None
    assert any("not a clinical score" in note for note in assessment.notes)
