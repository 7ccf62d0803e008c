"""DICOM TLS with real dcmtk peers: `storescu +tls` into the node, the node into a TLS
`storescp`, and allow-list entries bound to a client certificate."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from myonode.core.config import TlsSettings
from myonode.core.tls import client_context
from myonode.dispatch.scu import SendError, describe, send_files

from conftest import make_settings
from support import free_port, require_tool, sql, wait_for_port


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and two client certificates."""
    require_tool("openssl")
    d = tmp_path / "pki"
    d.mkdir()
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"),
    )  # fmt: skip
    ext = d / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extfile in (("server", ext), ("modality", None), ("intruder", None)):
        openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
            "-out", str(d / f"{name}.crt"),
            *(["-extfile", str(extfile)] if extfile else []),
        )  # fmt: skip
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


def tls_settings(tmp_path: Path, pki: dict[str, Path], **overrides):
    return make_settings(
        tmp_path,
        **{
            "dicom.tls.enabled": True,
            "dicom.tls.certificate": str(pki["server_crt"]),
            "dicom.tls.private_key": str(pki["server_key"]),
            "dicom.tls.ca_certificates": str(pki["ca_crt"]),
            "dicom.tls.verify_clients": True,
            **overrides,
        },
    )


def storescu_tls(port: int, key: Path, cert: Path, ca: Path, files: list[Path], aet="DCMTK"):
    require_tool("storescu")
    return subprocess.run(
        [
            *("storescu", "+tls", str(key), str(cert), "+cf", str(ca)),
            *("-aet", aet, "-aec", "MYONODE", "127.0.0.1", str(port)),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_storescu_over_tls_stores_and_plain_tcp_is_refused(tmp_path, pki, node_factory, ct_series):
    node = node_factory(tls_settings(tmp_path, pki))
    done = storescu_tls(
        node.port, pki["modality_key"], pki["modality_crt"], pki["ca_crt"], ct_series
    )
    assert done.returncode == 0, done.stderr
    assert len(sql(node.index, "SELECT * FROM instances")) == len(ct_series)
    with pytest.raises(SendError):  # plain DICOM to a TLS port: no association
        send_files([describe(ct_series[0])], "PLAIN", "MYONODE", "127.0.0.1", node.port)


def test_allow_list_entry_bound_to_a_certificate(tmp_path, pki, node_factory, ct_series):
    node = node_factory(
        tls_settings(
            tmp_path,
            pki,
            **{"dicom.allowed_calling_aets": [{"ae_title": "DCMTK", "certificate": "modality"}]},
        )
    )
    spoofed = storescu_tls(
        node.port, pki["intruder_key"], pki["intruder_crt"], pki["ca_crt"], ct_series[:1]
    )
    assert spoofed.returncode != 0  # right AE title, another (valid) certificate
    assert not sql(node.index, "SELECT * FROM instances")
    done = storescu_tls(
        node.port, pki["modality_key"], pki["modality_crt"], pki["ca_crt"], ct_series[:1]
    )
    assert done.returncode == 0, done.stderr
    assert len(sql(node.index, "SELECT * FROM instances")) == 1


def test_node_sends_to_a_tls_storescp(tmp_path, pki, ct_series):
    require_tool("storescp")
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    peer = subprocess.Popen(
        [
            *("storescp", "+tls", str(pki["server_key"]), str(pki["server_crt"])),
            *("+cf", str(pki["ca_crt"]), "--require-peer-cert", "-od", str(out), str(port)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        context = client_context(
            TlsSettings(
                enabled=True,
                certificate=pki["modality_crt"],
                private_key=pki["modality_key"],
                ca_certificates=pki["ca_crt"],
            )
        )
        results = send_files(
            [describe(p) for p in ct_series], "MYONODE", "STORESCP", "127.0.0.1", port, tls=context
        )
        assert all(r.ok for r in results)
        assert len(list(out.iterdir())) == len(ct_series)
    finally:
        peer.terminate()
        peer.wait(timeout=10)
