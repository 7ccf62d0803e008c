"""Jobs over Celery and Redis: the router submits each committed job once as a message naming
its id; Celery workers (`myonode.worker.celery`, one process per GPU, models resident) claim it
in the store and run it.

Delivery is at least once, and a job runs to one result however often it is delivered: outputs
have deterministic UIDs and paths, and the store only hands out a job that is queued or was
running when its worker died. Messages are acknowledged after the job ends (`acks_late`); a
worker process killed mid-job is noticed by its parent and its message goes back to the queue
for another worker. A job whose worker dies every time fails after `worker.loop.MAX_ATTEMPTS`.
While Redis is down, routed jobs stay queued in the store unsubmitted, and the router offers
them again every `queue.resubmit_seconds` until the broker takes them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery

from myonode.core.config import QueueSettings
from myonode.queue import StoreBackedQueue
from myonode.store.repository import JobRecord, Store

log = logging.getLogger(__name__)

TASK = "myonode.run_job"
QUEUE = "myonode-jobs"


def celery_app(settings: QueueSettings) -> Celery:
    """The Celery application both sides use: same broker, same task name and queue."""
    app = Celery("myonode", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=QUEUE,
        task_routes={TASK: {"queue": QUEUE}},
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # a vanished worker's job is looked for every 10 s (kombu's default: every 100 s)
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_throttle": 1,
        },
        # a publish while Redis is down fails fast; the job stays in the store for the router
        task_publish_retry=False,
    )
    return app


class CeleryQueue(StoreBackedQueue):
    """`JobQueue` over Celery: the store keeps every job's state, Redis carries the messages."""

    def __init__(self, store: Store, settings: QueueSettings) -> None:
        super().__init__(store)
        self.app = celery_app(settings)

    def submit(self, job_ids: Sequence[int]) -> None:
        """Send one message per job and record it as submitted; a job the broker did not take
        stays unsubmitted, offered again by `requeue_interrupted`."""
        self._send(job_ids)

    def _send(self, job_ids: Sequence[int]) -> int:
        sent: list[int] = []
        try:
            for job_id in job_ids:
                self.app.send_task(TASK, args=[job_id], queue=QUEUE)
                sent.append(job_id)
        except Exception as exc:  # kombu raises its own and the transport's errors
            log.warning("broker unavailable, %d jobs wait: %s", len(job_ids) - len(sent), exc)
        finally:
            if sent:
                self.store.mark_submitted(sent)
        return len(sent)

    def claim(self, job_id: int | None = None) -> JobRecord | None:
        """The delivered job, if it still needs running; Celery pushes, so no job id, no job."""
        return None if job_id is None else self.store.claim_job(job_id)

    def requeue_interrupted(self) -> int:
        """Offer the jobs the broker never took. Running jobs are left alone: their messages
        are unacknowledged, so the broker hands them out again if their worker died."""
        waiting = self.store.unsubmitted_jobs()
        return self._send(waiting) if waiting else 0
