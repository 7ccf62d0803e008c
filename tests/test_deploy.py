"""The container deployment, checked as far as it can be without a Docker engine: the compose
files are consistent with the images, the configuration files and each other; the images'
build steps copy what exists and pin what the tests run; Orthanc accepts the compose
configuration. The shipped DICOM TLS setup (certificates made by the install's script, the
node's dicom.tls, Orthanc's DicomTls* keys and UseDicomTls modality) is run with the real
Orthanc. (The bare-metal units are run for real in test_stack.py.)"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from myonode.app.auth import host_name, token_digest
from myonode.core.config import load_settings

from conftest import make_settings
from support import REPO, ArchiveOrthanc, free_port, require_tool, scanner_sends, sql, wait_until

DOCKER = REPO / "deploy" / "docker"
COMPOSE = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
GPU = yaml.safe_load((DOCKER / "docker-compose.gpu.yml").read_text())
SITE = json.loads((DOCKER / "orthanc-site.json").read_text())
PASSWORD = "s3cret-for-the-test"
TOKEN = "http-token-for-the-test"


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} substitution."""

    def one(match: re.Match) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3)
        if name in env:
            return env[name]
        if operator == ":-":
            return rest
        raise KeyError(f"{name} is required: {rest}")

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def unit(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (REPO / "deploy" / "systemd" / name).read_text().splitlines():
        key, _, value = line.partition("=")
        if value and not line.startswith("#"):
            found.setdefault(key, []).append(value)
    return found


def test_compose_services_ports_and_volumes_match_the_configuration():
    services = COMPOSE["services"]
    assert set(services) == {"orthanc", "node", "viewer"}
    node_config = yaml.safe_load((DOCKER / "myonode.yaml").read_text())
    container_ports = {
        "orthanc": {SITE["DicomPort"], SITE["HttpPort"]},
        "node": {node_config["dicom"]["port"], node_config["http"]["port"]},
        "viewer": {node_config["viewer"]["port"]},
    }
    for name, service in services.items():
        assert {int(p.split(":")[-1]) for p in service["ports"]} == container_ports[name], name
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DOCKER / source).is_file(), volume
            else:
                assert source in COMPOSE["volumes"], volume
            assert target.startswith("/")
    assert "orthanc-db:/var/lib/orthanc/db-v6" in services["orthanc"]["volumes"]
    assert SITE["StorageDirectory"] == "/var/lib/orthanc/db-v6"
    assert f"node-data:{node_config['storage']['data_dir']}" in services["node"]["volumes"]
    # HTTP without authentication is published on the host's loopback only.
    assert "127.0.0.1:8080:8080" in services["node"]["ports"]
    assert services["viewer"]["ports"] == ["127.0.0.1:3000:3000"]
    # The viewer runs the node's image; the node image is what the node service builds.
    assert services["viewer"]["image"] == services["node"]["image"]
    assert services["viewer"]["command"] == shlex.split(
        unit("myonode-viewer.service")["ExecStart"][0]
    )
    for name in ("orthanc", "node"):
        build = services[name]["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).is_file()


def test_bare_metal_configuration_turns_http_authentication_on(tmp_path):
    """The dashboard, API, /metrics and the viewer need the token generated at install (its
    SHA-256 replaces the placeholder); plain HTTP stays on loopback behind a TLS proxy."""
    text = (REPO / "deploy" / "myonode.yaml").read_text()
    digest = token_digest("install-token")
    installed = tmp_path / "myonode.yaml"
    installed.write_text(text.replace("CHANGE-ME-TOKEN-SHA256", digest).replace("CHANGE-ME", "pw"))
    settings = load_settings(installed, environ={})
    assert settings.http.auth.enabled and settings.http.auth.token_sha256 == [digest]
    assert settings.http.bind == settings.viewer.bind == "127.0.0.1"
    assert not settings.http.docs
    assert "CHANGE-ME-TOKEN-SHA256" in (REPO / "deploy" / "README.md").read_text()


def test_compose_services_find_each_other():
    """The node's settings, with the compose environment, are valid and point at the orthanc
    service; Orthanc's modality and status URL point at the node service."""
    env = {
        "ORTHANC_PASSWORD": PASSWORD,
        "MYONODE_HTTP_TOKEN": TOKEN,
        "MYONODE_HTTP_TOKEN_SHA256": token_digest(TOKEN),
    }
    node = COMPOSE["services"]["node"]
    environ = {k: interpolate(v, env) for k, v in node["environment"].items()}
    settings = load_settings(DOCKER / "myonode.yaml", environ=environ)
    # HTTP authentication is on, with the token's digest only; the plugin sends the token
    # from Orthanc's environment, to a host name the node answers.
    assert settings.http.auth.enabled and settings.http.auth.token_sha256 == [token_digest(TOKEN)]
    assert TOKEN not in json.dumps(environ)
    orthanc_env = COMPOSE["services"]["orthanc"]["environment"]
    assert interpolate(orthanc_env["MYONODE_HTTP_TOKEN"], env) == TOKEN
    assert SITE["MyoNodeToken"] == "${MYONODE_HTTP_TOKEN}"
    assert host_name(SITE["MyoNode"]["NodeUrl"].split("//")[1]) in settings.http.allowed_hosts
    assert settings.peers["ORTHANC"].host == "orthanc"
    assert settings.peers["ORTHANC"].port == SITE["DicomPort"]
    assert settings.archive.dicomweb_url == f"http://myonode:{PASSWORD}@orthanc:8042/dicom-web"
    assert settings.viewer.public_url == "http://localhost:3000"
    aet, host, port = SITE["DicomModalities"]["MYONODE"]  # plain DICOM on the compose network
    assert (aet, host, port) == (settings.dicom.ae_title, "node", settings.dicom.port)
    assert not settings.dicom.tls.enabled
    assert SITE["MyoNode"]["NodeUrl"] == f"http://node:{settings.http.port}"
    with pytest.raises(KeyError, match="ORTHANC_PASSWORD"):
        interpolate(COMPOSE["services"]["orthanc"]["environment"]["ORTHANC_PASSWORD"], {})


def test_scale_out_roles_share_the_postgres_and_redis_services():
    """Every role of the scale-out compose file opens the same PostgreSQL store and broker, by
    service name, and the password comes from .env (never a default)."""
    scale = yaml.safe_load((DOCKER / "docker-compose.scale.yml").read_text())
    services = scale["services"]
    env = {
        "POSTGRES_PASSWORD": PASSWORD,
        "ORTHANC_PASSWORD": PASSWORD,
        "MYONODE_HTTP_TOKEN_SHA256": token_digest(TOKEN),
    }
    for name in ("node", "worker"):
        merged = {**COMPOSE["services"].get(name, {}).get("environment", {})}
        merged.update(services[name]["environment"])  # compose merges the files' environments
        environ = {k: interpolate(v, env) for k, v in merged.items()}
        settings = load_settings(DOCKER / "myonode.yaml", environ=environ)
        assert settings.store.url == f"postgresql://myonode:{PASSWORD}@postgres:5432/myonode"
        assert settings.queue.kind == "celery" and "//redis:" in settings.queue.broker_url
        assert {"postgres", "redis"} <= set(services[name]["depends_on"])
    postgres = services["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == ("myonode", "myonode")
    assert "postgres-data" in scale["volumes"]
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(postgres["POSTGRES_PASSWORD"], {})


def test_gpu_variant_reserves_a_gpu_and_builds_cuda_torch():
    node = GPU["services"]["node"]
    [device] = node["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    index = interpolate(node["build"]["args"]["TORCH_INDEX_URL"], {})
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", index)
    assert node["image"] != COMPOSE["services"]["node"]["image"]
    assert GPU["services"]["viewer"]["image"] == node["image"]
    assert "TORCH_INDEX_URL" in dict(instructions(DOCKER / "node.Dockerfile"))["ARG"]


@pytest.mark.parametrize("name", ["node.Dockerfile", "orthanc.Dockerfile"])
def test_dockerfiles_copy_what_exists_and_pin_what_the_tests_run(name):
    steps = instructions(DOCKER / name)
    for instruction, arguments in steps:
        if instruction == "COPY" and not arguments.startswith("--from"):
            *sources, _target = arguments.split()
            for source in sources:
                assert (REPO / source).exists(), f"{name}: COPY {source}"
    # The RUN steps take their pins from pyproject.toml with grep: run those greps here.
    for _, arguments in (s for s in steps if s[0] == "RUN"):
        for expression in re.findall(r'"\$\((grep [^)]*)\)"', arguments):
            command = expression.replace("/opt/myonode/pyproject.toml", "pyproject.toml")
            command = command.replace("/tmp/pyproject.toml", "pyproject.toml")
            pin = subprocess.run(
                ["bash", "-c", command], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout.strip()
            assert re.fullmatch(r"(torch==2\.13\.0|pyorthanc[<>=,.\d]+)", pin), pin
    cmd = json.loads(dict(steps)["CMD"])
    if name == "node.Dockerfile":
        assert cmd == shlex.split(unit("myonode.service")["ExecStart"][0])
        assert any("install-ohif.sh /ohif" in a for i, a in steps if i == "RUN")
    else:  # Debian's Orthanc with the archive configuration, as the drop-in starts it
        drop_in = unit("orthanc.service.d/myonode.conf")
        assert cmd[-1] == shlex.split(drop_in["ExecStart"][-1])[-1]
        env = dict(steps)["ENV"]
        for setting in drop_in["Environment"]:
            assert setting in env.split()


def test_orthanc_accepts_the_compose_configuration(tmp_path):
    """Orthanc 1.10 (what the image installs) starts with archive.json and the compose
    site.json, takes the password from the environment, and loads both plugins."""
    moved = {"HttpPort", "DicomPort", "StorageDirectory", "IndexDirectory", "PythonScript"}
    orthanc = ArchiveOrthanc(
        tmp_path,
        node_dicom_port=free_port(),
        node_http_port=free_port(),
        extra={k: v for k, v in SITE.items() if k not in moved},
        password=PASSWORD,
        env={"ORTHANC_PASSWORD": PASSWORD, "MYONODE_HTTP_TOKEN": TOKEN},
    ).start()
    try:
        client = orthanc.client()
        assert {"dicom-web", "python"} <= set(client.get_plugins())
        assert client.get_modalities_id_configuration("MYONODE")["Host"] == "node"
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(f"{orthanc.url}/dicom-web/studies")
    finally:
        orthanc.stop()


def shipped_tls(tls_dir: Path) -> tuple[dict[str, object], dict[str, object]]:
    """The node's dicom.tls and allow-list (deploy/myonode.yaml) and Orthanc's DicomTls* keys
    and MYONODE modality (orthanc/site.json), with /etc/myonode/tls moved to `tls_dir`."""
    dicom = yaml.safe_load((REPO / "deploy" / "myonode.yaml").read_text())["dicom"]
    node = {f"tls.{k}": v for k, v in dicom["tls"].items()}
    node["allowed_calling_aets"] = dicom["allowed_calling_aets"]
    site = json.loads((REPO / "orthanc" / "site.json").read_text())

    def moved(value: object) -> object:
        return value.replace("/etc/myonode/tls", str(tls_dir)) if isinstance(value, str) else value

    orthanc = {k: moved(v) for k, v in site.items() if k.startswith("DicomTls")}
    orthanc["DicomModalities"] = site["DicomModalities"]
    return {k: moved(v) for k, v in node.items()}, orthanc


def test_shipped_configuration_turns_dicom_tls_on_for_the_node_only():
    """The node listens with DICOM TLS and verifies its senders; Orthanc sends to it over TLS
    (per-modality UseDicomTls) while Orthanc's own port stays plain for scanners."""
    node, orthanc = shipped_tls(Path("/etc/myonode/tls"))
    assert node["tls.enabled"] and node["tls.verify_clients"]
    [orthanc_entry] = node["allowed_calling_aets"]  # Orthanc only, bound to its certificate
    assert orthanc_entry["ae_title"] == "ORTHANC" and orthanc_entry["certificate"]
    assert orthanc["DicomTlsEnabled"] is False
    assert orthanc["DicomModalities"]["MYONODE"]["UseDicomTls"] is True
    assert orthanc["DicomTlsTrustedCertificates"] == "/etc/myonode/tls/myonode.crt"
    readme = (REPO / "deploy" / "README.md").read_text()
    assert "deploy/dicom-tls-certs.sh /etc/myonode/tls" in readme


def test_orthanc_forwards_to_the_node_over_dicom_tls(tmp_path, node_factory, ct_series):
    """The shipped TLS setup run for real: certificates made by deploy/dicom-tls-certs.sh,
    the node with deploy/myonode.yaml's dicom.tls, Orthanc 1.10 with site.json's DicomTls*
    keys and MYONODE modality. A scanner stores into Orthanc without TLS, Orthanc's plugin
    forwards the stable study to the node over TLS; the node refuses plain associations, and
    TLS ones without Orthanc's certificate (the shipped allow-list binds ORTHANC to it)."""
    require_tool("openssl")
    require_tool("echoscu")
    tls_dir = tmp_path / "tls"
    subprocess.run([REPO / "deploy" / "dicom-tls-certs.sh", tls_dir, "localhost"], check=True)
    node_tls, orthanc_tls = shipped_tls(tls_dir)
    dicom_port, http_port = free_port(), free_port()
    modality = {**orthanc_tls.pop("DicomModalities")["MYONODE"], "Host": "127.0.0.1"}
    modality["Port"] = dicom_port
    orthanc = ArchiveOrthanc(
        tmp_path / "orthanc",
        dicom_port,
        http_port,
        extra={**orthanc_tls, "DicomModalities": {"MYONODE": modality}},
    ).start()
    try:
        settings = make_settings(
            tmp_path,
            **{
                "dicom.port": dicom_port,
                "http.port": http_port,
                "assemble.quiet_seconds": 3600,
                **{f"dicom.{key}": value for key, value in node_tls.items()},
            },
        )
        node = node_factory(settings)
        scanner_sends(ct_series, "ORTHANC", orthanc.dicom_port)  # Orthanc's port: plain
        wait_until(
            lambda: len(sql(node.index, "SELECT sop_uid FROM instances")) == len(ct_series),
            timeout=60,
            interval=0.3,
        )
        plain = subprocess.run(
            ["echoscu", "-aet", "ORTHANC", "-aec", "MYONODE", "127.0.0.1", str(dicom_port)],
            capture_output=True,
            timeout=30,
        )
        assert plain.returncode != 0
        other = tmp_path / "other"  # a certificate the node does not trust, as AE ORTHANC
        subprocess.run([REPO / "deploy" / "dicom-tls-certs.sh", other, "x"], check=True)
        foreign = subprocess.run(
            [
                *("echoscu", "+tls", other / "orthanc.key", other / "orthanc.crt"),
                *("+cf", tls_dir / "myonode.crt", "-aet", "ORTHANC", "-aec", "MYONODE"),
                *("127.0.0.1", str(dicom_port)),
            ],
            capture_output=True,
            timeout=30,
        )
        assert foreign.returncode != 0
        trusted = subprocess.run(
            [
                *("echoscu", "+tls", tls_dir / "orthanc.key", tls_dir / "orthanc.crt"),
                *("+cf", tls_dir / "myonode.crt", "-aet", "ORTHANC", "-aec", "MYONODE"),
                *("127.0.0.1", str(dicom_port)),
            ],
            capture_output=True,
            timeout=30,
        )
        assert trusted.returncode == 0, trusted.stderr
    finally:
        orthanc.stop()
