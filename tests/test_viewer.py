"""The viewer's proxy to the archive (no network: the archive is an httpx MockTransport that
records what reaches it). Only reads below /dicom-web and /wado pass; a path that could leave
them never reaches the archive, whose REST API the proxy's credentials would open. Every path
needs the node's HTTP token and an allowed Host; the archive's credentials go as basic auth,
never in a URL that the HTTP client logs."""

import asyncio
import base64
import logging

import httpx
import pytest
from fastapi.testclient import TestClient

from myonode.app.viewer import create_viewer_app

from conftest import make_settings
from support import AUTH_HEADERS

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
            "http.allowed_hosts": ["testserver", "viewer.test"],
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
        "headers": [
            (b"host", b"viewer.test"),
            (b"authorization", AUTH_HEADERS["Authorization"].encode()),
        ],
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
    client = TestClient(app, headers=AUTH_HEADERS)
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
    assert TestClient(app, headers=AUTH_HEADERS).get(path).status_code == 400
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
    client = TestClient(app, headers=AUTH_HEADERS)
    for path in ("/dicom-web/studies", "/dicom-web/..%2F..%2Ftools%2Fshutdown", "/wado"):
        assert client.request(method, path, content=b"{}").status_code == 405, path
    assert seen == []


@pytest.mark.parametrize("path", ["/", "/app-config.js", "/dicom-web/studies", "/wado"])
def test_every_path_needs_the_token(viewer, path):
    app, seen = viewer
    response = TestClient(app).get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic ")
    assert seen == []


def test_a_foreign_host_is_refused(viewer):
    app, seen = viewer
    client = TestClient(app, headers=AUTH_HEADERS)
    assert client.get("/dicom-web/studies", headers={"Host": "attacker.example"}).status_code == 400
    assert seen == []


def test_archive_credentials_leave_the_url_and_the_log(viewer, caplog):
    """The password is sent as basic auth; no URL the proxy builds (and httpx logs at INFO
    for every request) carries it."""
    app, seen = viewer
    with caplog.at_level(logging.DEBUG):
        assert TestClient(app, headers=AUTH_HEADERS).get("/dicom-web/studies").status_code == 200
    [request] = seen
    assert request.url.userinfo == b"" and "secret" not in str(request.url)
    scheme, _, value = request.headers["authorization"].partition(" ")
    assert (scheme, base64.b64decode(value)) == ("Basic", b"myonode:secret")
    assert "dicom-web/studies" in caplog.text  # the request was logged...
    assert "secret" not in caplog.text  # ...without the password
