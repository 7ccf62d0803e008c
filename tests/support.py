"""Helpers the tests share: free ports, waiting, and real dcmtk peers started by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.1):
    """Poll `condition` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s: {condition}")


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    def accepting() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(accepting, timeout)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package: see .ci/run)")
    return path


class Storescp:
    """dcmtk's storescp as a real receiving peer, on loopback, stopped by its PID."""

    def __init__(self, directory: Path, ae_title: str = "STORESCP", port: int | None = None):
        require_tool("storescp")
        self.directory = directory
        self.ae_title = ae_title
        self.port = port or free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None

    def start(self) -> Storescp:
        self.process = subprocess.Popen(
            [
                "storescp",
                "--aetitle",
                self.ae_title,
                "--output-directory",
                str(self.directory),
                "--accept-all",
                "--unique-filenames",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())


def received_modalities(peer: Storescp) -> list[str]:
    import pydicom

    return sorted(str(pydicom.dcmread(p, stop_before_pixels=True).Modality) for p in peer.files())


RESULT_MODALITIES = ["DOC", "SEG", "SR"]  # the PDF report, the segmentation, the SR


class Orthanc:
    """The Debian Orthanc server with its DICOMweb plugin, on loopback ports, stopped by PID."""

    PLUGIN_DIR = Path("/usr/share/orthanc/plugins")

    def __init__(self, directory: Path, ae_title: str = "ORTHANC", extra: dict | None = None):
        require_tool("Orthanc")
        if not (self.PLUGIN_DIR / "libOrthancDicomWeb.so").exists():
            pytest.skip("orthanc-dicomweb is not installed (Debian package: see .ci/run)")
        self.directory = directory
        self.ae_title = ae_title
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.extra = extra or {}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> Orthanc:
        import json

        self.directory.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "myonode-test",
            "StorageDirectory": str(self.directory / "storage"),
            "IndexDirectory": str(self.directory / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpsCACertificates": "",
            "Plugins": [str(self.PLUGIN_DIR / "libOrthancDicomWeb.so")],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            **self.extra,
        }
        path = self.directory / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        self.log = (self.directory / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            ["Orthanc", str(path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        wait_for_port(self.http_port)
        wait_for_port(self.dicom_port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


def sr_texts(dataset) -> list[str]:
    """Every TEXT value in an SR content tree."""
    found = []
    for item in dataset.get("ContentSequence", []):
        if "TextValue" in item:
            found.append(str(item.TextValue))
        found += sr_texts(item)
    return found
