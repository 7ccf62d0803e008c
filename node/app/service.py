"""The running node: receiver, assembler, workers and dispatcher in one process.

Each stage is a loop over the index, so a restart picks up exactly where the last process
stopped: interrupted jobs are re-queued, pending deliveries are retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from myonode.app.api import create_app
from myonode.app.metrics import Metrics
from myonode.app.webserver import WebServer
from myonode.assemble.study import assemble_stable_studies
from myonode.core.config import Settings
from myonode.dispatch.outbox import Dispatcher
from myonode.encode import Device
from myonode.pipelines import pipeline_versions
from myonode.queue.local import LocalQueue
from myonode.receive.ingest import Ingestor
from myonode.receive.scp import Receiver
from myonode.route.profiles import configured_pipelines, load_profiles, profile_dirs
from myonode.store.files import remove_stale_partials
from myonode.store.index import Index
from myonode.worker.loop import run_next_job
from myonode.worker.runner import Runner

log = logging.getLogger(__name__)


class Node:
    """All stages of the node, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
        self.index = Index(settings.index_path)
        self.queue = LocalQueue(self.index)
        self.profiles = load_profiles(profile_dirs(settings.routing.profiles_dir))
        self.runner = Runner(
            Device(serial_number=settings.dicom.ae_title), configured_pipelines(self.profiles)
        )
        self.metrics = Metrics(self.index)
        self.receiver = Receiver(
            settings.dicom, Ingestor(settings, self.index), on_outcome=self.metrics.instance
        )
        self.dispatcher = Dispatcher(settings, self.index)
        self.web = (
            WebServer(
                create_app(self.index, settings, self.metrics),
                settings.http.bind,
                settings.http.port,
            )
            if settings.http.enabled
            else None
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self.receiver.port

    def start(self) -> None:
        removed = remove_stale_partials(self.settings.instances_dir)
        if removed:
            log.info("removed %d partial files from an interrupted run", removed)
        self.index.restart_quiet_timers()
        requeued = self.queue.requeue_interrupted()
        if requeued:
            log.info("re-queued %d jobs interrupted by a restart", requeued)
        self.receiver.start()
        if self.web is not None:
            self.web.start()
            log.info("REST API on http://%s:%d/api/", self.settings.http.bind, self.web.port)
        loops: list[tuple[str, Callable[[], object], float]] = [
            (
                "assemble",
                lambda: assemble_stable_studies(
                    self.index,
                    pipeline_versions(self.runner.pipelines),
                    self.settings.assemble.quiet_seconds,
                    self.profiles,
                    self.queue,
                ),
                self.settings.assemble.poll_seconds,
            ),
            ("dispatch", self.dispatcher.send_due, self.settings.dispatch.poll_seconds),
        ]
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
