"""The node's configuration: one YAML file plus environment overrides.

Every setting has an embedded default so `myonode serve` and `myonode demo` work with no file.
A file is found from `--config`, else `$MYONODE_CONFIG`. Environment variables override any
key: ``MYONODE_DICOM__PORT=11113`` sets ``dicom.port`` (double underscore separates levels).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "MYONODE_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Peer(_Section):
    """A destination the node may send results to: a DICOM application entity (C-STORE) or
    a DICOMweb service (STOW-RS)."""

    kind: Literal["dimse", "stow-rs"] = Field(
        default="dimse",
        description="dimse: C-STORE to host:port; stow-rs: STOW-RS to url (a DICOMweb root).",
    )
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    url: str | None = Field(default=None, description="STOW-RS: the DICOMweb root.")
    username: str | None = Field(default=None, description="STOW-RS: HTTP basic user.")
    password: str | None = Field(default=None, description="STOW-RS: HTTP basic password.")
    token: str | None = Field(default=None, description="STOW-RS: HTTP bearer token.")
    tls: bool = Field(
        default=False,
        description="dimse: send over DICOM TLS (dicom.tls's CA verifies the peer).",
    )
    check_source: bool = Field(
        default=False,
        description="The peer is the archive at archive.dicomweb_url that sent the studies: "
        "results are delivered only while their source series is still there (QIDO-RS), so "
        "a study deleted during processing is not re-created by its results.",
    )

    @model_validator(mode="after")
    def _address_for_kind(self) -> Peer:
        if self.kind == "dimse" and (self.host is None or self.port is None):
            raise ValueError("a dimse peer needs host and port")
        if self.kind == "stow-rs" and not self.url:
            raise ValueError("a stow-rs peer needs url (its DICOMweb root)")
        if self.token is not None and self.username is not None:
            raise ValueError("give either username/password (basic) or token (bearer), not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("basic authentication needs both username and password")
        return self


class AllowedPeer(_Section):
    """A calling AE title allowed to associate, bound to where it may call from."""

    ae_title: str
    network: str | None = Field(
        default=None,
        description="An address or CIDR network (e.g. 10.0.4.0/24) the AE title must call "
        "from. Empty: any address.",
    )
    certificate: str | None = Field(
        default=None,
        description="With dicom.tls: the client certificate the AE must present, as its "
        "SHA-256 fingerprint (hex, colons allowed) or its subject CN.",
    )

    @field_validator("network")
    @classmethod
    def _valid_network(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_network(value, strict=False)  # ValueError: pydantic reports it
        return value


class TlsSettings(_Section):
    """DICOM TLS (PS3.15 B.9 / BCP 195: TLS 1.2 or later, strong ciphers only)."""

    enabled: bool = False
    certificate: Path | None = Field(default=None, description="The node's PEM certificate.")
    private_key: Path | None = Field(default=None, description="Its PEM private key.")
    ca_certificates: Path | None = Field(
        default=None,
        description="PEM bundle that signs client certificates (listener) and peers' server "
        "certificates (outgoing TLS).",
    )
    verify_clients: bool = Field(
        default=False, description="Require a client certificate signed by ca_certificates."
    )

    @model_validator(mode="after")
    def _files_when_enabled(self) -> TlsSettings:
        if self.enabled and not (self.certificate and self.private_key):
            raise ValueError("dicom.tls.enabled needs certificate and private_key")
        if self.verify_clients and not self.ca_certificates:
            raise ValueError("dicom.tls.verify_clients needs ca_certificates")
        return self


class DicomSettings(_Section):
    ae_title: str = "MYONODE"
    bind: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    allowed_calling_aets: list[str | AllowedPeer] = Field(
        default_factory=list,
        description="Empty: accept any calling AE title. An entry is an AE title, or an "
        "AllowedPeer binding one to a network and (with TLS) a certificate.",
    )
    require_called_aet: bool = Field(
        default=True, description="Reject associations addressed to another called AE title."
    )
    max_associations: int = Field(default=20, ge=1)
    max_associations_per_ae: int = Field(
        default=8, ge=1, description="Concurrent associations from one calling AE title."
    )
    max_associations_per_address: int = Field(
        default=8, ge=1, description="Concurrent connections from one remote address."
    )
    listen_backlog: int = Field(default=128, ge=1)
    max_pdu_bytes: int = Field(default=262144, ge=4096, le=16 * 2**20)
    max_associate_kb: int = Field(
        default=64,
        ge=4,
        description="Longest A-ASSOCIATE-RQ accepted; a longer one is aborted before it is read.",
    )
    idle_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="An association (or a connection before its A-ASSOCIATE-RQ) without a "
        "message for this long is aborted, freeing its slot.",
    )
    network_timeout_s: float = Field(
        default=60.0, gt=0, description="A read stalled this long inside a PDU ends the socket."
    )
    max_instance_mb: int = Field(
        default=4096,
        ge=1,
        description="Larger instances are refused with 0xA700 (checked while they stream to "
        "disk, so memory stays at one PDU per association).",
    )
    max_inflated_mb: int = Field(
        default=256,
        ge=1,
        description="A deflated data set inflating past this is refused (0xA700), checked "
        "while inflating; it is held in memory to be parsed.",
    )
    max_sequence_depth: int = Field(
        default=32, ge=1, description="Deeper sequence nesting is refused (0xC000)."
    )
    tls: TlsSettings = Field(default_factory=TlsSettings)

    @field_validator("ae_title")
    @classmethod
    def _valid_ae_title(cls, value: str) -> str:
        if not 0 < len(value) <= 16 or "\\" in value:
            raise ValueError("an AE title is 1-16 characters without a backslash")
        return value


class RetentionSettings(_Section):
    """What `myonode prune` (and the node, hourly) deletes: the received instances and the
    outputs of studies that are done (measured and delivered) or were not routed."""

    keep_days: float | None = Field(
        default=None, gt=0, description="Delete such studies last received longer ago. Empty: keep."
    )
    free_mb: int | None = Field(
        default=None,
        ge=0,
        description="While less than this is free, delete such studies too, oldest first.",
    )


class StorageSettings(_Section):
    data_dir: Path = Path("myonode-data")
    min_free_mb: int = Field(
        default=512,
        ge=0,
        description="Refuse new instances (0xA700) when less than this is free on the disk.",
    )
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    sync_instance_files: bool = Field(
        default=True,
        description="fsync each received file and its directory before acknowledging. false "
        "syncs only the index, as Orthanc 1.10 does: faster, but after a power cut the index "
        "may name instances whose bytes were lost. For comparisons, not for patient data.",
    )


class StoreSettings(_Section):
    """Where the node keeps its index (studies, jobs, outbox): the SQLite file in
    `storage.data_dir` by default (one host), or PostgreSQL shared by roles on several hosts."""

    url: str = Field(
        default="",
        description="Empty: SQLite at <data_dir>/index.sqlite3. 'postgresql://user:password@host"
        ":5432/myonode': PostgreSQL (split roles across hosts, `deploy/README.md`).",
    )

    @field_validator("url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("empty (SQLite in data_dir) or a postgresql:// URL")
        return value


class AssembleSettings(_Section):
    quiet_seconds: float = Field(
        default=30.0, ge=0, description="A study is stable after this long without new instances."
    )
    poll_seconds: float = Field(default=1.0, gt=0)


class WorkerSettings(_Section):
    count: int = Field(default=1, ge=1, description="Jobs run in parallel (models stay resident).")


class QueueSettings(_Section):
    """How routed jobs reach workers: `local` (embedded worker threads polling the store, the
    default) or `celery` (Celery workers over Redis, one process per GPU, `deploy/README.md`)."""

    kind: Literal["local", "celery"] = "local"
    broker_url: str = "redis://127.0.0.1:6379/0"
    visibility_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="A job whose worker vanished without a trace is handed out again after "
        "this long; keep it above the longest job (a worker killed mid-job is noticed at once "
        "by its parent process and the job redelivered without waiting).",
    )
    resubmit_seconds: float = Field(
        default=5.0, gt=0, description="How often the router offers jobs the broker missed."
    )


class RetrySettings(_Section):
    initial_seconds: float = Field(default=5.0, gt=0)
    max_seconds: float = Field(default=600.0, gt=0)
    factor: float = Field(default=2.0, ge=1.0)


class DispatchSettings(_Section):
    destinations: list[str] = Field(
        default_factory=lambda: ["calling"],
        description="Peer names from `peers`, or 'calling' for the AE that sent the study.",
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)
    poll_seconds: float = Field(default=1.0, gt=0)
    give_up_after_hours: float = Field(
        default=72.0,
        gt=0,
        description="A delivery still failing this long after it was queued (destination "
        "unknown, unreachable or refusing) ends 'failed'; its files stay on the node.",
    )


class HttpAuthSettings(_Section):
    """Who may use the node's HTTP (API, dashboard, /metrics) and the viewer."""

    enabled: bool = Field(
        default=True,
        description="Every request but GET /api/health needs a token: 'Authorization: Bearer "
        "<token>', or basic auth with any user name and the token as password (browsers).",
    )
    token_sha256: list[str] = Field(
        default_factory=list,
        description="SHA-256 (hex) of each accepted token; tokens are never stored. Empty: "
        "a token is generated into <data_dir>/http-token (0600) at start.",
    )

    @field_validator("token_sha256")
    @classmethod
    def _hex_digests(cls, values: list[str]) -> list[str]:
        digests = [value.strip().lower() for value in values]
        for digest in digests:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError("each entry is a SHA-256 hex digest (64 hex digits)")
        return digests


class HttpSettings(_Section):
    enabled: bool = True
    bind: str = Field(default="127.0.0.1", description="REST API, dashboard and /metrics.")
    port: int = Field(default=8080, ge=0, le=65535)
    auth: HttpAuthSettings = Field(default_factory=HttpAuthSettings)
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        description="Host header names (no port) the node and the viewer answer; others get "
        "400 (DNS rebinding). Add the names users and the Orthanc plugin use; '*' allows any.",
    )
    docs: bool = Field(default=False, description="Serve /docs and /openapi.json.")
    max_rows: int = Field(
        default=1000, ge=1, description="Upper bound of the API's `limit` parameters."
    )


class LogSettings(_Section):
    max_line_chars: int = Field(
        default=2000, ge=200, description="Longer log lines are cut, with the count cut."
    )


class ArchiveSettings(_Section):
    dicomweb_url: str | None = Field(
        default=None,
        description="DICOMweb root of the archive (user:password@ for basic auth): prior "
        "results, the source check of peers, the viewer's /dicom-web.",
    )
    wado_uri_url: str | None = Field(
        default=None, description="WADO-URI root of the archive, for the viewer's /wado."
    )


class ViewerSettings(_Section):
    """OHIF, served by `myonode viewer` with the archive's DICOMweb on the same origin."""

    ohif_dir: Path | None = Field(
        default=None, description="OHIF's prebuilt dist/ (deploy/install-ohif.sh fetches it)."
    )
    bind: str = "127.0.0.1"
    port: int = Field(default=3000, ge=0, le=65535)
    public_url: str | None = Field(
        default=None,
        description="Where users open the viewer; the dashboard links studies there "
        "(default: the dashboard's host name with viewer.port).",
    )


class RoutingSettings(_Section):
    profiles_dir: Path | None = Field(
        default=None,
        description="A site's own routing profiles (*.yaml); they replace built-in profiles "
        "of the same name and add new ones. Empty: built-in profiles only.",
    )


class Settings(_Section):
    dicom: DicomSettings = Field(default_factory=DicomSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    assemble: AssembleSettings = Field(default_factory=AssembleSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    peers: dict[str, Peer] = Field(
        default_factory=dict, description="AE title -> address of known peers."
    )
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    viewer: ViewerSettings = Field(default_factory=ViewerSettings)
    logging: LogSettings = Field(default_factory=LogSettings)

    @model_validator(mode="after")
    def _source_check_needs_archive(self) -> Settings:
        checked = [name for name, peer in self.peers.items() if peer.check_source]
        if checked and not self.archive.dicomweb_url:
            raise ValueError(
                f"peers {', '.join(checked)} have check_source but archive.dicomweb_url is unset"
            )
        return self

    @property
    def index_path(self) -> Path:
        return self.storage.data_dir / "index.sqlite3"

    @property
    def store_location(self) -> Path | str:
        """What `store.index.Index` opens: the PostgreSQL URL if set, else the SQLite file."""
        return self.store.url or self.index_path

    @property
    def instances_dir(self) -> Path:
        return self.storage.data_dir / "instances"

    @property
    def results_dir(self) -> Path:
        return self.storage.data_dir / "results"

    @property
    def http_token_path(self) -> Path:
        """Where a generated HTTP token is kept when no token_sha256 is configured."""
        return self.storage.data_dir / "http-token"


class ConfigError(ValueError):
    """The configuration file or environment holds an invalid value."""


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in key[len(ENV_PREFIX) :].split("__")]
        if path[0] not in Settings.model_fields:
            continue  # e.g. MYONODE_CONFIG, MYONODE_TEST_DATA: not settings
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {'.'.join(path[:-1])} is not a section")
        node[path[-1]] = yaml.safe_load(value) if value else value
    return raw


def load_settings(
    path: Path | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Read settings from `path` (or ``$MYONODE_CONFIG``), then the environment, then overrides."""
    environ = dict(os.environ) if environ is None else environ
    if path is None and environ.get(ENV_PREFIX + "CONFIG"):
        path = Path(environ[ENV_PREFIX + "CONFIG"])
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    raw = _apply_env(raw, environ)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        source = str(path) if path else "environment"
        raise ConfigError(f"invalid configuration ({source}):\n" + "\n".join(lines)) from exc


def dump_settings(settings: Settings) -> str:
    """The effective configuration as YAML, as `myonode config show` prints it."""
    return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
