"""Who may associate, from where, and how many at once.

A calling AE title is only a claim: any host can send any title. An allow-list entry can
therefore bind the title to an address or network and, with DICOM TLS, to the client
certificate it must present. The called AE title must be the node's own. Limits per calling
AE title and per remote address keep one sender (or ten idle associations from one host) from
taking every slot.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from myonode.core.config import AllowedPeer, DicomSettings

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)  # transient: the sender may retry later


@dataclass(frozen=True)
class Caller:
    """What the node knows about a requestor when it decides to accept it."""

    calling_aet: str
    called_aet: str
    address: str
    certificate: bytes | None = None  # DER, when TLS presented one


def _certificate_matches(wanted: str, der: bytes | None, subject_cn: str | None) -> bool:
    if der is None:
        return False
    fingerprint = hashlib.sha256(der).hexdigest()
    normalised = wanted.replace(":", "").lower()
    return normalised == fingerprint or (subject_cn is not None and wanted == subject_cn)


def _entry_matches(entry: AllowedPeer, caller: Caller, subject_cn: str | None) -> bool:
    if entry.ae_title.strip() != caller.calling_aet.strip():
        return False
    if entry.network is not None:
        try:
            address = ipaddress.ip_address(caller.address)
        except ValueError:
            return False
        if address not in ipaddress.ip_network(entry.network, strict=False):
            return False
    if entry.certificate is not None:
        return _certificate_matches(entry.certificate, caller.certificate, subject_cn)
    return True


class Admission:
    """Decides whether an association is accepted; counts connections per address."""

    def __init__(self, settings: DicomSettings) -> None:
        self.settings = settings
        self.allowed = [
            AllowedPeer(ae_title=entry) if isinstance(entry, str) else entry
            for entry in settings.allowed_calling_aets
        ]
        self._connections: Counter[str] = Counter()
        self._lock = threading.Lock()

    def connection_opened(self, address: str) -> bool:
        """Count a new TCP connection; False when its address already has too many."""
        with self._lock:
            if self._connections[address] >= self.settings.max_associations_per_address:
                return False
            self._connections[address] += 1
            return True

    def connection_closed(self, address: str) -> None:
        with self._lock:
            self._connections[address] -= 1
            if self._connections[address] <= 0:
                del self._connections[address]

    def reject_reason(
        self, caller: Caller, active_calling_aets: list[str], subject_cn: str | None = None
    ) -> tuple[tuple[int, int, int], str] | None:
        """The A-ASSOCIATE-RJ to send (and why), or None to accept.

        `active_calling_aets` are the calling AE titles of the node's other associations.
        """
        if self.settings.require_called_aet and (
            caller.called_aet.strip() != self.settings.ae_title.strip()
        ):
            return CALLED_AE_NOT_RECOGNISED, f"called AE title {caller.called_aet!r} is not ours"
        if self.allowed and not any(
            _entry_matches(entry, caller, subject_cn) for entry in self.allowed
        ):
            return CALLING_AE_NOT_RECOGNISED, (
                f"calling AE {caller.calling_aet!r} from {caller.address} matches no "
                "dicom.allowed_calling_aets entry"
            )
        same_ae = sum(1 for aet in active_calling_aets if aet.strip() == caller.calling_aet.strip())
        if same_ae >= self.settings.max_associations_per_ae:
            return LOCAL_LIMIT_EXCEEDED, (
                f"calling AE {caller.calling_aet!r} already has {same_ae} associations "
                "(dicom.max_associations_per_ae)"
            )
        return None


def subject_common_name(peer_certificate: dict[str, Any] | None) -> str | None:
    """The subject CN of a certificate as `ssl.SSLSocket.getpeercert()` decodes it."""
    for rdn in (peer_certificate or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
