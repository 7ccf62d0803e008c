"""Validate, store and index one received instance.

The network receiver and `myonode process` both call `Ingestor.ingest`, so a folder on disk
and a C-STORE get exactly the same checks and the same decisions.

Every instance is first walked within bounds (`limits.check_structure`: nesting depth,
lengths, inflated size), then read fully by pydicom (every attribute but the pixel data decoded,
the pixel data's length checked against Rows x Columns x samples x frames x bits) before 0x0000.

Decisions on bad input (documented in the README):

- unparseable or inconsistent bytes (nesting too deep, a length past its container, an
  invalid VR, a value pydicom cannot decode, a transfer syntax that does not match the pixel
  data's encoding) → 0xC000 *Cannot understand*: a sender must not retry it;
- an empty or missing SOP Class, SOP Instance, Study or Series Instance UID, a dataset whose
  UIDs differ from the C-STORE command, or an image without usable pixel data → 0xA900
  *Data set does not match SOP class*. Such instances are **refused, not repaired**: the node
  never invents identifiers for patient data, because a silently re-identified image can no
  longer be matched with its source. The sender keeps the instance and the log says why;
- an empty or malformed Affected SOP Class/Instance UID in the C-STORE command → 0x0117
  *Invalid object instance* (answered, not left unanswered);
- a SOP class outside the supported storage classes → 0x0122 *SOP class not supported*;
- too large (received or inflated), disk full or below the free-space reserve → 0xA700
  *Out of resources*: only resource problems, which a retry may overcome.

No refusal leaves a file behind.
"""

from __future__ import annotations

import hashlib
import io
import logging
import mmap
import os
import re
import sqlite3
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from myonode.core.config import Settings
from myonode.dicom import sop
from myonode.dicom.headers import json_value, routing_tags
from myonode.receive.commit import GroupCommit
from myonode.receive.limits import Limits, Malformed, TooLarge, check_structure
from myonode.receive.transport import SpoolFile
from myonode.store.dialect import StoreUnavailable
from myonode.store.files import (
    OutOfSpace,
    ensure_free_space,
    fsync_directory,
    make_private_dirs,
    safe_component,
)
from myonode.store.index import Index, InstanceRecord

log = logging.getLogger(__name__)


class Status(IntEnum):
    """DIMSE C-STORE statuses the node returns (PS3.4 B.2.3, PS3.7 C)."""

    SUCCESS = 0x0000
    INVALID_OBJECT_INSTANCE = 0x0117
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
_UID = re.compile(r"^[0-9.]{1,64}$")
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


def study_values(ds: Dataset) -> dict[str, Any]:
    values = {}
    for column, keyword in STUDY_TAGS.items():
        value = json_value(ds.get(keyword))
        if isinstance(value, list):  # a multi-valued attribute, as DICOM writes it
            value = "\\".join(str(v) for v in value)
        values[column] = value if value not in ("", []) else None
    return values


def valid_uid(value: str) -> bool:
    """Digits and dots, 1-64 characters (PS3.5 9.1); trailing NUL/space padding removed."""
    return bool(_UID.match(value))


class _Refusal(Exception):
    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _read_fully(ds: Dataset) -> None:
    """Decode every attribute except the pixel data (whose length is checked instead), so
    what pydicom cannot decode is refused now rather than failing a job later."""
    for tag in list(ds.keys()):
        if tag in _PIXEL_TAGS:
            continue
        element = ds[tag]
        if element.VR == "SQ":
            for item in element.value:
                _read_fully(item)
        else:
            _ = element.value


_PHOTOMETRIC = frozenset(
    {
        "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422",
        "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB",
    }
)  # fmt: skip


def _pixel_description_problem(ds: Dataset, samples: int, bits: int) -> str | None:
    """The Image Pixel attributes a decoder needs to turn native pixel data into an array."""
    missing = [
        keyword
        for keyword in ("SamplesPerPixel", "BitsStored", "PixelRepresentation")
        if ds.get(keyword) is None
    ]
    if missing:
        return f"Image Pixel attributes missing: {', '.join(missing)}"
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    if photometric not in _PHOTOMETRIC:
        return f"Photometric Interpretation {photometric!r} is not a defined term"
    if samples not in (1, 3):
        return f"Samples per Pixel {samples} is not 1 or 3"
    stored = int(ds.get("BitsStored", 0) or 0)
    if not 0 < stored <= bits:
        return f"Bits Stored {stored} does not fit Bits Allocated {bits}"
    if ds.get("PixelRepresentation") not in (0, 1):
        return f"Pixel Representation {ds.get('PixelRepresentation')!r} is not 0 or 1"
    if samples > 1 and ds.get("PlanarConfiguration", 0) not in (0, 1):
        return f"Planar Configuration {ds.get('PlanarConfiguration')!r} is not 0 or 1"
    return None


def _pixel_problem(ds: Dataset, transfer_syntax: UID) -> tuple[str, Status] | None:
    """Why an image dataset's pixel data cannot be used, or None if it looks sound."""
    mismatch = Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return "image SOP class without Pixel Data", mismatch
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not rows or not columns:
        return f"Rows/Columns missing or zero ({rows}x{columns})", mismatch
    if "PixelData" not in ds:
        return None
    raw = ds.get_item("PixelData", keep_deferred=True)  # the length, the value unread
    length = raw.length if hasattr(raw, "length") else len(ds.PixelData or b"")
    encapsulated = length == 0xFFFFFFFF or bool(getattr(raw, "is_undefined_length", False))
    if transfer_syntax.is_compressed != encapsulated:
        return (
            f"transfer syntax {transfer_syntax.name} does not match the pixel data's "
            f"{'encapsulated' if encapsulated else 'native'} encoding",
            Status.CANNOT_UNDERSTAND,
        )
    if encapsulated:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if bits not in (1, 8, 16, 32, 64):
        return f"BitsAllocated {bits} is not a valid value", mismatch
    problem = _pixel_description_problem(ds, samples, bits)
    if problem:
        return problem, mismatch
    expected = (rows * columns * samples * frames * bits + 7) // 8
    if length < expected:
        return (
            f"Pixel Data holds {length} bytes but {rows}x{columns}x{frames} frames of "
            f"{bits}-bit samples need {expected}",
            mismatch,
        )
    return None


def _raise_sync_error(synced: Future[None]) -> None:
    """Wait for an fsync; a failure (EIO, ENOSPC on flush) refuses the instance."""
    error = synced.exception()
    if error is not None:
        raise _Refusal(Status.OUT_OF_RESOURCES, f"cannot store: {error}")


class Ingestor:
    """Turns received bytes into a durable file and an index row, or a refusal with a reason."""

    def __init__(self, settings: Settings, index: Index) -> None:
        self.settings = settings
        self.index = index
        self.root = settings.instances_dir
        dicom = settings.dicom
        self.limits = Limits(
            max_bytes=dicom.max_instance_mb * 2**20,
            max_inflated_bytes=dicom.max_inflated_mb * 2**20,
            max_depth=dicom.max_sequence_depth,
        )
        self._sync_files = settings.storage.sync_instance_files
        self._syncer = ThreadPoolExecutor(dicom.max_associations, thread_name_prefix="fsync")
        self._commits: GroupCommit[tuple[InstanceRecord, dict[str, Any], dict[str, Any]]] = (
            GroupCommit(index.record_instances)
        )

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
        ds: Dataset | None = None
        try:
            ds, transfer_syntax = self._check(
                encoded, io.BytesIO(encoded), command_sop_class, command_sop_instance
            )
            digest = hashlib.sha256(encoded).hexdigest()
            duplicate = self._duplicate(ds, digest)
            if duplicate is not None:
                return duplicate
            if in_place is not None:
                return self._record(
                    ds, transfer_syntax, in_place, len(encoded), digest, calling_aet
                )
            self._ensure_space(len(encoded))
            make_private_dirs(self.root)
            fd, partial = tempfile.mkstemp(dir=self.root, prefix=".incoming-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(encoded)
                    handle.flush()
                    if self._sync_files:
                        os.fsync(handle.fileno())
                return self._place(
                    ds, transfer_syntax, Path(partial), len(encoded), digest, calling_aet
                )
            finally:
                Path(partial).unlink(missing_ok=True)
        except _Refusal as refusal:
            return self._refuse(refusal.status, refusal.reason, calling_aet, ds)

    def ingest_spooled(
        self,
        spooled: SpoolFile,
        calling_aet: str | None = None,
        command_sop_class: str | None = None,
        command_sop_instance: str | None = None,
    ) -> Outcome:
        """Validate and store a C-STORE data set that streamed into `spooled` (a temporary
        file in the instance store): renamed into place when accepted, deleted otherwise."""
        ds: Dataset | None = None
        placed = False
        try:
            if spooled.overflowed:
                raise _Refusal(
                    Status.OUT_OF_RESOURCES,
                    f"instance exceeds dicom.max_instance_mb ({self.limits.max_bytes // 2**20})",
                )
            if spooled.error is not None:
                raise _Refusal(Status.OUT_OF_RESOURCES, f"cannot receive: {spooled.error.strerror}")
            path = Path(spooled.name)
            synced: Future[None] = Future()
            if self._sync_files:
                synced = self._syncer.submit(spooled.fsync)  # the disk works while we parse
            else:
                synced.set_result(None)
            try:
                with path.open("rb") as handle:
                    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                        ds, transfer_syntax = self._check(
                            mapped, handle, command_sop_class, command_sop_instance
                        )
                duplicate = self._duplicate(ds, spooled.sha256)
                if duplicate is not None:
                    return duplicate
                self._ensure_space(0)
                placed = True  # renamed away: never unlink its old name (mkstemp may reuse it)
                return self._place(
                    ds, transfer_syntax, path, spooled.size, spooled.sha256, calling_aet, synced
                )
            finally:
                synced.exception()  # waits: the fsync never outlives the file
        except _Refusal as refusal:
            return self._refuse(refusal.status, refusal.reason, calling_aet, ds)
        except (ValueError, OSError) as exc:  # e.g. an empty file cannot be mapped
            return self._refuse(Status.CANNOT_UNDERSTAND, f"cannot read: {exc}", calling_aet, ds)
        finally:
            spooled.close() if placed else spooled.discard()

    def _check(
        self,
        data: bytes | mmap.mmap,
        source: BinaryIO,
        command_sop_class: str | None,
        command_sop_instance: str | None,
    ) -> tuple[Dataset, UID]:
        refusal: _Refusal | None = None
        try:
            check_structure(data, self.limits)
        except TooLarge as exc:
            refusal = _Refusal(
                Status.OUT_OF_RESOURCES, f"{exc} (dicom.max_instance_mb, dicom.max_inflated_mb)"
            )
        except Malformed as exc:
            refusal = _Refusal(Status.CANNOT_UNDERSTAND, f"cannot parse dataset: {exc}")
        if refusal is not None:  # raised here: no traceback keeps views of a mapped file alive
            raise refusal
        try:
            ds = pydicom.dcmread(source, defer_size=4096)
            transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
            _read_fully(ds)
        except (InvalidDicomError, AttributeError, ValueError, KeyError, EOFError, OSError) as exc:
            raise _Refusal(Status.CANNOT_UNDERSTAND, f"cannot parse dataset: {exc}") from exc
        except Exception as exc:  # pydicom raises many types on corrupt input
            raise _Refusal(
                Status.CANNOT_UNDERSTAND, f"cannot parse dataset: {type(exc).__name__}: {exc}"
            ) from exc
        problem = self._dataset_problem(
            ds, transfer_syntax, command_sop_class, command_sop_instance
        )
        if problem:
            raise _Refusal(problem[1], problem[0])
        return ds, transfer_syntax

    def _dataset_problem(
        self,
        ds: Dataset,
        transfer_syntax: UID,
        command_sop_class: str | None,
        command_sop_instance: str | None,
    ) -> tuple[str, Status] | None:
        mismatch = Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        empty = [kw for kw in _REQUIRED_UIDS if not str(ds.get(kw, "") or "").strip()]
        if empty:
            return f"empty or missing {', '.join(empty)}; the node does not invent UIDs", mismatch
        malformed = [kw for kw in _REQUIRED_UIDS if not _UID.match(str(ds.get(kw)))]
        if malformed:
            return (
                f"malformed {', '.join(malformed)} (not digits and dots, 1-64 characters)",
                mismatch,
            )
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
            return _pixel_problem(ds, transfer_syntax)
        return None

    def _duplicate(self, ds: Dataset, digest: str) -> Outcome | None:
        sop_uid = str(ds.SOPInstanceUID)
        if self.index.instance_sha256(sop_uid) == digest:
            return Outcome(
                Status.SUCCESS,
                "duplicate of a stored instance",
                sop_uid,
                str(ds.StudyInstanceUID),
                True,
            )
        return None

    def _ensure_space(self, size: int) -> None:
        try:
            ensure_free_space(self.root, size, self.settings.storage.min_free_mb * 2**20)
        except OutOfSpace as exc:
            raise _Refusal(Status.OUT_OF_RESOURCES, str(exc.strerror or exc)) from exc

    def _place(
        self,
        ds: Dataset,
        transfer_syntax: UID,
        partial: Path,
        size: int,
        digest: str,
        calling_aet: str | None,
        synced: Future[None] | None = None,
    ) -> Outcome:
        """Rename a partial file into place, then commit it (group commit).

        `synced` is the partial file's fsync, still running. A new name is renamed at once and
        its directory fsynced alongside the file's (two disk flushes in parallel instead of one
        after the other); the index row is written only once both are done, so nothing is
        acknowledged before it is on disk. An existing name (a changed instance re-sent) is
        replaced only once the new bytes are on disk.
        """
        path = (
            self.root
            / safe_component(str(ds.StudyInstanceUID))
            / safe_component(str(ds.SeriesInstanceUID))
            / f"{safe_component(str(ds.SOPInstanceUID))}.dcm"
        )
        early = False
        try:
            make_private_dirs(path.parent)
            early = synced is not None and not path.exists()
            if synced is not None and not early:
                _raise_sync_error(synced)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise _Refusal(Status.OUT_OF_RESOURCES, f"cannot store {path}: {exc}") from exc
        if early:
            assert synced is not None
            waits = [synced]
            if self._sync_files:
                waits.append(self._syncer.submit(fsync_directory, path.parent))
            try:
                for future in waits:
                    _raise_sync_error(future)
            except _Refusal:
                self._forget(path, str(ds.SOPInstanceUID), renamed=True)
                raise
        return self._record(
            ds,
            transfer_syntax,
            path,
            size,
            digest,
            calling_aet,
            renamed=True,
            directory_synced=early or not self._sync_files,
        )

    def _record(
        self,
        ds: Dataset,
        transfer_syntax: UID,
        path: Path,
        size: int,
        digest: str,
        calling_aet: str | None,
        renamed: bool = False,
        directory_synced: bool = False,
    ) -> Outcome:
        sop_uid, study_uid = str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)
        record = InstanceRecord(
            sop_uid=sop_uid,
            sop_class_uid=str(ds.SOPClassUID),
            series_uid=str(ds.SeriesInstanceUID),
            study_uid=study_uid,
            transfer_syntax=str(transfer_syntax),
            path=path,
            size=size,
            sha256=digest,
            calling_aet=calling_aet,
            tags=routing_tags(ds),
        )
        series = {
            "modality": json_value(ds.get("Modality")),
            "series_number": json_value(ds.get("SeriesNumber")),
            "series_description": json_value(ds.get("SeriesDescription")),
        }
        try:
            self._commits.commit(
                (record, study_values(ds), series),
                path.parent if renamed and not directory_synced else None,
            )
        except (OSError, sqlite3.OperationalError) as exc:
            self._forget(path, sop_uid, renamed)
            raise _Refusal(Status.OUT_OF_RESOURCES, f"cannot store {path}: {exc}") from exc
        except Exception:
            self._forget(path, sop_uid, renamed)
            raise
        return Outcome(Status.SUCCESS, "stored", sop_uid, study_uid)

    def _forget(self, path: Path, sop_uid: str, renamed: bool) -> None:
        """Remove a file renamed into place whose index row did not commit: it was never
        acknowledged, so it is never kept (an older row for the same UID keeps its file). A
        store that cannot be asked (PostgreSQL down) holds no row written by this attempt."""
        if not renamed:
            return
        try:
            kept = self.index.instance_sha256(sop_uid) is not None
        except StoreUnavailable:
            kept = False
        if not kept:
            path.unlink(missing_ok=True)

    def refuse_command(
        self, spooled: SpoolFile | None, reason: str, calling_aet: str | None
    ) -> Outcome:
        """Refuse a C-STORE whose command itself is unusable; its data set is discarded."""
        if spooled is not None:
            spooled.discard()
        return self._refuse(Status.INVALID_OBJECT_INSTANCE, reason, calling_aet)

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
