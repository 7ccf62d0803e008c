"""Log lines carry no credentials, no patient identity, no forged lines and no floods: the
redaction itself, then a canary study with invalid values sent to a running node over a real
association, with every record the process logs (all libraries, DEBUG, Python warnings)
grepped for the canaries."""

from __future__ import annotations

import io
import logging
import warnings

import pydicom
import pytest

from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.core.logs import REDACTED, configure_logging, redact
from myonode.dispatch.scu import describe, send_files

from conftest import make_settings
from support import sql, wait_until


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("GET http://myonode:hunter2@archive:8042/dicom-web/studies", "hunter2"),
        ("archive https://user:p%40ss@host/x failed", "p%40ss"),
        ("QIDO /studies?PatientID=MRN-4711&limit=1", "MRN-4711"),
        ("search 00100020=MRN-4711&00100010=DOE", "MRN-4711"),
        ("query {'PatientName': 'DOE^JOHN', 'Modality': 'CT'}", "DOE^JOHN"),
        ('row {"patient_id": "MRN-4711", "state": "done"}', "MRN-4711"),
        ("header PatientBirthDate: 19470203, Modality: CT", "19470203"),
        ("AccessionNumber=ACC99 refused", "ACC99"),
        ("PatientName 'DOE^JOHN' in 1.2.3 is not a valid PN", "DOE^JOHN"),
        ("element (0010,0010) Patient's Name: 'DOE^JOHN'", "DOE^JOHN"),
        ("Invalid value for VR DA: '1947-02-03'.", "1947-02-03"),
        ("Invalid value for VR PN: b'DOE^JOHN\\x1b'", "DOE^JOHN"),
    ],
)
def test_credentials_and_phi_values_are_redacted(line, secret):
    cleaned = redact(line)
    assert secret not in cleaned and REDACTED in cleaned, cleaned


def test_what_is_not_phi_stays_readable():
    line = "job 3 (ct_muscle) done: 3 outputs; study 1.2.3 series 1.2.3.4 -> ct_muscle"
    assert redact(line) == line
    assert redact("delivered 1.2.3 to calling:ORTHANC") == "delivered 1.2.3 to calling:ORTHANC"


def test_control_characters_cannot_forge_a_line():
    cleaned = redact("refused instance 1.2.3\n2026-01-01 INFO myonode: FORGED\x1b[31m\x00")
    assert "\n" not in cleaned and "\x1b" not in cleaned and "\x00" not in cleaned
    assert "\\x0a2026-01-01 INFO myonode: FORGED\\x1b[31m\\x00" in cleaned


def test_long_lines_are_cut_saying_how_long():
    cleaned = redact("x" * 1_650_000, max_chars=500)
    assert cleaned == "x" * 500 + "... [cut: 1650000 characters in all]"
    secret = redact("x" * 1990 + " http://u:hunter2@archive/", max_chars=500)
    assert "hunter2" not in secret


@pytest.fixture
def log_output():
    """Everything the process logs while the test runs, through the node's own logging setup
    (DEBUG, every library, Python warnings as pydicom emits them)."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        handler = configure_logging(verbose=True, max_line_chars=4000, stream=stream)
        try:
            yield stream
        finally:
            logging.captureWarnings(False)
            root.removeHandler(handler)
            for old in saved[0]:
                root.addHandler(old)
            root.setLevel(saved[1])


def canary_study(directory) -> list:
    """A small CT whose identifying values are canaries, some of them invalid for their VR."""
    array, geometry = abdomen_phantom(shape=(8, 48, 48), pixel_mm=6.0, slice_mm=6.0)
    paths = write_ct_series(array, geometry, directory, seed="canary")
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PatientName = "CANARYNAME^Very\x1bLong" + "X" * 80  # over PN's 64 per group
        ds.PatientID = "CANARYPID-" + "9" * 70  # over LO's 64
        ds.PatientBirthDate = "CANARYBD"  # not a DA
        ds.AccessionNumber = "CANARYACC"
        ds.OtherPatientIDs = "CANARYOTHER"
        ds.save_as(path)
    return paths


def forged_uid_instance(path) -> object:
    """One canary instance whose Study Instance UID carries a newline that would start a
    forged log line: malformed, so refused, and its refusal logged."""
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = ds.StudyInstanceUID + "\nFORGED line"
    forged = path.with_name("forged.dcm")
    ds.save_as(forged)
    return forged


def test_a_canary_study_leaves_no_trace_in_any_log(tmp_path, node_factory, log_output):
    password = "CANARYPASSWORD"
    settings = make_settings(
        tmp_path,
        # An archive that cannot answer: the prior lookup logs its failure (URL, query).
        **{"archive.dicomweb_url": f"http://myonode:{password}@127.0.0.1:9/dicom-web"},
    )
    node = node_factory(settings)
    paths = canary_study(tmp_path / "canary")
    forged = forged_uid_instance(paths[0])
    results = send_files([describe(p) for p in paths], "SCANNER", "MYONODE", "127.0.0.1", node.port)
    assert all(r.ok for r in results)
    [refused] = send_files([describe(forged)], "SCANNER", "MYONODE", "127.0.0.1", node.port)
    assert not refused.ok
    wait_until(lambda: sql(node.index, "SELECT state FROM jobs WHERE state IN ('done','failed')"))
    text = log_output.getvalue()
    assert "prior lookup failed" in text  # the archive's failure was logged...
    assert "study " in text and "series" in text  # ...and the routing of the study
    assert "CANARY" not in text, [line for line in text.splitlines() if "CANARY" in line]
    assert not [line for line in text.splitlines() if line.startswith("FORGED")]
    assert max(len(line) for line in text.splitlines()) <= 4000 + 40
