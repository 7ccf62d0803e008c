"""A minimal receiving archive (Storage SCP) for the demo: it keeps what the node sends."""

from __future__ import annotations

import threading
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.events import Event

from myonode.dicom import sop
from myonode.receive.scp import set_nodelay
from myonode.store.files import safe_component, write_durably


class StorePeer:
    """Stores every received instance as ``<dir>/<SOPInstanceUID>.dcm``."""

    def __init__(self, directory: Path, ae_title: str = "DEMOPACS") -> None:
        self.directory = Path(directory)
        self.ae_title = ae_title
        self.received: list[Dataset] = []
        self._lock = threading.Lock()
        self.ae = AE(ae_title=ae_title)
        for sop_class in sorted(sop.STORAGE_CLASSES):
            self.ae.add_supported_context(sop_class, list(sop.TRANSFER_SYNTAXES))
        self._server = None

    def start(self, port: int = 0) -> int:
        self._server = self.ae.start_server(
            ("127.0.0.1", port),
            block=False,
            evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_C_STORE, self._on_store)],
        )
        return self._server.server_address[1]

    def _on_store(self, event: Event) -> int:
        dataset = event.dataset
        write_durably(
            self.directory / f"{safe_component(str(dataset.SOPInstanceUID))}.dcm",
            event.encoded_dataset(),
        )
        with self._lock:
            self.received.append(dataset)
        return 0x0000

    def modalities(self) -> list[str]:
        with self._lock:
            return [str(ds.get("Modality", "")) for ds in self.received]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
