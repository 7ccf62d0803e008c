"""Bounds at the DICOM upper layer, applied before anything is buffered.

pynetdicom reads a whole PDU into memory once it has read its 6-byte header, whatever length
the header claims, and (unless told otherwise) collects a C-STORE's data set in memory. Two
hooks bound that:

- `install_pdu_limit` replaces the DUL's PDU reader with one that checks the claimed length
  against a per-type limit *before* reading the body (an A-ASSOCIATE-RQ claiming 4 GiB is
  aborted after 6 bytes, before the calling-AE allow-list could even apply);
- `Spool` receives a C-STORE's data set straight into a temporary file in the instance store
  as P-DATA arrives (pynetdicom's chunked receive, with the temporary file supplied here),
  hashing it on the way and discarding bytes past the size limit, so memory per association
  stays at one PDU and the accepted file is renamed into place without a copy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

from pynetdicom import _config, dimse_messages
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider

from myonode.store.files import make_private_dirs

log = logging.getLogger(__name__)

# PDU types (PS3.8 9.3): the A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF, A-RELEASE and A-ABORT.
_ASSOCIATE_RQ, _ASSOCIATE_AC, _P_DATA = 0x01, 0x02, 0x04
_PDU_TYPES = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07)
_PDU_LIMITS: dict[int, int] = {}
_DEFAULT_PDU_LIMIT = 64 * 2**10  # release, abort, reject: a few bytes in practice
_install_lock = threading.Lock()


def install_pdu_limit(associate_bytes: int, data_bytes: int) -> None:
    """Abort any association whose peer announces a PDU longer than the limit for its type.

    `data_bytes` bounds P-DATA-TF PDUs: a peer must respect the maximum PDU length the node
    announced, so a longer one is a protocol violation, not data to buffer.
    """
    with _install_lock:
        _PDU_LIMITS.update(
            {_ASSOCIATE_RQ: associate_bytes, _ASSOCIATE_AC: associate_bytes, _P_DATA: data_bytes}
        )
        if DULServiceProvider._read_pdu_data is not _read_pdu_data:
            DULServiceProvider._read_pdu_data = _read_pdu_data  # type: ignore[method-assign]


def _read_pdu_data(self: DULServiceProvider) -> None:
    """pynetdicom's PDU reader with the claimed length checked before the body is read, and
    the body read straight into the PDU's buffer."""
    sock = self.socket
    try:
        header = bytes(sock.recv(6))
        pdu_type, _, length = struct.unpack(">BBL", header)
    except (OSError, TimeoutError, struct.error):
        self.event_queue.put("Evt17")  # transport connection closed
        return
    if pdu_type not in _PDU_TYPES:
        log.warning("unknown PDU type 0x%02X from %s: aborting", pdu_type, _peer(self))
        self.event_queue.put("Evt19")  # invalid PDU: A-ABORT
        return
    limit = _PDU_LIMITS.get(pdu_type, _DEFAULT_PDU_LIMIT)
    if length > limit:
        log.warning(
            "PDU type 0x%02X of %d bytes from %s exceeds the %d-byte limit: aborting",
            pdu_type,
            length,
            _peer(self),
            limit,
        )
        self.event_queue.put("Evt19")
        return
    pdu_bytes = bytearray(6 + length)
    pdu_bytes[:6] = header
    try:
        complete = _receive_into(sock.socket, memoryview(pdu_bytes)[6:])
    except (OSError, TimeoutError, AttributeError):  # AttributeError: the socket is gone
        complete = False
    if not complete:
        self.event_queue.put("Evt17")
        return
    try:
        pdu, event = self._decode_pdu(pdu_bytes)
    except Exception:  # a malformed PDU ends the association, never the process
        log.warning("undecodable PDU type 0x%02X from %s: aborting", pdu_type, _peer(self))
        self.event_queue.put("Evt19")
        return
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)


def _receive_into(sock: Any, view: memoryview) -> bool:
    """Fill `view` from the socket, as much per system call as the kernel has; False if the
    peer closed first. (pynetdicom reads 4 KiB per call: 128 calls, each a poll and a recv,
    and a copy per 512 KiB instance; this is one or a few.)"""
    received = 0
    while received < len(view):
        count = sock.recv_into(view[received:])
        if count == 0:
            return False
        received += count
    return True


def _peer(dul: DULServiceProvider) -> str:
    try:
        info = dul.assoc.requestor.address_info
        return f"{info.address}:{info.port}"
    except Exception:
        return "<unknown peer>"


class SpoolFile:
    """The file one C-STORE data set streams into (the interface pynetdicom writes through)."""

    def __init__(self, directory: Path, max_bytes: int, owner: Any = None) -> None:
        self.owner = owner  # the association receiving it
        self.max_bytes = max_bytes
        self.size = 0
        self.overflowed = False
        self.error: OSError | None = None  # e.g. ENOSPC: the rest is read and dropped
        self._hash = hashlib.sha256()
        self.file = self  # pynetdicom calls `.file.flush()` after each fragment
        try:
            make_private_dirs(directory)  # patient data: the node's alone (0700)
            self._fd, self.name = tempfile.mkstemp(
                dir=directory, prefix=".incoming-", suffix=".part"
            )
        except OSError as exc:
            self._fd, self.name, self.error = -1, str(directory / f".failed-{id(self)}"), exc

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.overflowed or self.error is not None:
            return len(data)
        if self.size + len(data) > self.max_bytes:
            self.overflowed = True  # keep reading the association, stop keeping its bytes
            os.ftruncate(self._fd, 0)
            return len(data)
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self.error = exc
            os.ftruncate(self._fd, 0)
            return len(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered in user space: each write is a system call."""

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        self.close()
        Path(self.name).unlink(missing_ok=True)


class Spool:
    """Supplies `SpoolFile`s to pynetdicom's chunked C-STORE receive, per application entity.

    pynetdicom creates the temporary file deep in its DIMSE decoder, in the association's DUL
    thread; the spool registered for that association's AE decides where it goes and how big
    it may grow. Any other AE in the process (an SCU receiving nothing) keeps the default.
    """

    _by_ae: ClassVar[dict[int, Spool]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._open: dict[str, SpoolFile] = {}

    def attach(self, ae: Any) -> None:
        with Spool._lock:
            Spool._by_ae[id(ae)] = self
            if not isinstance(dimse_messages._config, _PerAEConfig):
                dimse_messages._config = _PerAEConfig()  # type: ignore[assignment]
            dimse_messages.NamedTemporaryFile = _named_temporary_file  # type: ignore[attr-defined]
            dimse_messages.write_file_meta_info = _write_file_meta  # type: ignore[attr-defined]
            dimse_messages.decode = _decode_command  # type: ignore[attr-defined]
            Association._serve_request = _serve_request  # type: ignore[method-assign]

    def detach(self, ae: Any) -> None:
        with Spool._lock:
            Spool._by_ae.pop(id(ae), None)

    def open(self, owner: Any) -> SpoolFile:
        spool_file = SpoolFile(self.directory, self.max_bytes, owner)
        with Spool._lock:
            self._open[spool_file.name] = spool_file
        return spool_file

    def take(self, path: Path | str | None) -> SpoolFile | None:
        """The spool file pynetdicom wrote at `path`; the caller now owns it."""
        if path is None:
            return None
        with Spool._lock:
            return self._open.pop(str(path), None)

    def discard_owned(self, owner: Any) -> None:
        """Delete what an association left half-received (aborted mid-C-STORE)."""
        with Spool._lock:
            left = [f for f in self._open.values() if f.owner is owner]
            for spool_file in left:
                del self._open[spool_file.name]
        for spool_file in left:
            spool_file.discard()

    def discard_all(self) -> None:
        with Spool._lock:
            left, self._open = list(self._open.values()), {}
        for spool_file in left:
            spool_file.discard()


def _write_file_meta(fp: Any, file_meta: Any, enforce_standard: bool = True) -> None:
    """Write the spooled file's meta even when the C-STORE command's UIDs are empty (pydicom
    refuses): the DIMSE decoder would otherwise die in the DUL thread and the sender would
    get no answer at all. The receiver answers such a command with a failure status."""
    try:
        _original_write_file_meta(fp, file_meta, enforce_standard)
    except (AttributeError, ValueError):
        if not isinstance(fp, SpoolFile):
            raise
        _original_write_file_meta(fp, file_meta, enforce_standard=False)


_original_write_file_meta = dimse_messages.write_file_meta_info
_original_decode = dimse_messages.decode
_C_STORE_RQ = 0x0001


def _decode_command(stream: Any, is_implicit: bool, is_little: bool) -> Any:
    """Decode a command set; a C-STORE-RQ without Affected SOP Class/Instance UID gets empty
    ones, which the receiver refuses with a status (pynetdicom would die reading them)."""
    command = _original_decode(stream, is_implicit, is_little)
    if command.get("CommandField") == _C_STORE_RQ:
        for keyword in ("AffectedSOPClassUID", "AffectedSOPInstanceUID"):
            if keyword not in command:
                setattr(command, keyword, "")
    return command


_original_serve_request = Association._serve_request
INVALID_OBJECT_INSTANCE = 0x0117


def _serve_request(self: Association, msg: Any, context_id: int) -> None:
    """Answer a C-STORE-RQ whose Affected SOP Class/Instance UID is empty or unreadable with
    0x0117 *Invalid object instance*; pynetdicom would ignore it and leave the sender waiting
    until its timeout."""
    spool = Spool._by_ae.get(id(self.ae))
    if spool is None or not isinstance(msg, C_STORE) or msg.is_valid_request:
        _original_serve_request(self, msg, context_id)
        return
    spooled = spool.take(getattr(msg, "_dataset_path", None))
    if spooled is not None:
        spooled.discard()
    log.warning(
        "refused C-STORE from %s: 0x0117 empty or malformed Affected SOP Class/Instance UID",
        self.requestor.ae_title,
    )
    if msg.MessageID is None:
        return  # nothing to answer to: the association times out as the standard implies
    response = C_STORE()
    response.MessageIDBeingRespondedTo = msg.MessageID
    response.Status = INVALID_OBJECT_INSTANCE
    self.dimse.send_msg(response, context_id)


class _PerAEConfig:
    """pynetdicom's `_config` as the DIMSE decoder sees it: chunked C-STORE receive is on for
    associations of an AE with a spool and as configured for any other (e.g. a demo peer in
    the same process, whose handler reads the data set from memory)."""

    def __getattr__(self, name: str) -> Any:
        if name == "STORE_RECV_CHUNKED_DATASET" and _current_spool() is not None:
            return True
        return getattr(_config, name)


def _current_spool() -> Spool | None:
    thread = threading.current_thread()
    assoc = getattr(thread, "assoc", None) if isinstance(thread, DULServiceProvider) else None
    return Spool._by_ae.get(id(assoc.ae)) if assoc is not None else None


def _named_temporary_file(*args: Any, **kwargs: Any) -> Any:
    spool = _current_spool()
    if spool is None:
        return tempfile.NamedTemporaryFile(*args, **kwargs)
    return spool.open(threading.current_thread().assoc)  # type: ignore[attr-defined]
