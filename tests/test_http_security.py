"""The node's HTTP, run for real (uvicorn on loopback): token authentication on everything but
the health check, the Host allow-list against DNS rebinding, no /docs, clamped limits, and a
CSV export a spreadsheet cannot run."""

from __future__ import annotations

import base64
import csv
import io

import httpx
import pytest
from pydicom.dataset import Dataset

from myonode.app.auth import host_name, presented_token, read_or_create_token, token_digest
from myonode.core.config import ConfigError, load_settings
from myonode.receive.ingest import study_values
from myonode.store.index import InstanceRecord
from myonode.store.records import ResultRecord, records_csv

from conftest import make_settings
from support import AUTH_HEADERS, HTTP_TOKEN


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def node(tmp_path, node_factory):
    return node_factory(make_settings(tmp_path, **{"http.max_rows": 2}))


def url(node, path: str) -> str:
    return f"http://127.0.0.1:{node.web.port}{path}"


def add_studies(node, count: int) -> None:
    for n in range(count):
        uid = f"1.2.3.{n + 1}"
        node.index.record_instance(
            InstanceRecord(
                sop_uid=f"{uid}.1.1",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                series_uid=f"{uid}.1",
                study_uid=uid,
                transfer_syntax="1.2.840.10008.1.2.1",
                path=node.settings.instances_dir / f"{n}.dcm",
                size=1,
                sha256=f"{n:064x}",
                calling_aet="SCANNER",
                tags={},
            ),
            study_values(Dataset()),
            {"modality": "CT", "series_number": 1, "series_description": None},
        )


@pytest.mark.parametrize("path", ["/api/studies", "/api/results", "/metrics", "/dashboard/"])
def test_everything_but_health_needs_the_token(node, path):
    refused = httpx.get(url(node, path))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic ")  # browsers ask for it
    assert httpx.get(url(node, path), headers=basic("staff", "wrong")).status_code == 401
    assert httpx.get(url(node, path), headers={"Authorization": "Bearer x"}).status_code == 401
    assert httpx.get(url(node, path), headers=AUTH_HEADERS).status_code == 200
    # A browser's basic auth: any user name, the token as password.
    assert httpx.get(url(node, path), headers=basic("staff", HTTP_TOKEN)).status_code == 200
    assert httpx.get(url(node, "/api/health")).json()["status"] == "ok"


def test_a_foreign_host_header_is_refused_even_with_the_token(node):
    """DNS rebinding: a page on attacker.example resolving to the node sends its own name."""
    for host in ("attacker.example", "attacker.example:8080", "127.0.0.1.attacker.example"):
        response = httpx.get(url(node, "/api/studies"), headers={**AUTH_HEADERS, "Host": host})
        assert response.status_code == 400, host
    assert httpx.get(url(node, "/api/health"), headers={"Host": "evil.test"}).status_code == 400
    for host in ("localhost", f"localhost:{node.web.port}", "127.0.0.1", "[::1]:8080"):
        response = httpx.get(url(node, "/api/studies"), headers={**AUTH_HEADERS, "Host": host})
        assert response.status_code == 200, host


def test_docs_and_openapi_are_off_by_default(tmp_path, node, node_factory):
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert httpx.get(url(node, path), headers=AUTH_HEADERS).status_code == 404, path
    documented = node_factory(make_settings(tmp_path / "docs", **{"http.docs": True}))
    response = httpx.get(url(documented, "/openapi.json"), headers=AUTH_HEADERS)
    assert response.status_code == 200 and "/api/studies" in response.json()["paths"]
    assert httpx.get(url(documented, "/openapi.json")).status_code == 401


@pytest.mark.parametrize("limit", [-1, 0, 3, 10**9])
def test_limits_are_clamped(node, limit):
    add_studies(node, 3)
    response = httpx.get(url(node, f"/api/studies?limit={limit}"), headers=AUTH_HEADERS)
    assert len(response.json()) == (1 if limit <= 0 else 2)  # http.max_rows is 2
    for path in ("/api/jobs", "/api/outbox"):
        assert httpx.get(url(node, f"{path}?limit=-1"), headers=AUTH_HEADERS).status_code == 200


def test_without_configured_digests_a_private_token_is_generated(tmp_path, node_factory):
    settings = make_settings(tmp_path, **{"http.auth.token_sha256": []})
    node = node_factory(settings)
    token_file = settings.http_token_path
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 40
    assert httpx.get(url(node, "/api/studies")).status_code == 401
    ok = httpx.get(url(node, "/api/studies"), headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    assert read_or_create_token(token_file) == token  # kept across restarts


def test_auth_can_be_turned_off_but_the_host_check_stays(tmp_path, node_factory):
    node = node_factory(make_settings(tmp_path, **{"http.auth.enabled": False}))
    assert httpx.get(url(node, "/api/studies")).status_code == 200
    response = httpx.get(url(node, "/api/studies"), headers={"Host": "attacker.example"})
    assert response.status_code == 400


def test_configured_digests_must_be_sha256_hex():
    with pytest.raises(ConfigError, match="SHA-256"):
        load_settings(environ={}, overrides={"http.auth.token_sha256": ["my-password"]})
    digest = token_digest("t").upper()
    settings = load_settings(environ={}, overrides={"http.auth.token_sha256": [digest]})
    assert settings.http.auth.token_sha256 == [digest.lower()]


def test_header_parsing():
    assert host_name("Example.org:8080") == "example.org"
    assert host_name("[::1]:3000") == "::1"
    assert host_name("::1") == "::1"
    assert presented_token("Bearer abc") == "abc"
    assert presented_token("basic " + base64.b64encode(b"u:p:q").decode()) == "p:q"
    assert presented_token("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert presented_token("Basic !!!") is None
    assert presented_token("Digest x") is None


def test_csv_export_quotes_what_a_spreadsheet_would_run():
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB"]
    records = [
        ResultRecord("1.2.3", text, "20260101", "ct", "psoas", "mass", -12.5, "g", text)
        for text in hostile
    ]
    header, *rows = csv.reader(io.StringIO(records_csv(records), newline=""))
    text_column = header.index("text")
    for row, text in zip(rows, hostile, strict=True):
        assert row[1] == "'" + text and row[text_column] == "'" + text
        assert row[6] == "-12.5"  # a negative number stays a number
