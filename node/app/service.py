"""The running node: receiver, router (assembler), workers, dispatcher and web in one process,
or the roles a site gives this process (`myonode serve --role ...`) when one machine is not
enough: receivers and routers on one host, Celery GPU workers on others, all sharing one store
and one storage path.

Each stage is a loop over the store, so a restart picks up exactly where the last process
stopped: interrupted jobs are re-queued, pending deliveries are retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection

from myonode.app.api import create_app
from myonode.app.metrics import Metrics
from myonode.app.webserver import WebServer
from myonode.assemble.study import assemble_stable_studies
from myonode.core.config import Settings
from myonode.dispatch.outbox import Dispatcher
from myonode.encode import Device
from myonode.pipelines import pipeline_versions
from myonode.queue import JobQueue
from myonode.queue.local import LocalQueue
from myonode.receive.ingest import Ingestor
from myonode.receive.scp import Receiver
from myonode.route.profiles import (
    configured_pipelines,
    load_profiles,
    profile_dirs,
    wanted_series,
)
from myonode.store.files import prepare_data_dir, remove_stale_partials
from myonode.store.index import Index
from myonode.store.repository import Store
from myonode.store.retention import prune
from myonode.worker.loop import run_next_job
from myonode.worker.runner import Runner

log = logging.getLogger(__name__)
RETENTION_PAUSE_S = 3600.0  # between two passes of storage.retention in a running node

ROLES = ("receiver", "router", "worker", "dispatcher", "web")


def job_queue(store: Store, settings: Settings) -> JobQueue:
    """The queue `queue.kind` names, over `store`."""
    if settings.queue.kind == "celery":
        from myonode.queue.celery import CeleryQueue

        return CeleryQueue(store, settings.queue)
    return LocalQueue(store)


class Node:
    """The stages of the node this process runs (`roles`, all by default), started and stopped
    together. With `queue.kind: celery` the worker role is not a thread of this process but a
    Celery worker process of its own (`myonode serve --role worker`)."""

    def __init__(self, settings: Settings, roles: Collection[str] = ROLES) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; known: {', '.join(ROLES)}")
        self.settings = settings
        self.roles = set(roles)
        prepare_data_dir(
            settings.storage.data_dir, None if settings.store.url else settings.index_path
        )
        self.index = Index(settings.store_location)
        self.queue = job_queue(self.index, settings)
        self.profiles = load_profiles(profile_dirs(settings.routing.profiles_dir))
        self.runner = Runner(
            Device(serial_number=settings.dicom.ae_title), configured_pipelines(self.profiles)
        )
        self.metrics = Metrics(self.index)
        self.receiver = (
            Receiver(
                settings.dicom, Ingestor(settings, self.index), on_outcome=self.metrics.instance
            )
            if "receiver" in self.roles
            else None
        )
        self.dispatcher = Dispatcher(settings, self.index)
        self.web = (
            WebServer(
                create_app(self.index, settings, self.metrics, wanted_series(self.profiles)),
                settings.http.bind,
                settings.http.port,
            )
            if settings.http.enabled and "web" in self.roles
            else None
        )
        self._stop = threading.Event()
        self._resubmit_at = 0.0
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        if self.receiver is None:
            raise RuntimeError("this node runs no receiver")
        return self.receiver.port

    @property
    def _worker_threads(self) -> bool:
        """Jobs run as threads of this process (the embedded queue); Celery workers are
        processes of their own."""
        return "worker" in self.roles and self.settings.queue.kind == "local"

    def start(self) -> None:
        loops: list[tuple[str, Callable[[], object], float]] = []
        if self.receiver is not None:
            removed = remove_stale_partials(self.settings.instances_dir)
            if removed:
                log.info("removed %d partial files from an interrupted run", removed)
        if "router" in self.roles:
            self.index.restart_quiet_timers()
            loops.append(("assemble", self._route, self.settings.assemble.poll_seconds))
        if self._worker_threads or ("router" in self.roles and self.settings.queue.kind != "local"):
            requeued = self.queue.requeue_interrupted()
            if requeued:
                log.info("re-queued %d jobs interrupted by a restart", requeued)
        if self.receiver is not None:
            self.receiver.start()
        if self.web is not None:
            self.web.start()
            log.info("REST API on http://%s:%d/api/", self.settings.http.bind, self.web.port)
        if "dispatcher" in self.roles:
            loops.append(
                ("dispatch", self.dispatcher.send_due, self.settings.dispatch.poll_seconds)
            )
        retention = self.settings.storage.retention
        if "router" in self.roles and (
            retention.keep_days is not None or retention.free_mb is not None
        ):  # one process of a site applies retention: the one that routes
            loops.append(("retention", self.retain, RETENTION_PAUSE_S))
        if self._worker_threads:
            loops += [
                (
                    f"worker-{n}",
                    lambda: run_next_job(
                        self.settings, self.index, self.queue, self.runner, self.metrics
                    ),
                    0.5,
                )
                for n in range(self.settings.workers.count)
            ]
        for name, step, pause in loops:
            thread = threading.Thread(
                target=self._loop, args=(name, step, pause), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _route(self) -> int:
        """Route the stable studies; with a broker, also offer the jobs it has not taken yet.
        One thread does both, so a job is never offered again while its routing submits it."""
        queued = assemble_stable_studies(
            self.index,
            pipeline_versions(self.runner.pipelines),
            self.settings.assemble.quiet_seconds,
            self.profiles,
            self.queue,
        )
        now = time.monotonic()
        if self.settings.queue.kind != "local" and now >= self._resubmit_at:
            self._resubmit_at = now + self.settings.queue.resubmit_seconds
            self.queue.requeue_interrupted()
        return queued

    def retain(self) -> bool:
        """Apply `storage.retention` once (the loop waits an interval after each pass)."""
        retention = self.settings.storage.retention
        report = prune(
            self.index,
            self.settings.instances_dir,
            self.settings.results_dir,
            retention.keep_days,
            retention.free_mb,
        )
        if report.studies:
            log.info(
                "retention deleted %d files (%d MiB) of %d studies",
                report.files,
                report.bytes // 2**20,
                len(report.studies),
            )
        return False

    def _loop(self, name: str, step: Callable[[], object], pause: float) -> None:
        while not self._stop.is_set():
            try:
                busy = step()
            except Exception:
                log.exception("%s loop error", name)
                busy = False
            if not busy:
                self._stop.wait(pause)

    def stop(self) -> None:
        self._stop.set()
        if self.receiver is not None:
            self.receiver.stop()
        if self.web is not None:
            self.web.stop()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()
        self.index.close()

    def wait(self) -> None:
        """Block until `stop()` is called (from a signal handler, typically)."""
        self._stop.wait()
