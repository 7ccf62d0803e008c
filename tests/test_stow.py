"""STOW-RS destinations: results stored in a real Orthanc (DICOMweb plugin, basic auth) with
the source study's identity, even a 70-character PatientID; a 4xx answer is final, a 5xx
answer or a refused connection is retried; bearer tokens are sent as configured; results of
a source the archive no longer holds are withheld, as with C-STORE."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pydicom
import pytest

from myonode.app.demo.synthetic import Patient, abdomen_phantom, write_ct_series

from conftest import make_settings
from support import Orthanc, free_port, scanner_sends, sql, wait_until

LONG_ID = "ID-" + "0123456789" * 6 + "ABCDEFG"  # 70 characters; LO allows 64
TOKEN = "secret-token-for-the-test"


class _Busy(BaseHTTPRequestHandler):
    """A DICOMweb service that is temporarily unavailable (503), recording what it was sent."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        type(self).seen.append(dict(self.headers))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        return


@pytest.fixture
def busy_service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    _Busy.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Busy.seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def orthanc(tmp_path):
    server = Orthanc(
        tmp_path / "orthanc",
        extra={"AuthenticationEnabled": True, "RegisteredUsers": {"pacs": "pacs-password"}},
    ).start()
    yield server
    server.stop()


def _orthanc_get(orthanc, path: str):
    import requests

    response = requests.get(f"{orthanc.url}{path}", auth=("pacs", "pacs-password"), timeout=10)
    response.raise_for_status()
    return response.json()


def test_stow_destinations_deliver_refuse_and_retry(tmp_path, node_factory, orthanc, busy_service):
    busy_url, busy_seen = busy_service
    array, geometry = abdomen_phantom(shape=(8, 64, 64), pixel_mm=5.0, slice_mm=5.0)
    ct = write_ct_series(
        array, geometry, tmp_path / "ct", Patient(patient_id=LONG_ID), seed="stow-long-id"
    )
    study_uid = str(pydicom.dcmread(ct[0]).StudyInstanceUID)
    scanner_sends(ct, orthanc.ae_title, orthanc.dicom_port)  # the archive holds the source
    web = orthanc.dicomweb
    peers = {
        "PACS": {"kind": "stow-rs", "url": web, "username": "pacs", "password": "pacs-password"},
        "DENIED": {"kind": "stow-rs", "url": web, "username": "pacs", "password": "wrong"},
        "BUSY": {"kind": "stow-rs", "url": busy_url, "token": TOKEN},
        "DOWN": {"kind": "stow-rs", "url": f"http://127.0.0.1:{free_port()}/dicom-web"},
    }
    settings = make_settings(
        tmp_path,
        **{f"peers.{name}": peer for name, peer in peers.items()},
        **{"dispatch.destinations": list(peers)},
    )
    node = node_factory(settings)
    scanner_sends(ct, settings.dicom.ae_title, node.receiver.port)

    def outbox(destination: str) -> list:
        return sql(
            node.index, "SELECT * FROM outbox WHERE destination = ? ORDER BY id", (destination,)
        )

    wait_until(
        lambda: len(outbox("PACS")) == 3 and all(r["state"] == "sent" for r in outbox("PACS")),
        timeout=180,
    )
    # Orthanc files the results with their source: one patient, one study, CT + results.
    [patient] = _orthanc_get(orthanc, "/patients")
    assert _orthanc_get(orthanc, f"/patients/{patient}")["MainDicomTags"]["PatientID"] == LONG_ID
    [study] = _orthanc_get(orthanc, "/studies")
    tags = _orthanc_get(orthanc, f"/studies/{study}")
    assert tags["MainDicomTags"]["StudyInstanceUID"] == study_uid
    modalities = sorted(
        _orthanc_get(orthanc, f"/series/{s}")["MainDicomTags"]["Modality"] for s in tags["Series"]
    )
    assert modalities == ["CT", "DOC", "SEG", "SR"]

    # 401 from Orthanc: final, the answer kept, not retried.
    wait_until(lambda: all(r["state"] == "failed" for r in outbox("DENIED")) and outbox("DENIED"))
    for row in outbox("DENIED"):
        assert row["attempts"] == 1 and row["last_error"].startswith("HTTP 401")

    # 503 and no answer at all: pending, with the error, and tried again.
    for name, error in (("BUSY", "HTTP 503"), ("DOWN", "no response")):
        wait_until(lambda name=name: all(r["attempts"] >= 2 for r in outbox(name)), timeout=30)
        for row in outbox(name):
            assert row["state"] == "pending" and row["last_error"].startswith(error), name
    assert node.index.study_status(study_uid) == "delivery retrying"
    assert busy_seen and all(h.get("Authorization") == f"Bearer {TOKEN}" for h in busy_seen)


def test_stow_destination_with_source_check_withholds_results_of_a_missing_source(
    tmp_path, node_factory, orthanc
):
    """The archive (QIDO-RS) does not hold the measured series: nothing is stored there."""
    array, geometry = abdomen_phantom(shape=(8, 64, 64), pixel_mm=5.0, slice_mm=5.0)
    ct = write_ct_series(array, geometry, tmp_path / "ct", seed="stow-withheld")
    authenticated = orthanc.dicomweb.replace("http://", "http://pacs:pacs-password@")
    settings = make_settings(
        tmp_path,
        **{
            "archive.dicomweb_url": authenticated,
            "peers.PACS": {
                "kind": "stow-rs",
                "url": orthanc.dicomweb,
                "username": "pacs",
                "password": "pacs-password",
                "check_source": True,
            },
            "dispatch.destinations": ["PACS"],
        },
    )
    node = node_factory(settings)
    scanner_sends(ct, settings.dicom.ae_title, node.receiver.port)

    def withheld() -> list:
        rows = sql(node.index, "SELECT * FROM outbox WHERE destination = 'PACS'")
        return len(rows) == 3 and all(r["state"] == "withheld" for r in rows) and rows

    for row in wait_until(withheld, timeout=180):
        assert "no longer in the archive" in row["last_error"]
    assert _orthanc_get(orthanc, "/studies") == []
