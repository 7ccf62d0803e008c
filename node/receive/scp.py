"""The DICOM listener: C-ECHO and C-STORE over pynetdicom.

Each association runs in its own pynetdicom thread. A C-STORE is answered only after
`Ingestor.ingest` has made the instance durable and indexed it, so a success status always
means the instance survives a crash.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from myonode.core.config import DicomSettings
from myonode.dicom import sop
from myonode.receive.ingest import Ingestor, Outcome, Status

log = logging.getLogger(__name__)


def set_nodelay(event: Event) -> None:
    """Disable Nagle's algorithm: it costs ~8x throughput on small DIMSE messages."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _status(code: Status, comment: str | None = None) -> Dataset:
    status = Dataset()
    status.Status = int(code)
    if comment:
        status.ErrorComment = comment[:64]
    return status


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
        self.ae = AE(ae_title=settings.ae_title)
        self.ae.maximum_associations = settings.max_associations
        self.ae.maximum_pdu_size = settings.max_pdu_bytes
        self.ae.network_timeout = settings.network_timeout_s
        self.ae.require_calling_aet = list(settings.allowed_calling_aets)
        self.ae.add_supported_context("1.2.840.10008.1.1")  # Verification
        for sop_class in sorted(sop.STORAGE_CLASSES):
            self.ae.add_supported_context(sop_class, list(sop.TRANSFER_SYNTAXES))
        self._server: ThreadedAssociationServer | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0 to pick a free one)."""
        if self._server is None:
            raise RuntimeError("receiver not started")
        return self._server.server_address[1]

    def start(self) -> None:
        handlers = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        self._server = self.ae.start_server(
            (self.settings.bind, self.settings.port), block=False, evt_handlers=handlers
        )
        log.info("listening as %s on %s:%d", self.settings.ae_title, self.settings.bind, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @staticmethod
    def _on_echo(event: Event) -> int:
        return 0x0000

    def _on_store(self, event: Event) -> Dataset:
        request = event.request
        try:
            outcome = self.ingestor.ingest(
                event.encoded_dataset(),
                calling_aet=event.assoc.requestor.ae_title,
                command_sop_class=str(request.AffectedSOPClassUID or "") or None,
                command_sop_instance=str(request.AffectedSOPInstanceUID or "") or None,
            )
        except Exception:  # never crash an association thread, never report a false success
            log.exception("unexpected error storing an instance")
            outcome = Outcome(Status.OUT_OF_RESOURCES, "internal error; see node log")
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        if outcome.ok:
            return _status(Status.SUCCESS)
        return _status(outcome.status, outcome.reason)
