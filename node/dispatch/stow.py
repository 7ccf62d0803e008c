"""STOW-RS sender: store Part 10 files in a DICOMweb service (PS3.18 10.5), via dicomweb-client.

Archives and cloud PACS that take no C-STORE take STOW-RS. The dispatcher uses this module for
peers of kind ``stow-rs`` with the same persisted outbox, retries and source check as C-STORE.
What is retried and what is not follows HTTP: a 4xx answer (and an instance the service lists
as failed) is the service refusing this request, and sending it again would be refused again,
so it is final; a 5xx answer or no answer (connection refused, timeout) is retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.errors
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass

from myonode.core.config import Peer

_FAILURE_REASON = "FailureReason"


@dataclass(frozen=True)
class StowResult:
    path: Path
    ok: bool
    final: bool  # not ok and not worth retrying: the service refused it
    answer: str = ""


def _client(peer: Peer, timeout_s: float) -> DICOMwebClient:
    if peer.url is None:
        raise ValueError("a stow-rs peer needs url")
    headers = {"Authorization": f"Bearer {peer.token}"} if peer.token else None
    session = None
    if peer.username is not None and peer.password is not None:
        session = create_session_from_user_pass(peer.username, peer.password)
    client = DICOMwebClient(
        peer.url.rstrip("/"), session=session, headers=headers, timeout=timeout_s
    )
    # dicomweb-client retries failed requests for ~30 s; the outbox has its own backoff.
    client.set_http_retry_params(retry=False)
    return client


def _answer(response: requests.Response | None) -> str:
    if response is None:
        return "no response"
    body = " ".join(response.text.split())[:300]
    return f"HTTP {response.status_code} {response.reason}: {body}".strip(": ")


def store_files(paths: Sequence[Path], peer: Peer, timeout_s: float = 30.0) -> list[StowResult]:
    """STOW-RS every readable file in one request; one result per file, in order."""
    paths = [Path(p) for p in paths]
    results: dict[Path, StowResult] = {}
    by_uid: dict[str, Path] = {}
    datasets = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            results[path] = StowResult(path, False, False, f"output file unreadable: {exc}")
            continue
        by_uid[str(ds.SOPInstanceUID)] = path
        datasets.append(ds)
    if datasets:
        results.update(_store(datasets, by_uid, peer, timeout_s))
    return [
        results.get(p, StowResult(p, False, False, "not in the service's answer")) for p in paths
    ]


def _store(
    datasets: list[pydicom.Dataset], by_uid: dict[str, Path], peer: Peer, timeout_s: float
) -> dict[Path, StowResult]:
    try:
        answer = _client(peer, timeout_s).store_instances(datasets)
    except requests.HTTPError as exc:
        response = exc.response
        final = response is not None and 400 <= response.status_code < 500
        return {p: StowResult(p, False, final, _answer(response)) for p in by_uid.values()}
    except requests.RequestException as exc:  # connection refused, timeout, broken transfer
        return {p: StowResult(p, False, False, f"no response: {exc}") for p in by_uid.values()}
    results: dict[Path, StowResult] = {}
    for item in answer.get("FailedSOPSequence", []):
        path = by_uid.get(str(item.get("ReferencedSOPInstanceUID", "")))
        if path is not None:
            reason = item.get(_FAILURE_REASON)
            detail = f"failure reason 0x{int(reason):04X}" if reason is not None else "failed"
            results[path] = StowResult(path, False, True, f"refused by the service: {detail}")
    for item in answer.get("ReferencedSOPSequence", []):
        path = by_uid.get(str(item.get("ReferencedSOPInstanceUID", "")))
        if path is not None and path not in results:
            results[path] = StowResult(path, True, False)
    return results
