"""Validation and storage of single instances, without the network."""

import errno
import hashlib
import io
import logging
import os
from pathlib import Path

import pydicom
import pytest

from myonode.receive.ingest import Ingestor, Status
from myonode.receive.transport import SpoolFile
from myonode.store.index import Index

from conftest import make_settings
from support import sql


def encode(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def ingestor(tmp_path):
    settings = make_settings(tmp_path)
    return Ingestor(settings, Index(settings.index_path))


def test_stores_bytes_as_received_and_indexes(ingestor, ct_series):
    data = ct_series[0].read_bytes()
    outcome = ingestor.ingest(data, calling_aet="SCANNER")
    assert outcome.ok and not outcome.duplicate
    row = sql(ingestor.index, "SELECT * FROM instances")[0]
    assert row["sop_uid"] == outcome.sop_uid
    assert row["calling_aet"] == "SCANNER"
    with open(row["path"], "rb") as stored:
        assert stored.read() == data
    study = ingestor.index.study(outcome.study_uid)
    assert study["change_seq"] == 1 and study["patient_sex"] == "F"


def test_duplicate_is_idempotent_and_changed_content_replaces(ingestor, ct_series):
    data = ct_series[0].read_bytes()
    first = ingestor.ingest(data)
    again = ingestor.ingest(data)
    assert again.ok and again.duplicate
    assert ingestor.index.study(first.study_uid)["change_seq"] == 1
    ds = pydicom.dcmread(ct_series[0])
    ds.SeriesDescription = "corrected"
    replaced = ingestor.ingest(encode(ds))
    assert replaced.ok and not replaced.duplicate
    assert ingestor.index.study(first.study_uid)["change_seq"] == 2
    assert len(sql(ingestor.index, "SELECT * FROM instances")) == 1


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_empty_uid_is_refused_with_reason(ingestor, ct_series, keyword, caplog):
    ds = pydicom.dcmread(ct_series[0])
    setattr(ds, keyword, "")
    with caplog.at_level(logging.WARNING):
        outcome = ingestor.ingest(encode(ds), calling_aet="MODALITY")
    assert outcome.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert keyword in outcome.reason
    assert keyword in caplog.text and "MODALITY" in caplog.text
    assert not sql(ingestor.index, "SELECT * FROM instances")


def test_real_series_with_empty_uids_is_refused(ingestor, shared_data):
    for path in sorted((shared_data / "ct" / "totalseg_dicom_series").iterdir()):
        outcome = ingestor.ingest(path.read_bytes())
        assert outcome.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        assert "StudyInstanceUID" in outcome.reason
    assert not sql(ingestor.index, "SELECT * FROM instances")


def test_image_without_pixel_data_is_refused(ingestor, ct_series):
    ds = pydicom.dcmread(ct_series[0])
    del ds.PixelData
    outcome = ingestor.ingest(encode(ds))
    assert outcome.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "Pixel Data" in outcome.reason


def test_truncated_pixel_data_is_refused(ingestor, ct_series):
    ds = pydicom.dcmread(ct_series[0])
    ds.PixelData = ds.PixelData[:100]
    outcome = ingestor.ingest(encode(ds))
    assert outcome.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "bytes" in outcome.reason


def test_absurd_frame_count_is_refused(ingestor, ct_series):
    ds = pydicom.dcmread(ct_series[0])
    ds.NumberOfFrames = 1_000_000
    outcome = ingestor.ingest(encode(ds))
    assert outcome.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS


def test_garbage_cannot_be_understood(ingestor):
    outcome = ingestor.ingest(b"\0" * 128 + b"DICM" + b"\xff" * 50)
    assert outcome.status == Status.CANNOT_UNDERSTAND
    assert ingestor.ingest(b"not dicom at all").status == Status.CANNOT_UNDERSTAND


def test_unsupported_sop_class(ingestor, ct_series):
    ds = pydicom.dcmread(ct_series[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
    outcome = ingestor.ingest(encode(ds))
    assert outcome.status == Status.SOP_CLASS_NOT_SUPPORTED


def test_command_and_dataset_must_agree(ingestor, ct_series):
    outcome = ingestor.ingest(ct_series[0].read_bytes(), command_sop_instance="1.2.3.4")
    assert outcome.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "differs" in outcome.reason


def test_size_limit_and_free_space_reserve(tmp_path, ct_series):
    small = make_settings(tmp_path, **{"dicom.max_instance_mb": 1})
    ds = pydicom.dcmread(ct_series[0])
    ds.Rows = ds.Columns = 1024
    ds.PixelData = b"\0\0" * 1024 * 1024
    outcome = Ingestor(small, Index(small.index_path)).ingest(encode(ds))
    assert outcome.status == Status.OUT_OF_RESOURCES and "max_instance_mb" in outcome.reason
    full = make_settings(tmp_path, **{"storage.min_free_mb": 2**40})
    outcome = Ingestor(full, Index(full.index_path)).ingest(ct_series[0].read_bytes())
    assert outcome.status == Status.OUT_OF_RESOURCES and "reserve" in outcome.reason


def spool(ingestor: Ingestor, data: bytes, spool_class: type[SpoolFile] = SpoolFile) -> SpoolFile:
    """A data set streamed into the instance store as the receiver's DUL thread writes it."""
    spooled = spool_class(ingestor.root, ingestor.limits.max_bytes)
    spooled.write(data)
    return spooled


def test_spooled_new_and_changed_instances_are_stored_whole(ingestor, ct_series):
    """A new name is renamed before its fsync ends (the directory syncs alongside); a changed
    re-send replaces the stored file only after its own fsync. Either way the stored bytes
    and the index row are those of the last acknowledged C-STORE, and no spool file is left."""
    data = ct_series[0].read_bytes()
    first = ingestor.ingest_spooled(spool(ingestor, data))
    assert first.ok and not first.duplicate
    ds = pydicom.dcmread(ct_series[0])
    ds.SeriesDescription = "corrected"
    changed = encode(ds)
    replaced = ingestor.ingest_spooled(spool(ingestor, changed))
    assert replaced.ok and not replaced.duplicate
    rows = sql(ingestor.index, "SELECT path, sha256 FROM instances")
    assert len(rows) == 1
    assert Path(rows[0]["path"]).read_bytes() == changed
    assert rows[0]["sha256"] == hashlib.sha256(changed).hexdigest()
    assert not list(ingestor.root.rglob(".incoming-*"))


class _FailingDisk(SpoolFile):
    def fsync(self) -> None:
        raise OSError(errno.EIO, "Input/output error")


def test_spooled_instance_whose_fsync_fails_is_refused_without_trace(ingestor, ct_series):
    """An fsync error (the disk lost the write) refuses with 0xA700, after the early rename
    too: no file under the instance store and no index row."""
    outcome = ingestor.ingest_spooled(spool(ingestor, ct_series[0].read_bytes(), _FailingDisk))
    assert outcome.status == Status.OUT_OF_RESOURCES and "Input/output error" in outcome.reason
    assert sql(ingestor.index, "SELECT * FROM instances") == []
    assert [p for p in ingestor.root.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("sync_files", [True, False])
def test_file_syncs_by_default_and_only_the_index_when_told(
    tmp_path, ct_series, sync_files, monkeypatch
):
    """By default every stored file and its directory are fsynced before the answer;
    `storage.sync_instance_files: false` (Orthanc's durability, for comparisons) syncs only
    the index (SQLite syncs its own files, not through os.fsync)."""
    settings = make_settings(tmp_path, **{"storage.sync_instance_files": sync_files})
    ingestor = Ingestor(settings, Index(settings.index_path))
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    outcomes = [ingestor.ingest_spooled(spool(ingestor, p.read_bytes())) for p in ct_series]
    monkeypatch.undo()
    assert all(outcome.ok for outcome in outcomes)
    assert len(sql(ingestor.index, "SELECT * FROM instances")) == len(ct_series)
    assert len(synced) == (2 * len(ct_series) if sync_files else 0)
