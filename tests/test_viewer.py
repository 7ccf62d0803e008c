"""The viewer's proxy to the archive (no network: the archive is an httpx MockTransport that
records what reaches it). Only reads below /dicom-web and /wado pass; a path that could leave
them never reaches the archive, whose REST API the proxy's credentials would open."""

import asyncio

import httpx
import pytest
from fastapi.testclient import TestClient

from myonode.app.viewer import create_viewer_app

from conftest import make_settings

ARCHIVE = "http://myonode:secret@archive.test:8042"


@pytest.fixture
def viewer(tmp_path):
    """(the viewer app, the requests that reached the archive)."""
    ohif = tmp_path / "ohif"
    ohif.mkdir()
    (ohif / "index.html").write_text("<html>OHIF</html>")
    settings = make_settings(
        tmp_path,
        **{
            "viewer.ohif_dir": str(ohif),
            "archive.dicomweb_url": f"{ARCHIVE}/dicom-web",
            "archive.wado_uri_url": f"{ARCHIVE}/wado",
        },
    )
    archive = RecordingArchive()
    return create_viewer_app(settings, transport=archive), archive.seen


class RecordingArchive(httpx.AsyncBaseTransport):
    """Answers every request with 200 and keeps it."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(b"[]"))


def raw_get(app, raw_path: bytes, method: str = "GET") -> int:
    """Send a path exactly as given (HTTP clients would normalise dot segments first)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path.decode("latin-1").replace("%2F", "/").replace("%2f", "/"),
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"viewer.test")],
        "client": ("127.0.0.1", 1),
        "server": ("viewer.test", 80),
    }
    status = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    asyncio.run(app(scope, receive, send))
    return status[0]


def test_qido_wado_rs_and_wado_uri_reads_reach_the_archive(viewer):
    app, seen = viewer
    client = TestClient(app)
    uid = "1.2.826.0.1.3680043.8.498.1"
    paths = [
        "/dicom-web/studies?PatientID=MYO-1&limit=25",
        f"/dicom-web/studies/{uid}/series/{uid}.2/metadata",
        f"/dicom-web/studies/{uid}/series/{uid}.2/instances/{uid}.3/frames/1,2",
        f"/dicom-web/studies/{uid}/series/{uid}.2/instances/{uid}.3/bulk/7fe00010",
        f"/wado?requestType=WADO&studyUID={uid}&objectUID={uid}.3",
    ]
    for path in paths:
        assert client.get(path).status_code == 200, path
    assert client.head(f"/dicom-web/studies/{uid}").status_code == 200
    assert [r.url.raw_path.decode() for r in seen[:-1]] == paths
    assert {(r.url.host, r.url.port) for r in seen} == {("archive.test", 8042)}
    assert all(r.headers["authorization"].startswith("Basic ") for r in seen)


@pytest.mark.parametrize(
    "path",
    [
        "/dicom-web/..%2F..%2Ftools%2Fshutdown",
        "/dicom-web/studies/%2E%2E/%2E%2E/tools/shutdown",
        "/dicom-web/studies/..%5C..%5Ctools",
        "/dicom-web/studies%2F..%2F..%2Fsystem",
        "/dicom-web/studies/%252E%252E",
        "/dicom-web/studies//series",
        "/dicom-web/studies/1.2.3/series/?x=1",
    ],
)
def test_paths_that_could_leave_dicomweb_are_refused_before_the_archive(viewer, path):
    app, seen = viewer
    assert TestClient(app).get(path).status_code == 400
    assert seen == []


@pytest.mark.parametrize(
    "raw",
    [
        b"/dicom-web/../tools/shutdown",
        b"/dicom-web/studies/../../modalities/PACS/store",
        b"/dicom-web/./../instances",
        b"/dicom-web/studies/./series",
        b"/dicom-web/studies\\..\\..\\tools",
    ],
)
def test_raw_dot_segments_are_refused_before_the_archive(viewer, raw):
    app, seen = viewer
    assert raw_get(app, raw) == 400
    assert seen == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_only_reads_are_forwarded(viewer, method):
    app, seen = viewer
    client = TestClient(app)
    for path in ("/dicom-web/studies", "/dicom-web/..%2F..%2Ftools%2Fshutdown", "/wado"):
        assert client.request(method, path, content=b"{}").status_code == 405, path
    assert seen == []
