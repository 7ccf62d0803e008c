"""The running node: receiver, assembler, workers and dispatcher in one process.

Each stage is a loop over the index, so a restart picks up exactly where the last process
stopped: interrupted jobs are re-queued, pending deliveries are retried.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from .assemble import assemble_stable_studies
from .config import Settings
from .dispatch import Dispatcher, destinations_for
from .encode import Device
from .index import Index
from .ingest import Ingestor
from .pipeline import Runner
from .receive import Receiver
from .storage import remove_stale_partials, safe_component

log = logging.getLogger(__name__)


def results_dir_for(settings: Settings, job) -> Path:
    return (
        settings.results_dir
        / safe_component(job["study_uid"])
        / safe_component(job["series_uid"])
        / job["pipeline"]
    )


def run_next_job(settings: Settings, index: Index, runner: Runner) -> bool:
    """Run one queued job, if any; return whether one ran."""
    job = index.claim_job()
    if job is None:
        return False
    try:
        paths = [row["path"] for row in index.series_instances(job["series_uid"])]
        output = runner.run(
            job["pipeline"],
            paths,
            results_dir_for(settings, job),
            json.loads(job["reasons"] or "[]"),
        )
    except Exception as exc:
        log.error("job %d (%s) failed: %s", job["id"], job["pipeline"], exc)
        log.debug("%s", traceback.format_exc())
        index.fail_job(job["id"], f"{type(exc).__name__}: {exc}")
        return True
    study = index.study(job["study_uid"])
    index.complete_job(
        job["id"],
        [(f.sop_uid, f.sop_class_uid, f.path) for f in output.files],
        destinations_for(settings, study["calling_aet"] if study else None),
        output.result_rows(),
    )
    log.info("job %d (%s) done: %d outputs", job["id"], job["pipeline"], len(output.files))
    return True


class Node:
    """All stages of the node, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
        self.index = Index(settings.index_path)
        self.runner = Runner(Device(serial_number=settings.dicom.ae_title))
        self.receiver = Receiver(settings.dicom, Ingestor(settings, self.index))
        self.dispatcher = Dispatcher(settings, self.index)
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
        requeued = self.index.requeue_interrupted_jobs()
        if requeued:
            log.info("re-queued %d jobs interrupted by a restart", requeued)
        self.receiver.start()
        loops: list[tuple[str, Callable[[], object], float]] = [
            (
                "assemble",
                lambda: assemble_stable_studies(
                    self.index, self.runner, self.settings.assemble.quiet_seconds
                ),
                self.settings.assemble.poll_seconds,
            ),
            ("dispatch", self.dispatcher.send_due, self.settings.dispatch.poll_seconds),
        ]
        loops += [
            (f"worker-{n}", lambda: run_next_job(self.settings, self.index, self.runner), 0.5)
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
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()
        self.index.close()

    def wait(self) -> None:
        """Block until `stop()` is called (from a signal handler, typically)."""
        self._stop.wait()
