"""The embedded queue: jobs are rows of the store, claimed oldest first by worker threads that
poll it. Nothing to deploy; what `myonode serve` uses unless a broker is configured."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from myonode.store.records import ResultRow
from myonode.store.repository import JobRecord, Store


class LocalQueue:
    """`JobQueue` over the store's job rows."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def submit(self, job_ids: Sequence[int]) -> None:
        """Nothing to send: the committed rows are the queue, polled by the workers."""

    def claim(self, job_id: int | None = None) -> JobRecord | None:
        return self.store.claim_job(job_id)

    def complete(
        self,
        job_id: int,
        outputs: Sequence[tuple[str, str, Path]],
        destinations: Sequence[str],
        results: Sequence[ResultRow],
    ) -> None:
        self.store.complete_job(job_id, outputs, destinations, results)

    def fail(self, job_id: int, error: str) -> None:
        self.store.fail_job(job_id, error)

    def requeue_interrupted(self) -> int:
        return self.store.requeue_interrupted_jobs()
