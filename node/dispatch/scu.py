"""C-STORE SCU: send Part 10 files, bytes as they are, to a peer.

Used by `myonode send` and by the dispatcher. Files are sent without decoding
(pynetdicom's chunked send reads SOP Class/Instance and transfer syntax from the file meta),
so compressed data stays compressed and nothing is re-encoded on the way.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config
from pynetdicom.association import Association

_config.STORE_SEND_CHUNKED_DATASET = True
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: at most 128 presentation contexts per association


class SendError(RuntimeError):
    """The association could not be opened or was lost."""


@dataclass(frozen=True)
class Outgoing:
    path: Path
    sop_class_uid: str
    transfer_syntax: str


@dataclass(frozen=True)
class SendResult:
    path: Path
    status: int | None  # None: no response (association lost)
    comment: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and (self.status == 0 or 0xB000 <= self.status <= 0xBFFF)


def describe(path: Path) -> Outgoing:
    """Read a file's meta header: what a C-STORE of it needs to negotiate."""
    meta = read_file_meta_info(path)
    return Outgoing(Path(path), str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))


def _nodelay(assoc: Association) -> None:
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@contextmanager
def association(
    calling_aet: str,
    called_aet: str,
    host: str,
    port: int,
    contexts: Sequence[tuple[str, str]],
    timeout_s: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> Iterator[Association]:
    """An association proposing `contexts` (SOP class, transfer syntax), released on exit;
    over DICOM TLS when `tls` is given (the peer's certificate is checked against `host`)."""
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    for sop_class, transfer_syntax in contexts:
        ae.add_requested_context(sop_class, transfer_syntax)
    assoc = ae.associate(
        host, port, ae_title=called_aet, tls_args=(tls, host) if tls is not None else None
    )
    if not assoc.is_established:
        raise SendError(f"association with {called_aet}@{host}:{port} was rejected or failed")
    _nodelay(assoc)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def send_files(
    items: Sequence[Outgoing],
    calling_aet: str,
    called_aet: str,
    host: str,
    port: int,
    on_result: Callable[[SendResult], None] | None = None,
    timeout_s: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> list[SendResult]:
    """C-STORE every item; one association per batch of up to 128 presentation contexts."""
    results: list[SendResult] = []
    batches: list[list[Outgoing]] = []
    current: list[Outgoing] = []
    contexts: set[tuple[str, str]] = set()
    for item in items:
        key = (item.sop_class_uid, item.transfer_syntax)
        if key not in contexts and len(contexts) == MAX_CONTEXTS:
            batches.append(current)
            current, contexts = [], set()
        contexts.add(key)
        current.append(item)
    if current:
        batches.append(current)
    for batch in batches:
        contexts = sorted({(i.sop_class_uid, i.transfer_syntax) for i in batch})
        with association(calling_aet, called_aet, host, port, contexts, timeout_s, tls) as assoc:
            for message_id, item in enumerate(batch, start=1):
                if not assoc.is_established:
                    raise SendError(f"association with {called_aet}@{host}:{port} was lost")
                try:
                    response = assoc.send_c_store(item.path, msg_id=message_id % 65536)
                except ValueError as exc:  # e.g. no accepted presentation context
                    result = SendResult(item.path, None, str(exc))
                else:
                    status = response.get("Status") if response else None
                    result = SendResult(
                        item.path,
                        int(status) if status is not None else None,
                        str(response.get("ErrorComment", "")) if response else "no response",
                    )
                results.append(result)
                if on_result is not None:
                    on_result(result)
    return results
