"""DICOM TLS contexts (PS3.15 B.9 "BCP 195" profile): TLS 1.2 or later, forward-secret AEAD
ciphers only, certificates verified against the configured CA when asked to."""

from __future__ import annotations

import ssl

from myonode.core.config import TlsSettings

# BCP 195 (RFC 9325) recommended TLS 1.2 suites; TLS 1.3 suites are all acceptable.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION
    return context


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The listener's context: its certificate, and client certificates required (and
    verified against `ca_certificates`) when `verify_clients` is on."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert settings.certificate and settings.private_key  # checked by TlsSettings
    context.load_cert_chain(settings.certificate, settings.private_key)
    if settings.ca_certificates:
        context.load_verify_locations(settings.ca_certificates)
        context.verify_mode = ssl.CERT_REQUIRED if settings.verify_clients else ssl.CERT_OPTIONAL
    return context


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """For outgoing C-STOREs to a peer with `tls: true`: the peer's certificate is verified
    against `ca_certificates` (else the system store); the node's own certificate is
    presented when configured, for peers that verify clients."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if settings.ca_certificates:
        context.load_verify_locations(settings.ca_certificates)
    else:
        context.load_default_certs()
    if settings.certificate and settings.private_key:
        context.load_cert_chain(settings.certificate, settings.private_key)
    return context
