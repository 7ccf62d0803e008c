"""Validate, store and index one received instance.

The network receiver and `myonode process` both call `Ingestor.ingest`, so a folder on disk
and a C-STORE get exactly the same checks and the same decisions.

Decisions on bad input (documented in the README):

- unparseable bytes → 0xC000 *Cannot understand*;
- an empty or missing SOP Class, SOP Instance, Study or Series Instance UID, a dataset whose
  UIDs differ from the C-STORE command, or an image without usable pixel data → 0xA900
  *Data set does not match SOP class*. Such instances are **refused, not repaired**: the node
  never invents identifiers for patient data, because a silently re-identified image can no
  longer be matched with its source. The sender keeps the instance and the log says why;
- a SOP class outside the supported storage classes → 0x0122 *SOP class not supported*;
- too large, disk full or below the free-space reserve → 0xA700 *Out of resources*.
"""

from __future__ import annotations

import hashlib
import io
import logging
import sqlite3
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from myonode.core.config import Settings
from myonode.dicom import sop
from myonode.dicom.headers import json_value, routing_tags
from myonode.store.files import OutOfSpace, ensure_free_space, safe_component, write_durably
from myonode.store.index import Index, InstanceRecord

log = logging.getLogger(__name__)


class Status(IntEnum):
    """DIMSE C-STORE statuses the node returns (PS3.4 B.2.3, PS3.7 C)."""

    SUCCESS = 0x0000
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class Outcome:
    status: Status
    reason: str
    sop_uid: str | None = None
    study_uid: str | None = None
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.status == Status.SUCCESS


STUDY_TAGS = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "patient_sex": "PatientSex",
    "patient_age": "PatientAge",
    "patient_birth_date": "PatientBirthDate",
    "patient_size": "PatientSize",
    "patient_weight": "PatientWeight",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "accession_number": "AccessionNumber",
    "study_description": "StudyDescription",
}
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def study_values(ds: Dataset) -> dict[str, Any]:
    values = {}
    for column, keyword in STUDY_TAGS.items():
        value = json_value(ds.get(keyword))
        values[column] = value if value not in ("", []) else None
    return values


def _pixel_problem(ds: Dataset, transfer_syntax: UID) -> str | None:
    """Why an image dataset's pixel data cannot be used, or None if it looks sound."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return "image SOP class without Pixel Data"
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not rows or not columns:
        return f"Rows/Columns missing or zero ({rows}x{columns})"
    if "PixelData" in ds and not transfer_syntax.is_compressed:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 0) or 0)
        if bits not in (1, 8, 16, 32, 64):
            return f"BitsAllocated {bits} is not a valid value"
        expected = (rows * columns * samples * frames * bits + 7) // 8
        raw = ds.get_item("PixelData")  # deferred: the length without reading the value
        actual = raw.length if hasattr(raw, "length") else len(ds.PixelData or b"")
        if actual < expected:
            return (
                f"Pixel Data holds {actual} bytes but {rows}x{columns}x{frames} frames of "
                f"{bits}-bit samples need {expected}"
            )
    return None


class Ingestor:
    """Turns received bytes into a durable file and an index row, or a refusal with a reason."""

    def __init__(self, settings: Settings, index: Index) -> None:
        self.settings = settings
        self.index = index
        self.root = settings.instances_dir

    def ingest(
        self,
        encoded: bytes,
        calling_aet: str | None = None,
        command_sop_class: str | None = None,
        command_sop_instance: str | None = None,
        in_place: Path | None = None,
    ) -> Outcome:
        """Validate and store one Part 10 encoded instance (preamble + meta + dataset).

        With `in_place`, the bytes already live in that file (`myonode process` on a folder):
        it is validated and indexed where it is instead of being copied into storage.
        """
        limit = self.settings.dicom.max_instance_mb * 2**20
        if len(encoded) > limit:
            return self._refuse(
                Status.OUT_OF_RESOURCES,
                f"instance of {len(encoded) / 2**20:.0f} MiB exceeds dicom.max_instance_mb "
                f"({self.settings.dicom.max_instance_mb})",
                calling_aet,
            )
        try:
            ds = pydicom.dcmread(io.BytesIO(encoded), defer_size=4096)
            transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
        except (InvalidDicomError, AttributeError, ValueError, KeyError, EOFError, OSError) as exc:
            return self._refuse(
                Status.CANNOT_UNDERSTAND, f"cannot parse dataset: {exc}", calling_aet
            )
        except Exception as exc:  # pydicom raises many types on corrupt input
            return self._refuse(
                Status.CANNOT_UNDERSTAND,
                f"cannot parse dataset: {type(exc).__name__}: {exc}",
                calling_aet,
            )
        problem, status = self._dataset_problem(
            ds, transfer_syntax, command_sop_class, command_sop_instance
        )
        if problem:
            return self._refuse(status, problem, calling_aet, ds)
        return self._store(ds, encoded, transfer_syntax, calling_aet, in_place)

    def _dataset_problem(
        self,
        ds: Dataset,
        transfer_syntax: UID,
        command_sop_class: str | None,
        command_sop_instance: str | None,
    ) -> tuple[str | None, Status]:
        mismatch = Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        empty = [kw for kw in _REQUIRED_UIDS if not str(ds.get(kw, "") or "").strip()]
        if empty:
            return f"empty or missing {', '.join(empty)}; the node does not invent UIDs", mismatch
        if command_sop_class and ds.SOPClassUID != command_sop_class:
            return (
                f"dataset SOP Class {ds.SOPClassUID} differs from the C-STORE request's "
                f"{command_sop_class}",
                mismatch,
            )
        if command_sop_instance and ds.SOPInstanceUID != command_sop_instance:
            return (
                f"dataset SOP Instance {ds.SOPInstanceUID} differs from the C-STORE request's "
                f"{command_sop_instance}",
                mismatch,
            )
        if ds.SOPClassUID not in sop.STORAGE_CLASSES:
            return (
                f"SOP class {ds.SOPClassUID} is not one the node stores",
                Status.SOP_CLASS_NOT_SUPPORTED,
            )
        if ds.SOPClassUID in sop.IMAGE_CLASSES:
            problem = _pixel_problem(ds, transfer_syntax)
            if problem:
                return problem, mismatch
        return None, Status.SUCCESS

    def _store(
        self,
        ds: Dataset,
        encoded: bytes,
        transfer_syntax: UID,
        calling_aet: str | None,
        in_place: Path | None,
    ) -> Outcome:
        sop_uid, study_uid = str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)
        digest = hashlib.sha256(encoded).hexdigest()
        if self.index.instance_sha256(sop_uid) == digest:
            return Outcome(
                Status.SUCCESS, "duplicate of a stored instance", sop_uid, study_uid, True
            )
        path = in_place or (
            self.root
            / safe_component(study_uid)
            / safe_component(str(ds.SeriesInstanceUID))
            / f"{safe_component(sop_uid)}.dcm"
        )
        try:
            if in_place is None:
                ensure_free_space(
                    self.root, len(encoded), self.settings.storage.min_free_mb * 2**20
                )
                write_durably(path, encoded)
            record = InstanceRecord(
                sop_uid=sop_uid,
                sop_class_uid=str(ds.SOPClassUID),
                series_uid=str(ds.SeriesInstanceUID),
                study_uid=study_uid,
                transfer_syntax=str(transfer_syntax),
                path=path,
                size=len(encoded),
                sha256=digest,
                calling_aet=calling_aet,
                tags=routing_tags(ds),
            )
            self.index.record_instance(
                record,
                study_values(ds),
                {
                    "modality": json_value(ds.get("Modality")),
                    "series_number": json_value(ds.get("SeriesNumber")),
                    "series_description": json_value(ds.get("SeriesDescription")),
                },
            )
        except OutOfSpace as exc:
            return self._refuse(Status.OUT_OF_RESOURCES, str(exc.strerror or exc), calling_aet, ds)
        except (OSError, sqlite3.OperationalError) as exc:
            return self._refuse(
                Status.OUT_OF_RESOURCES, f"cannot store {path}: {exc}", calling_aet, ds
            )
        return Outcome(Status.SUCCESS, "stored", sop_uid, study_uid)

    @staticmethod
    def _refuse(
        status: Status, reason: str, calling_aet: str | None, ds: Dataset | None = None
    ) -> Outcome:
        sop_uid = str(ds.get("SOPInstanceUID", "") or "") if ds is not None else ""
        if ds is not None and not sop_uid:
            sop_uid = str(ds.file_meta.get("MediaStorageSOPInstanceUID", "") or "")
        log.warning(
            "refused instance %s from %s: 0x%04X %s: %s",
            sop_uid or "<no UID>",
            calling_aet or "<local>",
            status,
            status.name,
            reason,
        )
        return Outcome(status, reason, sop_uid or None)
