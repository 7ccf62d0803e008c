"""The DICOM listener: C-ECHO and C-STORE over pynetdicom, optionally over DICOM TLS.

Each association runs in its own pynetdicom thread. A C-STORE's data set streams into a
temporary file in the instance store (`transport.Spool`), and is answered only after
`Ingestor.ingest_spooled` has made it durable and indexed it, so a success status always
means the instance survives a crash, and a refusal leaves no file behind.

Before anything is buffered: PDU lengths are checked against their limits
(`transport.install_pdu_limit`); connections beyond `max_associations_per_address` from one
address (or twice `max_associations` in all) are closed on accept; the TLS handshake runs in
the connection's own thread with a timeout, never in the accept loop. At the A-ASSOCIATE-RQ,
`policy.Admission` checks the called AE title, the allow-list (AE title bound to a network and
certificate) and the per-AE limit. An association idle for `idle_timeout_s` is aborted.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from myonode.core.config import DicomSettings
from myonode.core.tls import server_context
from myonode.dicom import sop
from myonode.receive.ingest import Ingestor, Outcome, Status, valid_uid
from myonode.receive.policy import Admission, Caller, subject_common_name
from myonode.receive.transport import Spool, install_pdu_limit

log = logging.getLogger(__name__)


def set_nodelay(event: Event) -> None:
    """Disable Nagle's algorithm: it costs ~8x throughput on small DIMSE messages."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _status(code: Status, comment: str | None = None) -> Dataset:
    status = Dataset()
    status.Status = int(code)
    if comment:  # LO: no backslash (value delimiter), no control characters, 64 at most
        printable = "".join(c if c.isprintable() and c != "\\" else "?" for c in comment)
        status.ErrorComment = printable[:64]
    return status


def _restart_idle_timer(assoc: Association) -> None:
    """pynetdicom's idle timer runs from the last PDU received and is checked once the
    handler returns: the node's own work on a C-STORE (durable write, index commit) would
    count as the peer's silence and abort the association just after its answer."""
    assoc.dul._idle_timer.restart()


def _acceptors(ae: AE) -> list[Association]:
    return [assoc for assoc in ae.active_associations if assoc.is_acceptor]


class _Server(ThreadedAssociationServer):
    """pynetdicom's threaded server with a real listen backlog, a per-address connection
    limit applied on accept, and the TLS handshake moved out of the accept loop."""

    settings: DicomSettings

    def server_activate(self) -> None:
        assert self.socket is not None
        self.socket.listen(self.settings.listen_backlog)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.settimeout(self.settings.network_timeout_s)
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        address = client_address[0]
        acceptors = _acceptors(self.ae)
        same = sum(1 for assoc in acceptors if _address(assoc) == address)
        if same >= self.settings.max_associations_per_address:
            log.warning(
                "connection from %s closed: %d associations from that address "
                "(dicom.max_associations_per_address)",
                address,
                same,
            )
            return False
        if len(acceptors) >= 2 * self.settings.max_associations:
            log.warning("connection from %s closed: %d connections open", address, len(acceptors))
            return False
        return True


def _address(assoc: Association) -> str | None:
    try:
        return str(assoc.requestor.address_info.address)
    except AttributeError:
        return None


class Receiver:
    """A Storage SCP + Verification SCP bound to the configured address."""

    def __init__(
        self,
        settings: DicomSettings,
        ingestor: Ingestor,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.on_outcome = on_outcome  # e.g. metrics: every C-STORE's outcome
        self.admission = Admission(settings)
        self.spool = Spool(ingestor.root, ingestor.limits.max_bytes)
        self.ae = AE(ae_title=settings.ae_title)
        self.ae.maximum_associations = settings.max_associations
        self.ae.maximum_pdu_size = settings.max_pdu_bytes
        self.ae.network_timeout = settings.idle_timeout_s  # pynetdicom's idle timer
        self.ae.acse_timeout = settings.idle_timeout_s  # connected, no A-ASSOCIATE-RQ yet
        self.ae.add_supported_context("1.2.840.10008.1.1")  # Verification
        for sop_class in sorted(sop.STORAGE_CLASSES):
            self.ae.add_supported_context(sop_class, list(sop.TRANSFER_SYNTAXES))
        self._ssl = server_context(settings.tls) if settings.tls.enabled else None
        self._server: _Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0 to pick a free one)."""
        if self._server is None:
            raise RuntimeError("receiver not started")
        return self._server.server_address[1]

    def start(self) -> None:
        install_pdu_limit(self.settings.max_associate_kb * 1024, self.settings.max_pdu_bytes)
        self.spool.attach(self.ae)
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_CONN_CLOSE, self._on_close),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        server_class = type("Server", (_Server,), {"settings": self.settings})
        server = self.ae.make_server(
            (self.settings.bind, self.settings.port),
            ssl_context=self._ssl,
            evt_handlers=handlers,
            server_class=server_class,
        )
        self.ae._servers.append(server)  # pynetdicom's shutdown() removes it from there
        self._server = server
        threading.Thread(target=server.serve_forever, name="dicom-accept", daemon=True).start()
        log.info(
            "listening as %s on %s:%d%s",
            self.settings.ae_title,
            self.settings.bind,
            self.port,
            " (DICOM TLS)" if self._ssl else "",
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        for assoc in _acceptors(self.ae):
            assoc.abort()
        self.spool.detach(self.ae)
        self.spool.discard_all()

    def _on_connection(self, event: Event) -> None:
        """In the connection's own thread: TCP_NODELAY, then the TLS handshake (bounded by
        the network timeout) so a silent client never holds the accept loop."""
        set_nodelay(event)
        sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.do_handshake()
            except (OSError, ValueError) as exc:
                log.warning("TLS handshake with %s failed: %s", event.address[0], exc)
                sock.close()  # the association's first read fails and it ends

    def _on_close(self, event: Event) -> None:
        self.spool.discard_owned(event.assoc)

    def _on_requested(self, event: Event) -> None:
        assoc = event.assoc
        request = assoc.requestor.primitive
        sock = assoc.dul.socket.socket if assoc.dul.socket else None
        certificate = peer = None
        if isinstance(sock, ssl.SSLSocket):
            certificate = sock.getpeercert(binary_form=True)
            peer = sock.getpeercert()
        caller = Caller(
            calling_aet=str(request.calling_ae_title),
            called_aet=str(request.called_ae_title),
            address=_address(assoc) or "",
            certificate=certificate,
        )
        others = [
            str(other.requestor.ae_title)
            for other in _acceptors(self.ae)
            if other is not assoc and other.is_established
        ]
        rejection = self.admission.reject_reason(caller, others, subject_common_name(peer))
        if rejection is not None:
            (result, source, diagnostic), reason = rejection
            log.warning("association from %s rejected: %s", caller.address, reason)
            assoc.acse.send_reject(result, source, diagnostic)
            assoc.kill()

    @staticmethod
    def _on_echo(event: Event) -> int:
        return 0x0000

    def _on_store(self, event: Event) -> Dataset:
        request = event.request
        try:
            spooled = self.spool.take(getattr(request, "_dataset_path", None))
            command_class = str(request.AffectedSOPClassUID or "") or None
            command_instance = str(request.AffectedSOPInstanceUID or "") or None
            calling = event.assoc.requestor.ae_title
            bad = [
                f"{name} {value!r}"
                for name, value in (("class", command_class), ("instance", command_instance))
                if not valid_uid(value or "")
            ]
            if bad:
                outcome = self.ingestor.refuse_command(
                    spooled, f"C-STORE Affected SOP {' and '.join(bad)} empty or malformed", calling
                )
            elif spooled is None:  # another component turned chunked receive off
                outcome = self.ingestor.ingest(
                    event.encoded_dataset(), calling, command_class, command_instance
                )
            else:
                outcome = self.ingestor.ingest_spooled(
                    spooled, calling, command_class, command_instance
                )
        except Exception:  # never crash an association thread, never report a false success
            log.exception("unexpected error storing an instance")
            outcome = Outcome(Status.OUT_OF_RESOURCES, "internal error; see node log")
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        _restart_idle_timer(event.assoc)
        if outcome.ok:
            return _status(Status.SUCCESS)
        return _status(outcome.status, outcome.reason)
