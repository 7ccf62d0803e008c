"""The job queue: how routing hands jobs to workers and how workers report back. `JobQueue` is
the interface the assembler (submit) and the worker loop (claim, complete, fail, requeue on
restart) use; `local.LocalQueue` is the embedded default (job rows in the store, claimed by
worker threads) and `celery.CeleryQueue` hands jobs to Celery workers over Redis. The store
stays the record of every job's state and outcome whichever queue carries it.

May import `store`, `core` and `dicom`; never a stage above it (workers register with a queue,
a queue never imports a worker).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from myonode.store.records import ResultRow
from myonode.store.repository import JobRecord, Store


@runtime_checkable
class JobQueue(Protocol):
    """Jobs between routing and the workers. A job is committed to the store before it is
    submitted, so a queue that loses a message loses no job (`requeue_interrupted` resends)."""

    def submit(self, job_ids: Sequence[int]) -> None:
        """Offer committed jobs to the workers."""

    def claim(self, job_id: int | None = None) -> JobRecord | None:
        """Take a job to run: `job_id` as delivered, or (pull queues) the next queued one."""

    def complete(
        self,
        job_id: int,
        outputs: Sequence[tuple[str, str, Path]],
        destinations: Sequence[str],
        results: Sequence[ResultRow],
    ) -> None:
        """The job's outputs are written: record them, its results and its deliveries."""

    def fail(self, job_id: int, error: str) -> None:
        """The job cannot succeed as it is; keep the reason."""

    def requeue_interrupted(self) -> int:
        """After a restart: make jobs that were running or not yet delivered run again."""


class StoreBackedQueue:
    """What every queue shares: a job's end is written to the store, the record of every
    job whichever queue carried it."""

    def __init__(self, store: Store) -> None:
        self.store = store

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
