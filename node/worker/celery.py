"""A Celery worker process: jobs arrive as messages from the router (`queue.celery`), run here
through the resident engines. Start one per GPU (`myonode serve --role worker` with
`queue.kind: celery`), prefork with one child: the child opens the store and loads the available
pipelines' engines once when it starts, then keeps them for every job (children are never
recycled per task).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from celery import Celery, Task
from celery.signals import worker_process_init

from myonode.core.config import Settings
from myonode.encode import Device
from myonode.pipelines import PipelineUnavailable
from myonode.queue.celery import QUEUE, TASK, CeleryQueue, celery_app
from myonode.route.profiles import configured_pipelines, load_profiles, profile_dirs
from myonode.store.dialect import StoreUnavailable
from myonode.store.index import Index
from myonode.worker.loop import run_job
from myonode.worker.runner import Runner

log = logging.getLogger(__name__)

STORE_RETRY_S = 2.0  # how often a job whose store is unreachable is tried again


@dataclass
class _Process:
    """What one worker process keeps between jobs."""

    store: Index
    queue: CeleryQueue
    runner: Runner


_process: _Process | None = None


def _open(settings: Settings) -> _Process:
    """The store, queue and runner of this process, engines loaded (once per process)."""
    global _process
    if _process is None:
        store = Index(settings.store_location)
        profiles = load_profiles(profile_dirs(settings.routing.profiles_dir))
        runner = Runner(
            Device(serial_number=settings.dicom.ae_title), configured_pipelines(profiles)
        )
        for name in runner.pipelines:
            try:
                runner.engine(name)
            except PipelineUnavailable as exc:
                log.info("pipeline %s not loaded: %s", name, exc)
        _process = _Process(store, CeleryQueue(store, settings.queue), runner)
    return _process


def worker_app(settings: Settings) -> Celery:
    """The Celery app of a worker: the job task, and engines loaded as each child starts."""
    app = celery_app(settings.queue)

    @app.task(name=TASK, bind=True)
    def run_job_task(self: Task, job_id: int) -> str:
        try:
            process = _open(settings)
            job = process.queue.claim(job_id)
            if job is None:  # done or failed already: a duplicate or late redelivery
                return "skipped"
            return run_job(settings, process.store, process.queue, process.runner, job)
        except StoreUnavailable as exc:
            # PostgreSQL is down: nothing about the job could be recorded. The message is sent
            # again (failing the task would acknowledge it and leave the job queued for ever).
            log.warning("job %d waits for the store: %s", job_id, exc)
            raise self.retry(exc=exc, countdown=STORE_RETRY_S, max_retries=None) from exc

    @worker_process_init.connect(weak=False)
    def _load(**_: object) -> None:
        _open(settings)

    return app


def run_worker(settings: Settings, concurrency: int = 1) -> None:
    """Run a Celery worker in the foreground until it is stopped (SIGTERM: warm shutdown)."""
    worker_app(settings).worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--queues={QUEUE}",
            f"--hostname=myonode-{os.getpid()}@{socket.gethostname()}",
        ]
    )
