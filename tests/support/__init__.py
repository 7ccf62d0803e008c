"""Helpers the tests share: free ports, waiting, and real dcmtk peers started by PID."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from myonode.core.processes import stop_process


def sql(index, statement: str, params: tuple | list = ()) -> list:
    """Rows of a read-only query on a node's store, SQLite (`index.path`) or PostgreSQL (its
    URL; ``?`` parameters as on SQLite): tests inspect the persisted state directly; the node
    itself asks its store's methods."""
    if index.path is None:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(index.dialect.url, row_factory=dict_row) as conn:
            return conn.execute(statement.replace("?", "%s"), params).fetchall()
    conn = sqlite3.connect(f"file:{index.path}?mode=ro", uri=True, timeout=60)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


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
        if self.process is not None:
            stop_process(self.process, grace_s=10)
        self.process = None

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())


def myonode(*args: object, env: dict[str, str] | None = None, timeout: float = 600):
    """Run the `myonode` command line in a process of its own, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "myonode.app.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def scanner_sends(paths: list[Path], called_aet: str, port: int) -> None:
    """C-STORE files as a scanner would: dcmtk storescu, a process of its own."""
    require_tool("storescu")
    completed = subprocess.run(
        ["storescu", "--aetitle", "CT-SCANNER", "--call", called_aet, "127.0.0.1", str(port)]
        + [str(p) for p in paths],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    assert completed.returncode == 0, completed.stderr


def received_modalities(peer: Storescp) -> list[str]:
    """Modalities of the files the peer has received (one it is still writing is left out)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    modalities = []
    for path in peer.files():
        try:
            modalities.append(str(pydicom.dcmread(path, stop_before_pixels=True).Modality))
        except (InvalidDicomError, EOFError, AttributeError):
            continue
    return sorted(modalities)


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

    def _base_config(self) -> dict:
        return {
            "Name": "myonode-test",
            "StorageDirectory": str(self.directory / "storage"),
            "IndexDirectory": str(self.directory / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpsCACertificates": "",
        }

    def write_config(self) -> Path:
        """The configuration Orthanc is started with (a file or a directory of files)."""
        config = {
            **self._base_config(),
            "Plugins": [str(self.PLUGIN_DIR / "libOrthancDicomWeb.so")],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            **self.extra,
        }
        path = self.directory / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def environment(self) -> dict[str, str]:
        return {**os.environ, "TCP_NODELAY": "1"}

    def start(self) -> Orthanc:
        """Start (or restart, on the same ports and storage) the server."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.write_config()
        self.log = (self.directory / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            ["Orthanc", str(path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
        )
        wait_for_port(self.http_port)
        wait_for_port(self.dicom_port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace_s=20)
        self.process = None


REPO = Path(__file__).resolve().parents[2]
SITE_PACKAGES = sysconfig.get_paths()["purelib"]

# The HTTP token of test nodes and viewers (conftest.make_settings configures its SHA-256):
# tests run with authentication on, as deployed.
HTTP_TOKEN = "test-token-" + "0123456789abcdef" * 2
AUTH_HEADERS = {"Authorization": f"Bearer {HTTP_TOKEN}"}


def http_get(url: str, timeout: float = 30.0):
    """urlopen with the test token (a response to read, as urllib's)."""
    import urllib.request

    request = urllib.request.Request(url, headers=AUTH_HEADERS)
    return urllib.request.urlopen(request, timeout=timeout)


def require_python_plugin() -> None:
    if not (Orthanc.PLUGIN_DIR / "libOrthancPython.so").exists():
        pytest.skip("orthanc-python is not installed (Debian package: see .ci/run)")
    if sys.base_prefix != "/usr" or sys.version_info[:2] != (3, 11):
        pytest.skip("the Orthanc Python plugin embeds Debian's Python 3.11: make the venv with it")


class ArchiveOrthanc(Orthanc):
    """Orthanc in the archive role: the repository's orthanc/archive.json, its Python plugin
    forwarding stable studies to a node, and basic authentication, as deployed."""

    USER = "myonode"

    def __init__(
        self,
        directory: Path,
        node_dicom_port: int,
        node_http_port: int,
        extra: dict | None = None,
        password: str | None = None,
        env: dict[str, str] | None = None,
    ):
        """`extra` overrides keys of the site configuration; `env` adds to Orthanc's
        environment (which Orthanc substitutes for ${VAR} in its configuration)."""
        super().__init__(directory, extra=extra)
        require_python_plugin()
        self.node_dicom_port = node_dicom_port
        self.node_http_port = node_http_port
        self.password = password or os.urandom(8).hex()
        self.env = env or {}

    @property
    def authenticated(self) -> str:
        """The HTTP root with credentials, as the node's configuration holds it."""
        return f"http://{self.USER}:{self.password}@127.0.0.1:{self.http_port}"

    def client(self):
        import pyorthanc

        return pyorthanc.Orthanc(self.url, username=self.USER, password=self.password)

    def write_config(self) -> Path:
        config_dir = self.directory / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "orthanc" / "archive.json", config_dir / "archive.json")
        site = {
            **self._base_config(),
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.USER: self.password},
            "StableAge": 1,
            "PythonScript": str(REPO / "orthanc" / "myonode_plugin.py"),
            "DicomModalities": {"MYONODE": ["MYONODE", "127.0.0.1", self.node_dicom_port]},
            "MyoNode": {
                "NodeModality": "MYONODE",
                "NodeUrl": f"http://127.0.0.1:{self.node_http_port}",
                "PollSeconds": 0.3,
            },
            "MyoNodeToken": HTTP_TOKEN,
            **self.extra,
        }
        (config_dir / "site.json").write_text(json.dumps(site, indent=2))
        return config_dir

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "PYTHONPATH": SITE_PACKAGES, **self.env}


def metric(node, name: str, **labels: str) -> float:
    """A sample from the node's /metrics over HTTP (0 when the sample does not exist)."""
    from prometheus_client.parser import text_string_to_metric_families

    with http_get(f"http://127.0.0.1:{node.web.port}/metrics") as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def sr_texts(dataset) -> list[str]:
    """Every TEXT value in an SR content tree."""
    found = []
    for item in dataset.get("ContentSequence", []):
        if "TextValue" in item:
            found.append(str(item.TextValue))
        found += sr_texts(item)
    return found
