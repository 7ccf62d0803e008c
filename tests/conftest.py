"""Fixtures: settings in a temp dir, generated CT series, the real shared series, a live node."""

from __future__ import annotations

import sys
from pathlib import Path

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from myonode.app.auth import token_digest
from myonode.app.demo.shared_data import shared_data_dir
from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.app.service import Node
from myonode.core.config import Peer, Settings, load_settings
from myonode.dicom.uids import derived_uid

from support import HTTP_TOKEN
from support.servers import PostgresServer


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared real data not found (set MYONODE_TEST_DATA to ../shared/data)")
    return path


def make_settings(tmp_path: Path, **overrides) -> Settings:
    settings = load_settings(
        environ={},
        overrides={
            "storage.data_dir": str(tmp_path / "node"),
            "storage.min_free_mb": 0,
            "dicom.bind": "127.0.0.1",
            "dicom.port": 0,
            "http.port": 0,
            "http.auth.token_sha256": [token_digest(HTTP_TOKEN)],
            "assemble.quiet_seconds": 0.5,
            "assemble.poll_seconds": 0.1,
            "dispatch.poll_seconds": 0.1,
            "dispatch.retry.initial_seconds": 0.2,
            "dispatch.retry.max_seconds": 1.0,
            **overrides,
        },
    )
    return settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server for the session; each test takes a database of its own."""
    pytest.importorskip("psycopg", reason="psycopg (the scale extra) is not installed")
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request) -> str:
    """`store.url` for each store the node supports: empty (SQLite in the data directory) and
    a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
def ct_series(tmp_path: Path) -> list[Path]:
    """A small generated abdomen CT series (8 slices of 64x64) with valid UIDs."""
    array, geometry = abdomen_phantom(shape=(8, 64, 64), pixel_mm=5.0, slice_mm=5.0)
    return write_ct_series(array, geometry, tmp_path / "ct", seed=f"test-{tmp_path.name}")


@pytest.fixture
def real_series_with_uids(tmp_path: Path, shared_data: Path) -> list[Path]:
    """The real 20-slice JPEG 2000 series with its empty UIDs filled in (pixel bytes kept)."""
    source = shared_data / "ct" / "totalseg_dicom_series"
    out = tmp_path / "real"
    out.mkdir()
    paths = []
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = derived_uid("test-real-study")
        ds.SeriesInstanceUID = derived_uid("test-real-series")
        target = out / path.name
        ds.save_as(target)
        paths.append(target)
    return paths


@pytest.fixture
def node_factory():
    """Start in-process nodes; all are stopped at the end of the test."""
    nodes: list[Node] = []

    def start(settings: Settings, peers: dict[str, int] | None = None) -> Node:
        if peers:
            settings = settings.model_copy(
                update={
                    "peers": {aet: Peer(host="127.0.0.1", port=port) for aet, port in peers.items()}
                }
            )
        node = Node(settings)
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()
