"""SARC-CXR (seed 004) in the node's flow: without a model nothing is measured and the decision
says why; with the committed demo bundle a radiograph gives an SR and a PDF (no SEG) whose
predictions are labelled demo and predicted, and read back as the index's rows."""

import json
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import EncapsulatedPDFStorage
from test_outputs import dciodvfy_errors

from myonode.app.demo.synthetic import Patient, write_radiograph
from myonode.app.process import process_folder
from myonode.core.config import load_settings
from myonode.core.radiograph import load_radiograph
from myonode.measure.results import rows_from_sr
from myonode.models.phantoms import chest_radiograph
from myonode.pipelines import PipelineUnavailable, pipeline_versions
from myonode.route.profiles import (
    builtin_pipelines,
    builtin_profiles_dir,
    configured_pipelines,
    load_profiles,
)
from myonode.store.records import ResultFilter, ResultRow
from myonode.worker.runner import Runner

from support import myonode, sql, sr_texts

BUNDLE = Path(__file__).parents[1] / "models" / "bundles" / "cxr-sarcopenia-seed004-demo"
TARGETS = ("alm", "hgs", "crt", "almi")
ELDER = Patient("CXR-1", "Phantom^Chest", "F", 78, 1.58, 54.0)


def write_study(folder: Path, patient: Patient) -> Path:
    return write_radiograph(chest_radiograph(7).image, folder / "cxr.dcm", patient, "cxr-test")


def bundle_profiles(tmp_path: Path) -> Path:
    """A site profile directory that gives cxr_sarcopenia the demo bundle."""
    directory = tmp_path / "profiles"
    directory.mkdir()
    profile = (builtin_profiles_dir() / "cxr_sarcopenia.yaml").read_text()
    (directory / "cxr_sarcopenia.yaml").write_text(
        profile + f"output:\n  engine: bundle:{BUNDLE}\n"
    )
    return directory


def test_without_a_bundle_nothing_runs_and_every_view_says_why(tmp_path):
    write_study(tmp_path / "study", ELDER)
    out = tmp_path / "out"
    report, index = process_folder(tmp_path / "study", out, load_settings(environ={}))
    assert report.stored == 1 and report.jobs_done == 0 and report.jobs_failed == 0
    assert not sql(index, "SELECT * FROM jobs") and not sql(index, "SELECT * FROM results")
    [study_uid] = [r["study_uid"] for r in sql(index, "SELECT study_uid FROM studies")]
    [decision] = index.decisions(study_uid)
    assert not decision["selected"] and decision["pipeline"] == "cxr_sarcopenia"
    reason = decision["reason"]
    assert "DX PA radiograph" in reason  # what would have been chosen
    assert "trained SARC-CXR (seed 004) model bundle is required" in reason
    assert "output.engine: bundle:" in reason
    assert not list(out.rglob("*.dcm"))

    env = {"MYONODE_STORAGE__DATA_DIR": str(out), "PATH": "/usr/bin:/bin"}
    status = myonode("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    [shown] = json.loads(status.stdout)["decisions"][study_uid]
    assert "model bundle is required" in shown["reason"]
    explained = myonode("explain", tmp_path / "study", "--json", env=env)
    assert explained.returncode == 0, explained.stderr
    [study] = json.loads(explained.stdout)
    [pipeline] = [p for p in study["pipelines"] if p["pipeline"] == "cxr_sarcopenia"]
    assert pipeline["state"] == "unavailable" and pipeline["selected"] == []
    assert "model bundle is required" in study["decisions"][0]["reason"]


@pytest.fixture(scope="module")
def with_bundle(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cxr")
    write_study(tmp_path / "study", ELDER)
    settings = load_settings(
        environ={"MYONODE_ROUTING__PROFILES_DIR": str(bundle_profiles(tmp_path))}
    )
    report, index = process_folder(tmp_path / "study", tmp_path / "out", settings)
    assert report.jobs_done == 1 and report.jobs_failed == 0
    return tmp_path / "out", index


def test_demo_bundle_writes_sr_and_pdf_without_seg(with_bundle):
    out, _ = with_bundle
    names = sorted(p.name for p in out.rglob("*.dcm") if p.parent.name == "cxr_sarcopenia")
    assert names == ["report.dcm", "sr.dcm"]
    sr = pydicom.dcmread(next(out.rglob("sr.dcm")))
    pdf = pydicom.dcmread(next(out.rglob("report.dcm")))
    assert pdf.SOPClassUID == EncapsulatedPDFStorage
    assert pdf.StudyInstanceUID == sr.StudyInstanceUID
    assert pdf.EncapsulatedDocument.startswith(b"%PDF")
    assert "(demo)" in sr.SeriesDescription
    [evidence] = sr.CurrentRequestedProcedureEvidenceSequence
    [series] = evidence.ReferencedSeriesSequence
    assert series.ReferencedSOPSequence[0].ReferencedSOPClassUID.name.startswith("Digital X-Ray")


def test_sr_states_mean_and_sd_demo_use_and_predicted_criteria(with_bundle):
    out, _ = with_bundle
    sr = pydicom.dcmread(next(out.rglob("sr.dcm")))
    rows = {r.quantity: r for r in rows_from_sr(sr)}
    for key in TARGETS:
        assert rows[key].value is not None and rows[f"{key}_sd"].value > 0, key
    assert rows["alm"].unit == rows["hgs"].unit == "kg" and rows["crt"].unit == "s"
    assert rows["almi"].value == pytest.approx(rows["alm"].value / 1.58**2)
    assert 0 <= rows["sarcopenia_probability"].value <= 1
    assert "sarcopenia_probability_sd" not in rows
    texts = sr_texts(sr)
    assert any("demonstration only" in t and "not a clinical" in t for t in texts)
    assert any("demo bundle trained on generated phantoms" in t for t in texts)
    assert any(t.startswith("Series selection: cxr_sarcopenia -> cxr_sarcopenia") for t in texts)
    for guideline in ("EWGSOP2", "AWGS 2019"):
        [statement] = [t for t in texts if t.startswith(guideline + ":")]
        assert "predicted" in statement and "not evaluable: grip" not in statement
    assert rows["sarcopenia_ewgsop2_predicted"].text in ("present", "absent", "probable")
    assert rows["sarcopenia_awgs2019_predicted"].text in ("present", "absent", "possible")
    assert "sarcopenia_ewgsop2" not in rows  # a predicted conclusion never reads as measured


def test_predicted_conclusions_carry_method_and_the_models_intended_use(with_bundle):
    """Machine-readable, not only in the text: the conclusions' group says "predicted" and
    names the algorithm, whose parameters state intended use demo (TID 1501, TID 4019)."""
    out, _ = with_bundle
    sr = pydicom.dcmread(next(out.rglob("sr.dcm")))
    [measurements] = [
        item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "126010"
    ]
    groups = {}
    for group in measurements.ContentSequence:
        items = [(i.ConceptNameCodeSequence[0].CodeMeaning, i) for i in group.ContentSequence]
        [identifier] = [i.TextValue for name, i in items if name == "Tracking Identifier"]
        groups[identifier] = items
    assert "sarcopenia" not in groups
    conclusions = groups["prediction:sarcopenia"]
    [method] = [i for name, i in conclusions if name == "Measurement Method"]
    assert method.ConceptCodeSequence[0].CodeValue == "IMGPREDICTED"
    parameters = [i.TextValue for name, i in conclusions if name == "Algorithm Parameters"]
    assert "intended_use=demo" in parameters


def test_a_childs_radiograph_gets_no_prediction_and_no_adult_cut_offs(tmp_path):
    child = Patient("CXR-3", "Phantom^Child", "M", 9, 1.32, 28.0)
    path = write_study(tmp_path, child)
    profiles = load_profiles([bundle_profiles(tmp_path)])
    runner = Runner(pipelines=configured_pipelines(profiles))
    output = runner.run("cxr_sarcopenia", [path], tmp_path / "out", volume=load_radiograph(path))
    quantities = {r.quantity: r for r in output.result_rows()}
    assert not {"alm", "hgs", "crt", "almi", "sarcopenia_probability"} & set(quantities)
    assert quantities["sarcopenia_ewgsop2"].text == "not evaluable"
    assert any("model is for adults" in n for n in output.assessment.notes)
    texts = sr_texts(pydicom.dcmread(tmp_path / "out" / "sr.dcm"))
    assert any("9 years old; the cut-offs are for adults" in t for t in texts)


def test_index_rows_are_the_sr_rows(with_bundle):
    out, index = with_bundle
    sr = pydicom.dcmread(next(out.rglob("sr.dcm")))
    stored = [
        ResultRow(r.structure, r.quantity, r.value, r.unit, r.text)
        for r in index.query_results(ResultFilter(pipeline="cxr_sarcopenia"))
    ]
    recovered = rows_from_sr(sr)
    assert stored and [(r.quantity, r.unit, r.text) for r in stored] == [
        (r.quantity, r.unit, r.text) for r in recovered
    ]
    for got, want in zip(recovered, stored, strict=True):
        expected = None if want.value is None else pytest.approx(want.value, rel=1e-9)
        assert got.value == expected, got.quantity


def test_sr_passes_dciodvfy(with_bundle):
    out, _ = with_bundle
    assert dciodvfy_errors(next(out.rglob("sr.dcm"))) == []
    assert dciodvfy_errors(next(out.rglob("report.dcm"))) == []


def test_without_weight_there_is_no_probability_and_a_note_says_why(tmp_path):
    path = write_study(tmp_path, Patient("CXR-2", "Phantom^Chest", "M", 80, 1.70, None))
    profiles = load_profiles([bundle_profiles(tmp_path)])
    runner = Runner(pipelines=configured_pipelines(profiles))
    output = runner.run("cxr_sarcopenia", [path], tmp_path / "out", volume=load_radiograph(path))
    quantities = {r.quantity for r in output.result_rows()}
    assert {"alm", "alm_sd", "almi", "hgs_sd", "crt"} <= quantities
    assert "sarcopenia_probability" not in quantities and "bmi" not in quantities
    assert any("No sarcopenia probability: BMI unknown" in n for n in output.assessment.notes)
    sr = pydicom.dcmread(tmp_path / "out" / "sr.dcm")
    assert any("No sarcopenia probability" in t for t in sr_texts(sr))


def test_a_pipeline_that_cannot_run_says_why():
    cxr = builtin_pipelines()["cxr_sarcopenia"]
    wrong_task = {"cxr_sarcopenia": replace(cxr, engine="threshold")}
    with pytest.raises(PipelineUnavailable, match="segmentation engine; it needs a regression"):
        pipeline_versions(wrong_task)("cxr_sarcopenia")
    with pytest.raises(PipelineUnavailable, match="segmentation engine; it needs a regression"):
        Runner(pipelines=wrong_task).engine("cxr_sarcopenia")
    missing = replace(cxr, engine="bundle:/nonexistent/bundle")
    version_of = pipeline_versions({"cxr_sarcopenia": missing})
    with pytest.raises(PipelineUnavailable, match="engine cannot be created"):
        version_of("cxr_sarcopenia")
    assert version_of("no_such_pipeline") is None


@pytest.mark.parametrize(
    ("name", "photometric", "age"),
    [("cxr_pa_siim.dcm", "MONOCHROME2", None), ("dx_thorax_small.dcm", "MONOCHROME1", 5)],
)
def test_real_radiographs_route_and_predict_with_the_demo_bundle(
    shared_data, tmp_path, name, photometric, age
):
    """Real files, as scanners send them: an 8-bit JPEG baseline Secondary Capture CR (its
    PatientAge "62" is not valid DICOM, so the age is unknown) and a MONOCHROME1 DX For
    Presentation of a 5-year-old, which is routed and reported but predicts nothing."""
    source = shared_data / "cxr" / name
    assert pydicom.dcmread(source, stop_before_pixels=True).PhotometricInterpretation == photometric
    study = tmp_path / "study"
    study.mkdir()
    (study / name).write_bytes(source.read_bytes())
    settings = load_settings(
        environ={"MYONODE_ROUTING__PROFILES_DIR": str(bundle_profiles(tmp_path))}
    )
    report, index = process_folder(study, tmp_path / "out", settings)
    assert report.jobs_failed == 0, sql(index, "SELECT error FROM jobs")
    assert report.jobs_done == 1, sql(index, "SELECT reason FROM decisions")
    sr_path = next((tmp_path / "out").rglob("sr.dcm"))
    rows = {r.quantity: r for r in rows_from_sr(pydicom.dcmread(sr_path))}
    for key in ("alm", "hgs", "crt"):
        if age is None:
            assert rows[key].value is not None and rows[f"{key}_sd"].value > 0, key
        else:
            assert key not in rows
    if age is not None:
        assert rows["sarcopenia_awgs2019"].text == "not evaluable"
        assert any(f"{age} years old" in t for t in sr_texts(pydicom.dcmread(sr_path)))
    assert dciodvfy_errors(sr_path) == []


def test_a_study_seen_before_its_bundle_was_configured_runs_after_reroute(tmp_path):
    """Configuring a bundle does not reprocess studies by itself (re-sending identical files
    changes nothing); `myonode reroute --not-routed` does, once, and never repeats a done job."""
    write_study(tmp_path / "study", ELDER)
    out = tmp_path / "out"
    with_bundle = load_settings(
        environ={"MYONODE_ROUTING__PROFILES_DIR": str(bundle_profiles(tmp_path))}
    )
    assert process_folder(tmp_path / "study", out, load_settings(environ={}))[0].jobs_done == 0
    assert process_folder(tmp_path / "study", out, with_bundle)[0].jobs_done == 0

    env = {"MYONODE_STORAGE__DATA_DIR": str(out), "PATH": "/usr/bin:/bin"}
    assert myonode("reroute", env=env).returncode == 2  # neither studies nor --not-routed
    assert myonode("reroute", "1.2.3.4", env=env).returncode == 1  # unknown study
    rerouted = myonode("reroute", "--not-routed", env=env)
    assert rerouted.returncode == 0, rerouted.stderr
    [study_uid] = rerouted.stdout.split()

    report, index = process_folder(tmp_path / "study", out, with_bundle)
    assert report.jobs_done == 1 and report.jobs_failed == 0
    [job] = sql(index, "SELECT * FROM jobs")
    assert job["study_uid"] == study_uid and job["pipeline"] == "cxr_sarcopenia"
    assert index.query_results(ResultFilter(pipeline="cxr_sarcopenia"))

    assert myonode("reroute", study_uid, env=env).returncode == 0
    _, index = process_folder(tmp_path / "study", out, with_bundle)
    assert len(sql(index, "SELECT * FROM jobs")) == 1  # routed again, nothing run twice
    [study] = sql(index, "SELECT change_seq, processed_seq FROM studies")
    assert study["change_seq"] == study["processed_seq"]
