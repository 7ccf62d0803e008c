"""Dispatch: deliver the outbox to its destinations, retrying with backoff, losing nothing.

An outbox row is marked sent only after the peer answered the C-STORE with success or a
warning. A destination that is down or refuses keeps its rows pending with an exponentially
growing delay (capped), so delivery resumes by itself when the peer is back, until
`dispatch.give_up_after_hours` after the row was queued: then it ends `failed` (an AE with no
address, a peer gone for good), which the study's status and /metrics show. Peers of kind
``stow-rs`` get the same outbox over STOW-RS (`stow`), except that a 4xx answer is final: the
row is marked failed with the answer instead of being retried forever.

A peer with `check_source` is the archive the studies came from: before delivering, the node
asks it (QIDO-RS) whether the measured series is still there. If it was deleted while the node
processed it, the results are withheld, with the reason, instead of re-creating a study that
someone removed; they stay on the node.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

from myonode.core.config import Peer, Settings
from myonode.core.tls import client_context
from myonode.dispatch.archive import Archive, ArchiveError
from myonode.dispatch.scu import SendError, SendResult, describe, send_files
from myonode.dispatch.stow import store_files
from myonode.store.repository import OutboxRecord, Store

log = logging.getLogger(__name__)

CALLING = "calling"


def destinations_for(settings: Settings, calling_aet: str | None) -> list[str]:
    """Outbox destination names for a study sent by `calling_aet`.

    'calling' becomes ``calling:<AET>``, resolved to an address from `peers` at send time,
    so a peer added to the configuration later still receives what is waiting for it.
    """
    resolved = []
    for name in settings.dispatch.destinations:
        if name == CALLING:
            if calling_aet:
                resolved.append(f"{CALLING}:{calling_aet}")
        else:
            resolved.append(name)
    return resolved


class Dispatcher:
    def __init__(self, settings: Settings, index: Store) -> None:
        self.settings = settings
        self.index = index

    def _peer(self, destination: str) -> tuple[str, Peer]:
        aet = destination.split(":", 1)[1] if destination.startswith(CALLING + ":") else destination
        peer = self.settings.peers.get(aet)
        if peer is None:
            raise SendError(f"no address for AE {aet!r}: add it under 'peers' in the configuration")
        return aet, peer

    def _source_present(self, rows: list[OutboxRecord]) -> list[OutboxRecord]:
        """The rows whose source series is still in the archive; the others are withheld."""
        archive = Archive(self.settings.archive.dicomweb_url)
        sources = {(row.study_uid, row.source_series_uid) for row in rows}
        present = {source: archive.has_series(*source) for source in sources}
        kept = []
        for row in rows:
            if present[(row.study_uid, row.source_series_uid)]:
                kept.append(row)
                continue
            reason = (
                f"source series {row.source_series_uid} is no longer in the archive (deleted "
                "while the node processed it); results kept on the node, not delivered"
            )
            self.index.mark_withheld(row.id, reason)
            log.warning("withheld %s for %s: %s", row.sop_uid, row.destination, reason)
        return kept

    def _backoff(self, attempts: int) -> float:
        retry = self.settings.dispatch.retry
        return min(retry.max_seconds, retry.initial_seconds * retry.factor ** max(attempts, 0))

    def send_due(self) -> int:
        """One pass over the due outbox rows; returns how many were delivered."""
        by_destination: dict[str, list[OutboxRecord]] = defaultdict(list)
        for row in self.index.due_outbox():
            by_destination[row.destination].append(row)
        delivered = 0
        for destination, rows in by_destination.items():
            delivered += self._send_to(destination, rows)
        return delivered

    def _send_to(self, destination: str, rows: list[OutboxRecord]) -> int:
        try:
            aet, peer = self._peer(destination)
            if peer.check_source:
                rows = self._source_present(rows)
        except (SendError, ArchiveError) as exc:
            for row in rows:
                self._failed(row, str(exc))
            return 0
        if peer.kind == "stow-rs":
            return self._store(destination, peer, rows)
        by_path = {}
        items = []
        for row in rows:
            try:
                item = describe(Path(row.path))
            except OSError as exc:
                self._failed(row, f"output file unreadable: {exc}")
                continue
            by_path[item.path] = row
            items.append(item)
        if not items:
            return 0
        answered: set[int] = set()
        delivered = 0

        def record(result: SendResult) -> None:
            nonlocal delivered
            row = by_path[result.path]
            answered.add(row.id)
            if result.ok:
                self.index.mark_sent(row.id)
                delivered += 1
                log.info("delivered %s to %s", row.sop_uid, destination)
            else:
                status = "no response" if result.status is None else f"0x{result.status:04X}"
                self._failed(row, f"{status} {result.comment}".strip())

        try:
            send_files(
                items,
                self.settings.dicom.ae_title,
                aet,
                peer.host,
                peer.port,
                on_result=record,
                timeout_s=self.settings.dicom.network_timeout_s,
                tls=client_context(self.settings.dicom.tls) if peer.tls else None,
            )
        except (SendError, OSError) as exc:
            for row in by_path.values():
                if row.id not in answered:
                    self._failed(row, str(exc))
        return delivered

    def _store(self, destination: str, peer: Peer, rows: list[OutboxRecord]) -> int:
        """STOW-RS the rows' files; 4xx answers are final, everything else is retried."""
        results = store_files(
            [Path(row.path) for row in rows], peer, self.settings.dicom.network_timeout_s
        )
        delivered = 0
        for row, result in zip(rows, results, strict=True):
            if result.ok:
                self.index.mark_sent(row.id)
                delivered += 1
                log.info("delivered %s to %s (STOW-RS)", row.sop_uid, destination)
            elif result.final:
                self.index.mark_failed(row.id, result.answer)
                log.error("%s refused %s for good: %s", destination, row.sop_uid, result.answer)
            else:
                self._failed(row, result.answer)
        return delivered

    def _failed(self, row: OutboxRecord, error: str) -> None:
        deadline_s = self.settings.dispatch.give_up_after_hours * 3600
        if time.time() - row.created_at >= deadline_s:
            error = f"gave up after {self.settings.dispatch.give_up_after_hours:g} h: {error}"
            self.index.mark_failed(row.id, error)
            log.error("delivery of %s to %s failed: %s", row.sop_uid, row.destination, error)
            return
        delay = self._backoff(row.attempts)
        self.index.mark_attempt_failed(row.id, error, time.time() + delay)
        log.warning(
            "delivery of %s to %s failed (%s); retry in %.0f s",
            row.sop_uid,
            row.destination,
            error,
            delay,
        )
