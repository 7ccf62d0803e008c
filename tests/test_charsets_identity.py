"""Outputs for sources in any character set, and the identity an archive files them by kept
exactly: the person names of PS3.5's character set examples (pydicom-data's charset files,
their bytes as written there) in CT series, through the real job."""

import logging

import pydicom
import pytest
from pydicom.data import get_charset_files
from pydicom.dataelem import DataElement
from test_outputs import dciodvfy_errors

from myonode.app.demo.synthetic import Patient, abdomen_phantom, write_ct_series
from myonode.dispatch.scu import describe, send_files
from myonode.encode import conform_copied_attributes
from myonode.worker.runner import Runner

from conftest import make_settings
from support import sql

# (charset file, Specific Character Set written in the CT series: None keeps the file's,
# "" writes none at all)
CASES = {
    "japanese-ir87": ("chrH31.dcm", None),
    "japanese-ir13-ir87": ("chrH32.dcm", None),
    "korean-ir149": ("chrI2.dcm", None),
    "chinese-gb18030": ("chrX2.dcm", None),
    "cyrillic": ("chrRuss.dcm", None),
    "latin1-undeclared": ("chrFren.dcm", ""),
    "latin1-single-iso2022-ir100": ("chrGerm.dcm", "ISO 2022 IR 100"),
}


def _charset_example(name: str) -> pydicom.Dataset:
    [path] = [p for p in get_charset_files(name) if p.endswith("/" + name)]
    return pydicom.dcmread(path)


def _series_with_name(directory, example: pydicom.Dataset, charset: str | None, seed: str):
    """A small CT series whose PatientName holds the example's bytes, declared as given."""
    array, geometry = abdomen_phantom(shape=(6, 64, 64), pixel_mm=5.0)
    paths = write_ct_series(array, geometry, directory, Patient(), seed=seed)
    declared = example.SpecificCharacterSet if charset is None else charset
    raw = example.get_item("PatientName").value
    for path in paths:
        ds = pydicom.dcmread(path)
        if declared:
            ds.SpecificCharacterSet = declared
        elif "SpecificCharacterSet" in ds:
            del ds.SpecificCharacterSet
        ds["PatientName"] = DataElement(0x00100010, "PN", raw)
        ds.save_as(path)
    return paths


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_carry_names_in_any_character_set(tmp_path, case):
    name, charset = CASES[case]
    example = _charset_example(name)
    expected = str(_charset_example(name).PatientName)
    if charset == "":  # read undeclared, pydicom's default (ISO_IR 6 as Latin-1) applies
        expected = example.get_item("PatientName").value.decode("latin-1").rstrip()
    paths = _series_with_name(tmp_path / "ct", example, charset, seed=f"charset-{case}")
    source = pydicom.dcmread(paths[0])
    assert source.get_item("PatientName").value == example.get_item("PatientName").value
    output = Runner().run("ct_muscle", paths, tmp_path / "out", [f"test: {case}"])
    names = sorted(f.path.name for f in output.files)
    assert names == ["report.dcm", "seg.dcm", "sr.dcm"]
    for file in output.files:
        ds = pydicom.dcmread(file.path)
        assert ds.SpecificCharacterSet == "ISO_IR 192", file.path.name
        assert str(ds.PatientName) == expected, file.path.name
        assert dciodvfy_errors(file.path) == [], file.path.name


LONG_ID = "ID-" + "0123456789" * 6 + "ABCDEFG"  # 70 characters; LO allows 64
LONG_NAME = "Verylongfamilyname" * 4 + "^Given"  # a 78-character component group; PN allows 64
LONG_DESCRIPTION = "CT abdomen and pelvis without contrast, sarcopenia follow-up, protocol 7"


def test_identity_is_copied_exactly_and_descriptions_truncated(caplog):
    ds = pydicom.Dataset()
    ds.SOPInstanceUID = "1.2.3"
    ds.PatientID = LONG_ID
    ds.PatientName = LONG_NAME
    ds.AccessionNumber = "ACC-0123456789-TOO-LONG"  # SH allows 16
    ds.StudyDescription = LONG_DESCRIPTION
    with caplog.at_level(logging.WARNING):
        conform_copied_attributes([ds])
    assert ds.PatientID == LONG_ID
    assert str(ds.PatientName) == LONG_NAME
    assert ds.AccessionNumber == "ACC-0123456789-TOO-LONG"
    assert ds.StudyDescription == LONG_DESCRIPTION[:64]
    assert "PatientID" in caplog.text and "copied exactly" in caplog.text
    assert "StudyDescription" in caplog.text and "truncated" in caplog.text


def test_long_identity_reaches_the_outputs_byte_for_byte(tmp_path):
    """The job's outputs hold the 70-character PatientID, and dciodvfy finds nothing else to
    object to (the over-long StudyDescription is cut to 64)."""
    array, geometry = abdomen_phantom(shape=(6, 64, 64), pixel_mm=5.0)
    paths = write_ct_series(
        array,
        geometry,
        tmp_path / "ct",
        Patient(patient_id=LONG_ID, name=LONG_NAME),
        seed="long-identity",
        extra={"StudyDescription": LONG_DESCRIPTION},
    )
    source = pydicom.dcmread(paths[0])
    output = Runner().run("ct_muscle", paths, tmp_path / "out", ["test: long identity"])
    for file in output.files:
        ds = pydicom.dcmread(file.path)
        assert ds.get_item("PatientID").value.rstrip(b" ") == LONG_ID.encode()
        assert str(ds.PatientName) == LONG_NAME
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.AccessionNumber == source.AccessionNumber
        assert ds.StudyDescription == LONG_DESCRIPTION[:64]
        errors = dciodvfy_errors(file.path)
        summary = "Error - Dicom dataset contains invalid data values for Value Representations"
        specific = [line for line in errors if line != summary]
        assert any("Patient ID" in line for line in specific), errors
        assert all("Patient ID" in line or "Patient's Name" in line for line in specific), errors


def test_a_multi_valued_accession_is_received_as_sent_and_output_as_one_value(
    tmp_path, node_factory
):
    """AccessionNumber is SH of VM 1, but scanners send ACC1\\ACC2 for an examination done
    for two orders. Before: refused 0xA700 (retried forever). Now it is acknowledged and
    indexed as sent, and the outputs carry the first value, which dciodvfy accepts."""
    array, geometry = abdomen_phantom(shape=(6, 64, 64), pixel_mm=5.0)
    paths = write_ct_series(array, geometry, tmp_path / "ct", seed="two-orders")
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.AccessionNumber = ["ACC1", "ACC2"]
        ds.save_as(path)
    node = node_factory(make_settings(tmp_path, **{"assemble.quiet_seconds": 3600}))
    results = send_files([describe(p) for p in paths], "SCANNER", "MYONODE", "127.0.0.1", node.port)
    assert [r.status for r in results] == [0x0000] * len(paths)
    [study] = sql(node.index, "SELECT accession_number FROM studies")
    assert study["accession_number"] == "ACC1\\ACC2"
    output = Runner().run("ct_muscle", paths, tmp_path / "out", ["test: two orders"])
    for file in output.files:
        ds = pydicom.dcmread(file.path)
        assert ds.AccessionNumber == "ACC1"
        assert not [e for e in dciodvfy_errors(file.path) if "Accession" in e], file.path.name
