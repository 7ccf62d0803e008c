"""The embedded queue: jobs are rows of the store, claimed oldest first by worker threads that
poll it. Nothing to deploy; what `myonode serve` uses unless a broker is configured."""

from __future__ import annotations

from collections.abc import Sequence

from myonode.queue import StoreBackedQueue
from myonode.store.repository import JobRecord


class LocalQueue(StoreBackedQueue):
    """`JobQueue` over the store's job rows."""

    def submit(self, job_ids: Sequence[int]) -> None:
        """Nothing to send: the committed rows are the queue, polled by the workers."""

    def claim(self, job_id: int | None = None) -> JobRecord | None:
        return self.store.claim_job(job_id)

    def requeue_interrupted(self) -> int:
        return self.store.requeue_interrupted_jobs()
