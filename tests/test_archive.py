"""Orthanc as the archive (real Orthanc with its DICOMweb and Python plugins, configured from
orthanc/): stable studies are forwarded to the node, results land in the same study, and
nothing is lost or re-created when Orthanc restarts or a study is deleted meanwhile."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pydicom
import pytest

from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.dispatch.archive import Archive
from myonode.store.records import ResultFilter

from conftest import make_settings
from support import ArchiveOrthanc, free_port, metric, scanner_sends, sql, wait_until

SLICES = 8


@pytest.fixture
def ct(tmp_path):
    array, geometry = abdomen_phantom(shape=(SLICES, 96, 96), pixel_mm=2.5, slice_mm=5.0)
    return write_ct_series(array, geometry, tmp_path / "ct", seed=f"archive-{tmp_path.name}")


@pytest.fixture
def stack(tmp_path, node_factory):
    """An archive Orthanc and a node that know each other; started per test."""
    dicom_port, http_port = free_port(), free_port()
    orthanc = ArchiveOrthanc(tmp_path / "orthanc", dicom_port, http_port).start()

    def node(quiet_seconds: float = 0.5):
        settings = make_settings(
            tmp_path,
            **{
                "dicom.port": dicom_port,
                "http.port": http_port,
                "assemble.quiet_seconds": quiet_seconds,
                "archive.dicomweb_url": f"{orthanc.authenticated}/dicom-web",
                "peers.ORTHANC": {
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                    "check_source": True,
                },
            },
        )
        return node_factory(settings)

    yield orthanc, node
    orthanc.stop()


def study_modalities(client) -> dict[str, list[str]]:
    """Orthanc study id -> modalities of its series; empty while Orthanc drops the connection
    (it closes kept-alive connections under load: asked again at the next poll, and a dead
    Orthanc still fails the wait)."""
    try:
        return {
            study: sorted(
                client.get_series_id(s)["MainDicomTags"]["Modality"]
                for s in client.get_studies_id(study)["Series"]
            )
            for study in client.get_studies()
        }
    except httpx.TransportError:
        return {}


def status_label(client, study_id: str) -> str | None:
    """The node's status the plugin wrote on the Orthanc study."""
    return client.get_studies_id_metadata(study_id, params={"expand": ""}).get("MyoNodeStatus")


def store_jobs(client) -> list[dict]:
    jobs = [client.get_jobs_id(job) for job in client.get_jobs()]
    return [job for job in jobs if job["Type"] == "DicomModalityStore"]


def test_stable_study_is_forwarded_and_results_land_in_the_same_study(stack, ct):
    orthanc, start_node = stack
    node = start_node()
    client = orthanc.client()
    scanner_sends(ct, "ORTHANC", orthanc.dicom_port)

    wait_until(
        lambda: list(study_modalities(client).values()) == [["CT", "DOC", "SEG", "SR"]],
        timeout=120,
    )
    [study_id] = client.get_studies()
    study_uid = str(pydicom.dcmread(ct[0]).StudyInstanceUID)
    assert client.get_studies_id(study_id)["MainDicomTags"]["StudyInstanceUID"] == study_uid
    wait_until(lambda: status_label(client, study_id) == "done")

    # The results arriving made the study stable again: the plugin must not send them (or the
    # CT) back to the node. Wait for that second stable event and a few plugin cycles.
    def stable_events() -> int:
        changes = client.get_changes(params={"limit": 1000})["Changes"]
        return sum(c["ChangeType"] == "StableStudy" and c["ID"] == study_id for c in changes)

    wait_until(lambda: stable_events() >= 2, timeout=30)
    wait_until(lambda: all(job["State"] == "Success" for job in store_jobs(client)))
    assert len(store_jobs(client)) == 1
    assert node.index.counts()["instances"]["total"] == SLICES
    assert metric(node, "myonode_instances_total", outcome="stored") == SLICES
    assert metric(node, "myonode_jobs", state="done") == 1
    assert metric(node, "myonode_outbox", state="sent") == 3
    assert metric(node, "myonode_job_duration_seconds_count", pipeline="ct_muscle") == 1

    # QIDO-RS finds the SR; `myonode results --from-archive` reads the node's numbers back.
    archive_url = f"{orthanc.authenticated}/dicom-web"
    found = Archive(archive_url).client.search_for_series(search_filters={"Modality": "SR"})
    [description] = [s["0008103E"]["Value"][0] for s in found]
    assert description.startswith("myonode ct_muscle SR")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "myonode.app.cli",
            "results",
            "--from-archive",
            archive_url,
            "--study",
            study_uid,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    remote = {(r["structure"], r["quantity"]): r for r in json.loads(run.stdout)}
    local = node.index.query_results(ResultFilter(study_uid=study_uid))
    assert local and sorted(remote) == sorted((r.structure, r.quantity) for r in local)
    for row in local:
        got = remote[(row.structure, row.quantity)]
        if row.value is None:
            assert got["value"] is None and got["text"] == row.text
        else:
            assert got["value"] == pytest.approx(row.value, rel=1e-9)


def test_results_wait_while_orthanc_is_down_and_arrive_after_its_restart(stack, ct):
    orthanc, start_node = stack
    node = start_node(quiet_seconds=5)  # time to stop Orthanc before the results are ready
    client = orthanc.client()
    scanner_sends(ct, "ORTHANC", orthanc.dicom_port)
    wait_until(lambda: node.index.counts()["instances"].get("total") == SLICES, timeout=60)
    orthanc.stop()

    def retrying():
        rows = sql(node.index, "SELECT * FROM outbox")
        return len(rows) == 3 and all(r["state"] == "pending" and r["last_error"] for r in rows)

    wait_until(retrying, timeout=60)
    assert metric(node, "myonode_outbox_failing") == 3
    study_uid = str(pydicom.dcmread(ct[0]).StudyInstanceUID)
    assert node.index.study_status(study_uid) == "delivery retrying"

    orthanc.start()
    wait_until(lambda: node.index.counts()["outbox"] == {"sent": 3}, timeout=60)
    [(study_id, modalities)] = study_modalities(client).items()
    assert modalities == ["CT", "DOC", "SEG", "SR"]
    # The plugin kept following the study across the restart.
    wait_until(lambda: status_label(client, study_id) == "done")


def test_study_deleted_in_orthanc_while_processing_is_not_recreated(stack, ct):
    orthanc, start_node = stack
    node = start_node(quiet_seconds=3)
    client = orthanc.client()
    scanner_sends(ct, "ORTHANC", orthanc.dicom_port)
    wait_until(lambda: node.index.counts()["instances"].get("total") == SLICES, timeout=60)
    [study_id] = client.get_studies()
    client.delete_studies_id(study_id)

    wait_until(lambda: node.index.counts()["outbox"] == {"withheld": 3}, timeout=60)
    assert node.index.counts()["jobs"] == {"done": 1}
    study_uid = str(pydicom.dcmread(ct[0]).StudyInstanceUID)
    assert node.index.study_status(study_uid) == "withheld"
    reasons = {r["last_error"] for r in sql(node.index, "SELECT last_error FROM outbox")}
    assert len(reasons) == 1 and "no longer in the archive" in reasons.pop()
    assert client.get_studies() == []
    assert all(Path(r["path"]).is_file() for r in sql(node.index, "SELECT path FROM outbox"))
