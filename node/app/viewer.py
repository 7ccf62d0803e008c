"""The OHIF viewer with the archive's DICOMweb on the same origin (`myonode viewer`).

Orthanc 1.10 sends no CORS headers, so the browser must reach DICOMweb through the origin
that served OHIF. This app serves OHIF's prebuilt `dist/` at the site root (paths that are not
files fall back to index.html: OHIF routes in the browser), its own `app-config.js` with one
DICOMweb data source at `/dicom-web` and `/wado`, and streams those two paths to the archive
(`archive.dicomweb_url`, `archive.wado_uri_url`; credentials in the URL are taken out of it and
sent as basic auth, so neither the browser nor a log line of the HTTP client ever sees them).
It is its own process so radiologists keep their viewer while the node restarts. The same Host
allow-list and token authentication as the node's API guard every path (`app.auth`): the
proxy opens the archive with the node's credentials.

The proxy forwards only reads (GET, HEAD: OHIF's QIDO-RS, WADO-RS and WADO-URI; it stores
nothing) under those two roots: a path with an empty, `.` or `..` segment, an encoded slash or
a backslash, or any character a DICOMweb path does not use, is refused before it reaches the
archive, whose whole REST API the configured credentials could otherwise reach.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.types import Scope

from myonode.app.auth import Guard, accepted_digests
from myonode.core.config import Settings

# OHIF 3.13 reads image coordinates from every TID 1500 measurement group when it opens an SR
# and fails ("Cannot read properties of undefined (reading 'ReferencedSOPSequence')") on groups
# that have none, such as the node's per-structure groups (volumes measured on a SEG). Through
# its documented hook, such measurements get one empty coordinate: OHIF then lists them and
# opens the SR instead of failing.
SR_WITHOUT_COORDINATES_JS = """
window.config.customizationService = {
  onBeforeSRAddMeasurement: {
    $set: ({ measurement }) => {
      if (!measurement.coords.length) measurement.coords.push({});
      return measurement;
    },
  },
};
"""

# Request headers passed to the archive, and response headers passed back (not hop-by-hop).
FORWARDED_REQUEST = ("accept", "accept-encoding", "content-type", "range", "if-none-match")
DROPPED_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "www-authenticate"}

# One segment of a DICOMweb path as OHIF builds it: UIDs, resource names, frame lists (1,2),
# bulk data tags. Nothing percent-encoded: no %2F, %2E or %5C can hide a separator or a dot.
PATH_SEGMENT = re.compile(r"[A-Za-z0-9_,.\-]+")


def safe_subpath(raw: str) -> str | None:
    """The raw path below a proxied root, or None if it could leave it: empty, `.` or `..`
    segments, percent-encoding, backslashes, anything but DICOMweb's characters."""
    segments = raw.split("/")
    if raw and all(PATH_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        return raw
    return None


def under(url: str, root: str) -> bool:
    """Whether the URL, as httpx will send it, still lies below the upstream root."""
    target, base = httpx.URL(url), httpx.URL(root)
    return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port) and (
        target.path == base.path or target.path.startswith(base.path.rstrip("/") + "/")
    )


def split_credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """The URL without user:password@, and those credentials as basic auth (or None)."""
    parsed = httpx.URL(url)
    if not parsed.username and not parsed.password:
        return url, None
    bare = str(parsed.copy_with(username=None, password=None))
    return bare, httpx.BasicAuth(parsed.username, parsed.password)


def ohif_config() -> dict:
    """OHIF's window.config: one DICOMweb source on this origin (values measured with Orthanc)."""
    return {
        "routerBasename": None,
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "defaultDataSourceName": "archive",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "archive",
                "configuration": {
                    "friendlyName": "Hospital archive (via myonode viewer)",
                    "name": "archive",
                    "qidoRoot": "/dicom-web",
                    "wadoRoot": "/dicom-web",
                    "wadoUriRoot": "/wado",
                    "qidoSupportsIncludeField": False,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "staticWado": False,
                    "singlepart": "bulkdata,video",
                    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                    "omitQuotationForMultipartRequest": True,
                },
            }
        ],
    }


class _SinglePageApp(StaticFiles):
    """Static files; a path that is not a file gets index.html (OHIF's client-side routes)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            return await super().get_response("index.html", scope)


def create_viewer_app(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The viewer app; `transport` replaces the network to the archive (tests)."""
    ohif_dir = settings.viewer.ohif_dir
    if ohif_dir is None or not (Path(ohif_dir) / "index.html").is_file():
        raise ValueError(
            f"viewer.ohif_dir ({ohif_dir}) holds no OHIF build; run deploy/install-ohif.sh"
        )
    if not settings.archive.dicomweb_url:
        raise ValueError("archive.dicomweb_url is unset: the viewer has nothing to show")
    upstreams, auths = {}, {}
    for root, configured in (
        ("dicom-web", settings.archive.dicomweb_url),
        ("wado", settings.archive.wado_uri_url),
    ):
        if configured:
            url, auths[root] = split_credentials(configured.rstrip("/"))
            upstreams[root] = url.rstrip("/")
    client = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0), transport=transport)
    app = FastAPI(title="myonode viewer", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        Guard,
        digests=accepted_digests(settings),
        allowed_hosts=settings.http.allowed_hosts,
        public_paths=frozenset(),
    )
    app.router.on_shutdown.append(client.aclose)
    config_js = f"window.config = {json.dumps(ohif_config(), indent=2)};\n"
    config_js += SR_WITHOUT_COORDINATES_JS

    @app.get("/app-config.js")
    def app_config() -> Response:
        return Response(config_js, media_type="application/javascript")

    async def proxy(request: Request, root: str) -> Response:
        if root not in upstreams:
            return PlainTextResponse(f"archive.{root} URL is not configured", status_code=404)
        # The path as the client sent it (Starlette's path parameter is already decoded).
        raw = request.scope.get("raw_path", b"").decode("latin-1")
        prefix = f"/{root}"
        path = safe_subpath(raw[len(prefix) + 1 :]) if raw.startswith(prefix + "/") else None
        if raw == prefix:
            path = ""
        if path is None:
            return PlainTextResponse("path not allowed", status_code=400)
        url = f"{upstreams[root]}/{path}" if path else upstreams[root]
        if request.url.query:  # as sent: Orthanc does not decode e.g. %2F in WADO-URI queries
            url += f"?{request.url.query}"
        if not under(url, upstreams[root]):
            return PlainTextResponse("path not allowed", status_code=400)
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED_REQUEST}
        # Bytes are passed through as the archive encoded them: only as the client accepts.
        headers.setdefault("accept-encoding", "identity")
        # Orthanc's DICOMweb writes absolute BulkDataURIs from this header.
        headers["forwarded"] = f"host={request.url.netloc};proto={request.url.scheme}"
        upstream = client.build_request(request.method, url, headers=headers)
        try:
            response = await client.send(upstream, stream=True, auth=auths[root])
        except httpx.HTTPError as exc:
            return PlainTextResponse(f"archive unreachable: {exc}", status_code=502)
        return StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            headers={
                k: v for k, v in response.headers.items() if k.lower() not in DROPPED_RESPONSE
            },
            background=BackgroundTask(response.aclose),
        )

    # Reads only: OHIF's data source here stores nothing (no STOW-RS), and a POST would reach
    # whatever the archive's credentials allow.
    @app.api_route("/dicom-web/{path:path}", methods=["GET", "HEAD"])
    async def dicomweb(request: Request) -> Response:
        return await proxy(request, "dicom-web")

    @app.api_route("/wado", methods=["GET", "HEAD"])
    async def wado(request: Request) -> Response:
        return await proxy(request, "wado")

    app.mount("/", _SinglePageApp(directory=ohif_dir, html=True), name="ohif")
    return app
