"""Runs the REST API (and later the dashboard) in a background thread beside the DICOM node."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI


class WebServer:
    def __init__(self, app: FastAPI, bind: str, port: int) -> None:
        # log_config=None: uvicorn's records go through the root's redacting handler.
        config = uvicorn.Config(
            app, host=bind, port=port, log_level="warning", lifespan="off", log_config=None
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    def start(self, timeout_s: float = 20.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start (is the port in use?)")
            time.sleep(0.02)

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
