"""Quality control on the shared real cases: the reference segmentations (published models'
labels, and manual labels for the Dixon MR) pass, deliberate corruptions of them fail, and
what today's classical engines get wrong does not pass. Written to stay valid as the engines
improve: a structure is held to "not pass" only where its Dice against the reference says
the engine got it wrong."""

from __future__ import annotations

import numpy as np
import pytest

from myonode.core.agreement import agreement
from myonode.core.patient import PatientFacts
from myonode.core.types import LabelMap
from myonode.core.volume import Volume, load_nifti
from myonode.dicom.anatomy import STRUCTURES
from myonode.infer.engines import create
from myonode.measure.assessment import assess
from myonode.measure.results import result_rows
from myonode.qc.checks import quality_control

from support.qc_cases import (
    UPPER_ABDOMEN_V2,
    WHOLE_CT_V1,
    kidney_as_psoas,
    mirrored,
    moved,
    reference_case,
    shrunk,
)
from support.reference_cases import predicted_mask

FACTS = PatientFacts(sex="M", age_years=60, height_m=1.75, weight_kg=80.0)
WHOLE_CT = ("ct/abdomen_pelvis_ct.nii.gz", "ct/abdomen_pelvis_labels_totalseg_v1.nii.gz")
UPPER_CT = ("ct/upper_abdomen_ct.nii.gz", "ct/upper_abdomen_labels_totalseg_v2.nii.gz")
WRONG_DICE = 0.3  # below this the engine's structure is wrong, whatever its number says


@pytest.fixture(scope="module")
def whole_ct() -> tuple[Volume, LabelMap, np.ndarray]:
    from myonode.app.demo.shared_data import shared_data_dir

    data = shared_data_dir()
    if data is None:
        pytest.skip("shared real data not found (set MYONODE_TEST_DATA to ../shared/data)")
    return reference_case(data, *WHOLE_CT, WHOLE_CT_V1)


def test_reference_segmentation_of_the_whole_ct_passes(whole_ct):
    volume, label_map, _ = whole_ct
    report = quality_control(volume, label_map, "CT", FACTS)
    failing = {k: q.reasons for k, q in report.structures.items() if q.verdict != "pass"}
    assert failing == {}
    assert set(report.structures) == set(WHOLE_CT_V1.values())
    assert report.withheld_indices == {}  # lumbar spine and pelvis in view: CSA comparable


def test_reference_segmentation_of_the_upper_abdomen_passes(shared_data):
    volume, label_map, _ = reference_case(shared_data, *UPPER_CT, UPPER_ABDOMEN_V2)
    report = quality_control(volume, label_map, "CT", FACTS)
    assert {k: q.verdict for k, q in report.structures.items()} == dict.fromkeys(
        UPPER_ABDOMEN_V2.values(), "pass"
    )
    # T11-L2 only: the psoas is passed, but its largest section lies lower, out of view, so
    # no z-score against seed 003's maximum CSA (it read -5 before QC).
    assessment = assess(volume, label_map, "CT", FACTS, quality=report)
    assert "psoas_max_csa" in report.withheld_indices
    assert "psoas_max_csa" not in {c.quantity for c in assessment.comparisons}
    assert any("lower lumbar spine" in note for note in assessment.notes)


def test_manual_labels_of_the_dixon_mr_pass(shared_data):
    mr = shared_data / "mr"
    water = load_nifti(mr / "dixon_lumbar_tum01_water.nii.gz")
    fat = load_nifti(mr / "dixon_lumbar_tum01_fat.nii.gz").array
    labels = load_nifti(mr / "dixon_lumbar_tum01_labels.nii.gz").array.astype(np.uint8)
    keys = {1: "erector_spinae_right", 2: "multifidus_right"}
    keys |= {3: "multifidus_left", 4: "erector_spinae_left"}
    volume = Volume(water.array, water.geometry, channels={"fat": fat})
    label_map = LabelMap(labels, {n: STRUCTURES[key] for n, key in keys.items()})
    report = quality_control(volume, label_map, "MR", FACTS)
    assert {k: q.verdict for k, q in report.structures.items()} == dict.fromkeys(
        keys.values(), "pass"
    )


CORRUPTIONS = {
    "left kidney as psoas": (
        lambda lm, raw: kidney_as_psoas(lm, raw, "left", "iliopsoas_left"),
        "iliopsoas_left",
    ),
    "right kidney as psoas": (
        lambda lm, raw: kidney_as_psoas(lm, raw, "right", "iliopsoas_right"),
        "iliopsoas_right",
    ),
    "psoas of 3 cm³": (lambda lm, raw: shrunk(lm, "iliopsoas_left", 111), "iliopsoas_left"),
    "mirrored erector": (
        lambda lm, raw: mirrored(lm, "erector_spinae_left"),
        "erector_spinae_left",
    ),
    "erector in the abdomen": (
        lambda lm, raw: moved(lm, "erector_spinae_right", rows=20),
        "erector_spinae_right",
    ),
    "gluteus in the abdomen": (
        lambda lm, raw: moved(lm, "gluteus_maximus_left", slices=50),
        "gluteus_maximus_left",
    ),
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corrupted_reference_fails(whole_ct, name):
    volume, label_map, raw = whole_ct
    corrupt, key = CORRUPTIONS[name]
    broken = corrupt(label_map, raw)
    assert np.count_nonzero(broken.labels != label_map.labels)  # the corruption did something
    report = quality_control(volume, broken, "CT", FACTS)
    assert report.structures[key].verdict == "fail", report.structures[key].reasons
    assessment = assess(volume, broken, "CT", FACTS, quality=report)
    published = {(r.structure, r.quantity) for r in result_rows(assessment) if r.value is not None}
    assert not [q for s, q in published if s == key]  # no number for the failed structure
    assert not [c for c in assessment.comparisons if c.quantity == "iliopsoas_volume"] or (
        report.passed("iliopsoas_left") and report.passed("iliopsoas_right")
    )


def test_classical_ct_on_the_whole_ct_publishes_nothing_it_got_wrong(whole_ct):
    volume, _, raw = whole_ct
    label_map = create("classical-ct").segment(volume)
    report = quality_control(volume, label_map, "CT", FACTS)
    reference = {
        "psoas_left": (102,),
        "psoas_right": (103,),
        "gluteus_maximus_left": (94,),
        "gluteus_maximus_right": (95,),
        "gluteus_medius_left": (96, 98),  # ours includes the minimus
        "gluteus_medius_right": (97, 99),
        "erector_spinae_left": (100,),
        "erector_spinae_right": (101,),
    }
    checked = 0
    for structure in label_map.structures.values():
        if structure.key not in reference:
            continue
        mask = predicted_mask(label_map, (structure.key,))
        dice = agreement(mask, np.isin(raw, reference[structure.key]), 1.0).dice
        if dice < WRONG_DICE:
            assert report.verdict(structure.key) != "pass", (structure.key, dice)
            checked += 1
    assessment = assess(volume, label_map, "CT", FACTS, quality=report)
    psoas_passed = report.passed("psoas_left") and report.passed("psoas_right")
    quantities = {c.quantity for c in assessment.comparisons}
    assert psoas_passed or "psoas_max_csa" not in quantities  # no z-score from a doubtful psoas
    for row in result_rows(assessment):
        if row.structure:
            assert row.qc in ("pass", "review", "fail")
            if row.qc == "fail":
                assert row.value is None
    assert checked or psoas_passed  # today's engine gets the psoas wrong: it was checked


def test_any_psoas_on_a_plain_mr_is_not_passed(shared_data):
    """CHAOS T1 (liver and kidney level, no Dixon): no bone landmarks on MR, so a psoas there
    cannot be confirmed, whatever an engine labels (today's classical-mr took the kidneys)."""
    volume = load_nifti(shared_data / "mr" / "chaos11_t1_inphase.nii.gz")
    labels = np.zeros(volume.shape, dtype=np.uint8)
    nk, nj, ni = volume.shape
    labels[nk // 3 : 2 * nk // 3, nj // 2 : nj // 2 + 20, ni // 2 + 25 : ni // 2 + 45] = 1
    labels[nk // 3 : 2 * nk // 3, nj // 2 : nj // 2 + 20, ni // 2 - 45 : ni // 2 - 25] = 2
    label_map = LabelMap(labels, {1: STRUCTURES["psoas_left"], 2: STRUCTURES["psoas_right"]})
    report = quality_control(volume, label_map, "MR", FACTS)
    for key in ("psoas_left", "psoas_right"):
        quality = report.structures[key]
        assert quality.verdict != "pass"
        assert any("not checked" in reason for reason in quality.reasons)
    assert any("MR body outline" in note for note in report.notes)


def test_totalsegmentator_output_through_its_engine_mapping_passes(shared_data):
    """The TotalSegmentator engine's own label mapping applied to TotalSegmentator's output
    for this CT: what that engine hands QC in a job."""
    from myonode.infer.engines.totalsegmentator import map_output

    volume = load_nifti(shared_data / UPPER_CT[0])
    raw = np.rint(load_nifti(shared_data / UPPER_CT[1]).array).astype(np.int64)
    labels, structures, _notes = map_output(raw, "total")
    report = quality_control(volume, LabelMap(labels, structures), "CT", FACTS)
    verdicts = {k: q.verdict for k, q in report.structures.items()}
    assert {"iliopsoas_left", "deep_back_muscles_right"} <= set(verdicts)
    assert set(verdicts.values()) == {"pass"}
