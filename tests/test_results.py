"""Results: the index query, the REST API, an archive (real Orthanc) and change since prior."""

import json

import pydicom
import pytest

from myonode.app.demo.synthetic import Patient, abdomen_phantom, write_ct_series
from myonode.dispatch.scu import describe, send_files
from myonode.store.records import ResultFilter, records_csv

from conftest import make_settings
from support import Orthanc, http_get, myonode, sql, sr_texts, wait_until

PATIENT = Patient(patient_id="MYO-LONG-1", sex="F", age_years=66, height_m=1.62, weight_kg=70.0)


def write_study(directory, pixel_mm: float, date: str, seed: str):
    array, geometry = abdomen_phantom(shape=(8, 80, 80), pixel_mm=pixel_mm, slice_mm=5.0)
    return write_ct_series(
        array,
        geometry,
        directory,
        PATIENT,
        seed=seed,
        extra={"StudyDate": date, "SeriesDate": date, "ContentDate": date},
    )


@pytest.fixture
def orthanc(tmp_path):
    server = Orthanc(tmp_path / "orthanc").start()
    yield server
    server.stop()


def process(tmp_path, node_factory, orthanc, name, paths):
    settings = make_settings(tmp_path / name, **{"archive.dicomweb_url": orthanc.dicomweb})
    node = node_factory(settings, peers={orthanc.ae_title: orthanc.dicom_port})
    assert all(
        r.ok
        for r in send_files(
            [describe(p) for p in paths], orthanc.ae_title, "MYONODE", "127.0.0.1", node.port
        )
    )
    wait_until(lambda: node.index.counts()["outbox"].get("sent") == 3, timeout=120)
    return node


def test_archive_results_priors_and_api(tmp_path, node_factory, orthanc):
    first = write_study(tmp_path / "s1", 2.0, "20250115", "long-1")
    second = write_study(tmp_path / "s2", 1.9, "20260115", "long-2")
    node1 = process(tmp_path, node_factory, orthanc, "node1", first)
    # A second node with an empty index: the prior can only come from the archive.
    node2 = process(tmp_path, node_factory, orthanc, "node2", second)

    [sr_path] = [
        r["path"]
        for r in sql(node2.index, "SELECT path FROM outbox")
        if pydicom.dcmread(r["path"]).Modality == "SR"
    ]
    records = node2.index.query_results(ResultFilter(quantity="mass_change"))
    assert records, "no change since prior was computed"
    prior = {r.structure: r.value for r in node1.index.query_results(ResultFilter(quantity="mass"))}
    now = {r.structure: r.value for r in node2.index.query_results(ResultFilter(quantity="mass"))}
    for record in records:
        assert record.value == pytest.approx(
            now[record.structure] - prior[record.structure], rel=1e-6
        )
    rates = node2.index.query_results(ResultFilter(quantity="mass_change_rate"))
    assert rates[0].value == pytest.approx(records[0].value / (365 / 365.25), rel=1e-6)
    assert any(t.startswith("Change of") for t in sr_texts(pydicom.dcmread(sr_path)))

    # The archive (QIDO-RS + WADO-RS) returns the same table as the node's own index.
    local = [r for n in (node1, node2) for r in n.index.query_results(ResultFilter())]
    archived = myonode(
        "results",
        "--from-archive",
        orthanc.dicomweb,
        "--patient",
        PATIENT.patient_id,
        "--format",
        "json",
    )
    assert archived.returncode == 0, archived.stderr
    remote = json.loads(archived.stdout)
    key = lambda r: (r["study_uid"], r["structure"], r["quantity"])  # noqa: E731
    assert sorted(map(key, remote)) == sorted(key(r.__dict__) for r in local)
    by_key = {key(r.__dict__): r for r in local}
    for row in remote:
        want = by_key[key(row)]
        assert row["patient_id"] == want.patient_id and row["study_date"] == want.study_date
        assert row["pipeline"] == want.pipeline == "ct_muscle"
        assert row["qc"] == want.qc  # the SR carries each structure's QC verdict
        assert (row["qc"] in ("pass", "review", "fail")) == bool(row["structure"])
        if want.value is None:
            assert row["text"] == want.text
        else:
            assert row["value"] == pytest.approx(want.value, rel=1e-9, abs=1e-9)
    dated = myonode(
        "results",
        "--from-archive",
        orthanc.dicomweb,
        "--since",
        "2026-01-01",
        "--quantity",
        "mass",
        "--format",
        "csv",
    )
    assert dated.returncode == 0, dated.stderr
    assert "20250115" not in dated.stdout and dated.stdout.count("20260115") >= 1

    # The REST API serves the index with the same filters.
    base = f"http://127.0.0.1:{node2.web.port}/api"
    with http_get(f"{base}/results?quantity=mass&format=csv") as response:
        body = response.read().decode()
    assert body == records_csv(node2.index.query_results(ResultFilter(quantity="mass")))
    study_uid = sql(node2.index, "SELECT study_uid FROM studies")[0][0]
    with http_get(f"{base}/studies/{study_uid}") as response:
        detail = json.load(response)
    assert detail["decisions"][0]["selected"] == 1
    assert {row["state"] for row in detail["outbox"]} == {"sent"}


def test_results_cli_filters_and_formats(tmp_path, ct_series):
    out = tmp_path / "out"
    assert myonode("process", ct_series[0].parent, "--out", out).returncode == 0
    env_args = ["--config", tmp_path / "c.yaml"]
    (tmp_path / "c.yaml").write_text(f"storage:\n  data_dir: {out}\n")
    table = myonode(*env_args, "results", "--quantity", "mass")
    assert table.returncode == 0 and "mass" in table.stdout
    as_json = json.loads(myonode(*env_args, "results", "--format", "json").stdout)
    assert {"volume", "mass", "bmi", "sarcopenia_ewgsop2", "qc"} <= {r["quantity"] for r in as_json}
    assert all(r["qc"] in ("pass", "review", "fail") for r in as_json if r["structure"])
    none = json.loads(
        myonode(*env_args, "results", "--patient", "nobody", "--format", "json").stdout
    )
    assert none == []
    later = json.loads(
        myonode(*env_args, "results", "--since", "2027-01-01", "--format", "json").stdout
    )
    assert later == []
    csv = myonode(*env_args, "results", "--structure", "muscle_density_tissue", "--format", "csv")
    lines = csv.stdout.strip().splitlines()
    assert lines[0].startswith("study_uid,patient_id") and lines[0].endswith(",text,qc")
    assert all("muscle_density_tissue" in x for x in lines[1:])
    bad = myonode(*env_args, "results", "--since", "yesterday")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr
