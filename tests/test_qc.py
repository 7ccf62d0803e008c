"""Quality control: the checks on a drawn CT whose anatomy is known, what a verdict does to the
assessment and the result rows, and the store and metrics that carry it. The real cases are
in test_qc_real.py."""

from __future__ import annotations

import sqlite3

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from test_outputs import dciodvfy_errors

from myonode.app.api import create_app
from myonode.app.demo.synthetic import write_ct_series
from myonode.app.metrics import Metrics
from myonode.core.patient import PatientFacts
from myonode.core.quality import QualityReport, StructureQuality, worst
from myonode.core.types import LabelMap
from myonode.core.volume import Geometry, Volume, load_series
from myonode.dicom.anatomy import STRUCTURES
from myonode.encode import Device, OutputIdentity
from myonode.encode.seg import build_segmentation, segment_numbers
from myonode.encode.sr import build_report
from myonode.infer.engines import create
from myonode.measure.assessment import assess
from myonode.measure.results import QC_QUANTITY, result_rows, rows_from_sr
from myonode.qc.checks import coarse, quality_control
from myonode.route.profiles import builtin_pipelines
from myonode.store.index import Index
from myonode.store.records import ResultFilter, ResultRow

from conftest import make_settings
from support import AUTH_HEADERS, require_tool

PIXEL_MM, SLICE_MM = 4.0, 5.0
SHAPE = (24, 64, 64)
KEYS = ("psoas_left", "psoas_right", "erector_spinae_left", "erector_spinae_right")
FACTS = PatientFacts(sex="M", age_years=60, height_m=1.8, weight_kg=80.0)


def _disk(cj: float, ci: float, radius: float) -> np.ndarray:
    jj, ii = np.mgrid[0 : SHAPE[1], 0 : SHAPE[2]]
    return (jj - cj) ** 2 + (ii - ci) ** 2 <= radius**2


def drawn_ct() -> tuple[Volume, LabelMap]:
    """An axial CT (x = column = patient left, y = row = back): fat body, a vertebral body of
    bone, the psoas against it on either side and the erector spinae behind it."""
    jj, ii = np.mgrid[0 : SHAPE[1], 0 : SHAPE[2]]
    body = ((jj - 32) / 22) ** 2 + ((ii - 32) / 28) ** 2 <= 1
    plane = np.where(body, -100.0, -1000.0)
    labels = np.zeros(SHAPE[1:], dtype=np.uint8)
    places = {
        "psoas_left": (32, 40, 4),
        "psoas_right": (32, 24, 4),
        "erector_spinae_left": (45, 37, 4),
        "erector_spinae_right": (45, 27, 4),
    }
    for n, key in enumerate(KEYS, start=1):
        mask = _disk(*places[key])
        plane[mask] = 50.0
        labels[mask] = n
    plane[_disk(32, 32, 4)] = 400.0
    geometry = Geometry(np.zeros(3), np.eye(3), np.array([PIXEL_MM, PIXEL_MM, SLICE_MM]))
    volume = Volume(np.repeat(plane[np.newaxis], SHAPE[0], axis=0), geometry)
    label_map = LabelMap(
        labels=np.repeat(labels[np.newaxis], SHAPE[0], axis=0),
        structures={n: STRUCTURES[key] for n, key in enumerate(KEYS, start=1)},
    )
    return volume, label_map


def with_mask(label_map: LabelMap, key: str, mask: np.ndarray) -> LabelMap:
    label = next(n for n, s in label_map.structures.items() if s.key == key)
    labels = np.where(label_map.labels == label, 0, label_map.labels)
    labels[mask & (labels == 0)] = label
    return LabelMap(labels=labels, structures=dict(label_map.structures))


def verdicts(volume: Volume, label_map: LabelMap, modality: str = "CT") -> QualityReport:
    return quality_control(volume, label_map, modality, FACTS)


def test_plausible_anatomy_passes_every_check():
    volume, label_map = drawn_ct()
    report = verdicts(volume, label_map)
    for key in KEYS:
        quality = report.structures[key]
        assert quality.verdict == "pass", (key, quality.reasons)
        assert {"side", "position", "size", "intensity", "shape", "asymmetry"} <= set(
            quality.passed
        )
    assert "vertebral column on 24 of 24 slices" in report.notes[0]


def test_mirrored_erector_fails_on_side():
    volume, label_map = drawn_ct()
    mask = label_map.labels == 3  # left erector drawn over on the right
    moved = with_mask(label_map, "erector_spinae_left", np.roll(mask, -20, axis=2))
    quality = verdicts(volume, moved).structures["erector_spinae_left"]
    assert quality.verdict == "fail"
    assert any("patient's left of the midline" in reason for reason in quality.reasons)


def test_psoas_away_from_the_column_fails_on_position():
    volume, label_map = drawn_ct()
    mask = np.zeros(SHAPE, dtype=bool)
    mask[:] = _disk(26, 52, 4)  # lateral and forward: where a kidney would be
    quality = verdicts(volume, with_mask(label_map, "psoas_left", mask)).structures["psoas_left"]
    assert quality.verdict == "fail"
    assert any("from the vertebral column" in reason for reason in quality.reasons)


def test_erector_in_front_of_the_column_fails_on_position():
    volume, label_map = drawn_ct()
    mask = np.zeros(SHAPE, dtype=bool)
    mask[:] = _disk(18, 38, 4)
    report = verdicts(volume, with_mask(label_map, "erector_spinae_left", mask))
    quality = report.structures["erector_spinae_left"]
    assert quality.verdict == "fail"
    assert any("behind the vertebral column" in reason for reason in quality.reasons)


def test_a_tiny_muscle_inside_the_image_fails_on_size():
    volume, label_map = drawn_ct()
    mask = np.zeros(SHAPE, dtype=bool)
    mask[12] = _disk(32, 40, 2)  # 13 pixels on one middle slice: 1 cm³
    quality = verdicts(volume, with_mask(label_map, "psoas_left", mask)).structures["psoas_left"]
    assert quality.verdict == "fail"
    assert any("far too small" in reason for reason in quality.reasons)


def test_fat_labelled_as_muscle_fails_on_intensity():
    volume, label_map = drawn_ct()
    mask = label_map.labels == 1
    volume.array[mask] = -100.0
    quality = verdicts(volume, label_map).structures["psoas_left"]
    assert quality.verdict == "fail"
    assert any("muscle attenuation" in reason for reason in quality.reasons)


def test_asymmetry_beyond_seed_001_is_not_passed():
    volume, label_map = drawn_ct()
    mask = np.zeros(SHAPE, dtype=bool)
    mask[:] = _disk(32, 43, 7) & ~_disk(32, 32, 4)  # a right psoas three times the left
    report = verdicts(volume, with_mask(label_map, "psoas_left", mask))
    assert report.structures["psoas_right"].verdict != "pass"
    assert any("differ by" in reason for reason in report.structures["psoas_right"].reasons)


def test_missing_landmarks_give_review_with_the_reason():
    volume, label_map = drawn_ct()
    volume.array[volume.array >= 200] = 50.0  # no bone: no vertebral column
    report = verdicts(volume, label_map)
    assert {report.verdict(key) for key in KEYS} == {"review"}
    assert any("no vertebral column" in note for note in report.notes)


def test_mr_without_landmarks_or_dixon_is_never_passed():
    volume, label_map = drawn_ct()
    volume.array[:] = np.where(volume.array > -500, 100.0, 0.0)
    report = verdicts(volume, label_map, modality="MR")
    for key in KEYS:
        assert report.verdict(key) == "review", key
    assert any("no vertebral column" in r for r in report.structures["psoas_left"].reasons)


def test_a_structure_not_found_fails_and_qc_never_raises():
    volume, label_map = drawn_ct()
    empty = with_mask(label_map, "psoas_left", np.zeros(SHAPE, dtype=bool))
    assert verdicts(volume, empty).structures["psoas_left"].verdict == "fail"
    broken = Volume(volume.array[:, :, :1], volume.geometry)  # labels no longer fit the image
    report = verdicts(broken, label_map)
    assert set(report.structures) == set(KEYS)
    assert all(q.verdict != "pass" for q in report.structures.values())


def test_worst_verdict_and_unknown_structures():
    assert worst(["pass", "review", "fail"]) == "fail"
    assert worst([]) == "pass"
    assert QualityReport().verdict("psoas_left") == "review"


def _report(**verdict_by_key: str) -> QualityReport:
    return QualityReport(
        {
            key: StructureQuality(v, () if v == "pass" else (f"{key} doubtful.",))
            for key, v in verdict_by_key.items()
        }  # type: ignore[arg-type]
    )


def test_only_passing_values_feed_indices_references_and_rows():
    volume, label_map = drawn_ct()
    passed = assess(volume, label_map, "CT", FACTS, quality=_report(**dict.fromkeys(KEYS, "pass")))
    assert passed.value("psoas_max_csa") is not None
    assert [c.quantity for c in passed.comparisons] == ["psoas_max_csa"]
    doubtful = assess(
        volume,
        label_map,
        "CT",
        FACTS,
        quality=_report(
            psoas_left="review",
            psoas_right="pass",
            erector_spinae_left="fail",
            erector_spinae_right="pass",
        ),
    )
    csa = next(d for d in doubtful.derived if d.key == "psoas_max_csa")
    assert csa.value is None and csa.omitted.startswith("not evaluable: QC (psoas left review")
    assert doubtful.comparisons == []
    asymmetry = next(d for d in doubtful.derived if d.key == "erector_spinae_asymmetry")
    assert asymmetry.value is None and "erector spinae left fail" in asymmetry.omitted
    assert any("not evaluable: QC" in note for note in doubtful.notes)
    rows = result_rows(doubtful)
    per_structure = [r for r in rows if r.structure]
    assert all(r.qc in ("pass", "review", "fail") for r in per_structure)
    assert not [r for r in rows if r.structure and not r.qc]
    failed = [r for r in per_structure if r.structure == "erector_spinae_left"]
    assert [(r.quantity, r.qc) for r in failed] == [(QC_QUANTITY, "fail")]
    assert "doubtful" in failed[0].text
    review = {r.quantity: r.qc for r in per_structure if r.structure == "psoas_left"}
    assert review["volume"] == "review" and review[QC_QUANTITY] == "review"
    assert all(r.qc is None for r in rows if not r.structure)


def test_l3_smi_criterion_says_qc_when_withheld():
    volume, label_map = drawn_ct()
    label_map.landmarks["l3_slice"] = 12
    facts = PatientFacts(sex="M", age_years=60, height_m=1.8, weight_kg=80.0)
    fine = assess(volume, label_map, "CT", facts, quality=_report(**dict.fromkeys(KEYS, "pass")))
    assert fine.value("l3_smi") is not None
    doubtful = assess(
        volume,
        label_map,
        "CT",
        facts,
        quality=_report(**{**dict.fromkeys(KEYS, "pass"), "psoas_right": "review"}),
    )
    assert doubtful.value("l3_smi") is None
    [smi] = [c for c in doubtful.sarcopenia[0].criteria if "L3 SMI" in c.name]
    assert smi.detail.startswith("not evaluable: QC (psoas right review")


def test_index_keeps_qc_migrates_old_results_and_counts_for_metrics(tmp_path):
    path = tmp_path / "index.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        """CREATE TABLE results (id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL,
           study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, pipeline TEXT NOT NULL,
           structure TEXT NOT NULL, quantity TEXT NOT NULL, value REAL, unit TEXT NOT NULL,
           text TEXT, created_at REAL NOT NULL);"""
    )
    old.close()
    index = Index(path)
    now = 0.0
    with index.transaction() as conn:
        conn.execute(
            """INSERT INTO jobs (study_uid, series_uid, pipeline, pipeline_version,
                   input_digest, state, created_at) VALUES ('1.2', '1.2.3', 'ct', 'v', 'd',
                   'running', ?)""",
            (now,),
        )
    rows = [
        ResultRow("psoas_left", QC_QUANTITY, None, "", "QC fail: kidney.", "fail"),
        ResultRow("erector_spinae_left", QC_QUANTITY, None, "", "QC review: x.", "review"),
        ResultRow("erector_spinae_left", "volume", 300.0, "cm3", None, "review"),
        ResultRow("", "height", 1.8, "m"),
    ]
    index.complete_job(1, [], [], rows)
    records = index.query_results(ResultFilter())
    assert [(r.structure, r.quantity, r.qc) for r in records] == [
        ("psoas_left", "qc", "fail"),
        ("erector_spinae_left", "qc", "review"),
        ("erector_spinae_left", "volume", "review"),
        ("", "height", None),
    ]
    assert index.qc_counts() == {"fail": 1, "review": 1}
    [study] = index.studies_needing_review()
    assert (study["study_uid"], study["review"], study["fail"]) == ("1.2", 1, 1)
    metrics = Metrics(index)
    rendered = metrics.render().decode()
    assert 'myonode_qc_structures{verdict="fail"} 1.0' in rendered
    assert 'myonode_qc_structures{verdict="pass"} 0.0' in rendered
    app = create_app(index, make_settings(tmp_path), metrics)
    client = TestClient(app, headers=AUTH_HEADERS, base_url="http://127.0.0.1")
    [listed] = client.get("/api/review").json()
    assert (listed["study_uid"], listed["review"], listed["fail"]) == ("1.2", 1, 1)
    csv = client.get("/api/results?format=csv").text.splitlines()
    assert csv[0].endswith(",text,qc") and csv[1].endswith(",fail")
    assert 'id="review"' in client.get("/dashboard/").text
    index.close()


@pytest.mark.parametrize("key", KEYS)
def test_every_drawn_structure_is_checked(key):
    volume, label_map = drawn_ct()
    assert key in verdicts(volume, label_map).structures


def test_a_scanner_fine_grid_is_checked_coarsely_with_the_same_verdicts():
    volume, label_map = drawn_ct()
    fine = Volume(
        np.repeat(np.repeat(volume.array, 4, axis=1), 4, axis=2),
        Geometry(np.zeros(3), np.eye(3), np.array([1.0, 1.0, SLICE_MM])),
    )
    labels = np.repeat(np.repeat(label_map.labels, 4, axis=1), 4, axis=2)
    coarse_volume, coarse_labels = coarse(fine, LabelMap(labels, label_map.structures))
    assert coarse_volume.shape == coarse_labels.labels.shape == (SHAPE[0], 128, 128)
    assert list(coarse_volume.geometry.spacing) == [2.0, 2.0, SLICE_MM]
    report = verdicts(fine, LabelMap(labels, label_map.structures))
    assert {k: q.verdict for k, q in report.structures.items()} == dict.fromkeys(KEYS, "pass")


def test_an_engine_l3_slice_without_a_vertebra_is_not_used():
    volume, label_map = drawn_ct()
    volume.array[20:][volume.array[20:] >= 200] = 50.0  # no bone on the last four slices
    label_map.landmarks["l3_slice"] = 22
    report = verdicts(volume, label_map)
    assert "l3_slice" in report.doubtful_landmarks
    assessment = assess(volume, label_map, "CT", FACTS, quality=report)
    assert all(s.area_at_l3_cm2 is None for s in assessment.structures)
    assert assessment.value("l3_smi") is None
    [smi] = [c for c in assessment.sarcopenia[0].criteria if "L3 SMI" in c.name]
    assert "no vertebral column" in smi.detail
    label_map.landmarks["l3_slice"] = 10  # on the column: used
    report = verdicts(volume, label_map)
    assert report.doubtful_landmarks == {}
    assert assess(volume, label_map, "CT", FACTS, quality=report).value("l3_smi") is not None


def test_a_failed_structure_is_in_the_seg_and_sr_without_a_number(tmp_path):
    """SEG keeps the failed segment, described as failed QC; the SR has its verdict and
    reasons but no measurement; both conform (dciodvfy); the SR reads back to the rows."""
    require_tool("dciodvfy")
    drawn, label_map = drawn_ct()
    volume = load_series(write_ct_series(drawn.array, drawn.geometry, tmp_path / "ct", seed="qc"))
    mask = label_map.labels == 3
    broken = with_mask(label_map, "erector_spinae_left", np.roll(mask, -20, axis=2))
    report = verdicts(volume, broken)
    assert report.verdict("erector_spinae_left") == "fail"
    assessment = assess(volume, broken, "CT", FACTS, quality=report)
    algorithm = create("classical-ct").algorithm
    identity = OutputIdentity(str(volume.datasets[0].SeriesInstanceUID), "qc", "1", 900)
    seg = build_segmentation(volume, broken, algorithm, identity, Device(), report)
    numbers = segment_numbers(broken)
    sr = build_report(
        volume.datasets,
        seg,
        numbers,
        assessment,
        algorithm,
        identity,
        Device(),
        builtin_pipelines()["ct_muscle"].procedure,
    )
    descriptions = {s.SegmentLabel: str(s.SegmentDescription) for s in seg.SegmentSequence}
    assert descriptions["Left erector spinae"].startswith("QC fail: Only 0 %")
    assert descriptions["Left psoas major"].startswith("QC pass")
    for name, dataset in (("seg", seg), ("sr", sr)):
        path = tmp_path / f"{name}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], name
    rows = rows_from_sr(pydicom.dcmread(tmp_path / "sr.dcm"))
    assert [(r.structure, r.quantity, r.qc) for r in rows if r.structure] == [
        (r.structure, r.quantity, r.qc) for r in result_rows(assessment) if r.structure
    ]
    failed = [r for r in rows if r.structure == "erector_spinae_left"]
    assert [(r.quantity, r.value, r.qc) for r in failed] == [(QC_QUANTITY, None, "fail")]
