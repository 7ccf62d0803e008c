"""Who may talk to the node's HTTP and the viewer: a Host allow-list and token authentication.

Both apps show patient data, so every request needs a token except the health check (which
shows counts only): ``Authorization: Bearer <token>``, or basic auth with any user name and
the token as password, which is what a browser asks for. The configuration holds only the
tokens' SHA-256: tokens are 256-bit random strings, so a plain hash cannot be brute-forced
and no slow KDF is needed per request. Without configured digests a token is generated into
``<data_dir>/http-token`` (0600), for `myonode serve` without a configuration file.

The Host check comes first and applies to every path: a page on attacker.example whose name
resolves to the node (DNS rebinding) sends ``Host: attacker.example`` and is refused even when
authentication is off.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from myonode.core.config import Settings

PUBLIC_PATHS = frozenset({"/api/health"})
REALM = 'Basic realm="myonode", charset="UTF-8"'


def token_digest(token: str) -> str:
    """The SHA-256 hex digest of a token, as `http.auth.token_sha256` lists it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def read_or_create_token(path: Path) -> str:
    """The token kept in `path`, created there readable by the owner only if absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_token() + "\n")
    return path.read_text().strip()


def accepted_digests(settings: Settings) -> frozenset[str] | None:
    """The digests of the tokens the HTTP servers accept; None when authentication is off."""
    auth = settings.http.auth
    if not auth.enabled:
        return None
    if auth.token_sha256:
        return frozenset(auth.token_sha256)
    return frozenset({token_digest(read_or_create_token(settings.http_token_path))})


def host_name(header: str) -> str:
    """The host of a Host header, without port or IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def presented_token(authorization: str) -> str | None:
    """The token in an Authorization header (Bearer, or the password of basic auth)."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, colon, password = decoded.partition(":")
        return password if colon and password else None
    return None


def authorized(token: str | None, digests: Iterable[str]) -> bool:
    """Whether the token's digest is one of `digests` (constant time per comparison)."""
    if token is None:
        return False
    digest = token_digest(token)
    return any(hmac.compare_digest(digest, known) for known in digests)


class Guard:
    """ASGI middleware: Host allow-list for every request, then the token unless public."""

    def __init__(
        self,
        app: ASGIApp,
        digests: frozenset[str] | None,
        allowed_hosts: Iterable[str],
        public_paths: frozenset[str] = PUBLIC_PATHS,
    ) -> None:
        self.app = app
        self.digests = digests
        self.allowed_hosts = {host_name(h) for h in allowed_hosts}
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = host_name(headers.get("host", ""))
        if "*" not in self.allowed_hosts and host not in self.allowed_hosts:
            response = PlainTextResponse("host not allowed (http.allowed_hosts)", status_code=400)
            await response(scope, receive, send)
            return
        if self.digests is not None and scope["path"] not in self.public_paths:
            if not authorized(presented_token(headers.get("authorization", "")), self.digests):
                response = PlainTextResponse(
                    "authentication required", status_code=401, headers={"WWW-Authenticate": REALM}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
