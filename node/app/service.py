"""The running node: receiver, assembler, workers and dispatcher in one process.

Each stage is a loop over the index, so a restart picks up exactly where the last process
stopped: interrupted jobs are re-queued, pending deliveries are retried.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from myonode.app.api import create_app
from myonode.app.metrics import Metrics
from myonode.app.webserver import WebServer
from myonode.assemble.study import assemble_stable_studies
from myonode.core.config import Settings
from myonode.core.patient import patient_facts
from myonode.dispatch.archive import Archive, ArchiveError
from myonode.dispatch.outbox import Dispatcher, destinations_for
from myonode.encode import Device
from myonode.infer.inputs import load_inputs
from myonode.measure.assessment import Prior
from myonode.pipelines import pipeline_versions
from myonode.receive.ingest import Ingestor
from myonode.receive.scp import Receiver
from myonode.route.profiles import (
    configured_pipelines,
    load_profiles,
    profile_dirs,
    wanted_series,
)
from myonode.store.files import prepare_data_dir, remove_stale_partials, results_dir_for
from myonode.store.index import Index
from myonode.store.retention import prune
from myonode.worker.runner import Runner

log = logging.getLogger(__name__)
RETENTION_PAUSE_S = 3600.0  # between two passes of storage.retention in a running node


def local_priors(index: Index, study_uid: str) -> list[Prior]:
    """Masses this node measured on earlier studies of the patient."""
    priors = []
    for row in index.prior_masses(study_uid):
        date = patient_facts({"StudyDate": row["study_date"]}).study_date
        if date is not None and row["value"] is not None:
            priors.append(Prior(row["study_uid"], date, row["structure"], row["value"]))
    return priors


def priors_for(settings: Settings, index: Index, study_uid: str) -> tuple[list[Prior], list[str]]:
    """Earlier masses of the patient: this node's index, plus the archive when configured."""
    priors, notes = local_priors(index, study_uid), []
    study = index.study(study_uid)
    url = settings.archive.dicomweb_url
    date = patient_facts({"StudyDate": study["study_date"]}).study_date if study else None
    if url and study and study["patient_id"] and date:
        try:
            known = {p.study_uid for p in priors}
            priors += [
                p
                for p in Archive(url).priors(study["patient_id"], date)
                if p.study_uid not in known
            ]
        except ArchiveError as exc:
            log.warning("prior lookup failed: %s", exc)
            notes.append(f"Prior results could not be looked up in the archive: {exc}.")
    return priors, notes


def run_next_job(
    settings: Settings, index: Index, runner: Runner, metrics: Metrics | None = None
) -> bool:
    """Run one queued job, if any; return whether one ran."""
    job = index.claim_job()
    if job is None:
        return False
    started = time.monotonic()
    try:
        paths = [row["path"] for row in index.series_instances(job["series_uid"])]
        priors, notes = priors_for(settings, index, job["study_uid"])
        inputs = json.loads(job["inputs"]) if job["inputs"] else None
        volume = None
        if inputs:
            volume = load_inputs(
                inputs, lambda uid: [Path(r["path"]) for r in index.series_instances(uid)]
            )
        output = runner.run(
            job["pipeline"],
            paths,
            results_dir_for(settings.results_dir, job),
            json.loads(job["reasons"] or "[]"),
            priors=priors,
            notes=notes,
            volume=volume,
        )
    except Exception as exc:
        log.error("job %d (%s) failed: %s", job["id"], job["pipeline"], exc)
        log.debug("%s", traceback.format_exc())
        index.fail_job(job["id"], f"{type(exc).__name__}: {exc}")
        if metrics is not None:
            metrics.job(job["pipeline"], "failed", time.monotonic() - started)
        return True
    study = index.study(job["study_uid"])
    index.complete_job(
        job["id"],
        [(f.sop_uid, f.sop_class_uid, f.path) for f in output.files],
        destinations_for(settings, study["calling_aet"] if study else None),
        output.result_rows(),
    )
    if metrics is not None:
        metrics.job(job["pipeline"], "done", time.monotonic() - started)
    log.info("job %d (%s) done: %d outputs", job["id"], job["pipeline"], len(output.files))
    return True


class Node:
    """All stages of the node, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        prepare_data_dir(settings.storage.data_dir, settings.index_path)
        self.index = Index(settings.index_path)
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
                create_app(self.index, settings, self.metrics, wanted_series(self.profiles)),
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
        requeued = self.index.requeue_interrupted_jobs()
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
                ),
                self.settings.assemble.poll_seconds,
            ),
            ("dispatch", self.dispatcher.send_due, self.settings.dispatch.poll_seconds),
        ]
        retention = self.settings.storage.retention
        if retention.keep_days is not None or retention.free_mb is not None:
            loops.append(("retention", self.retain, RETENTION_PAUSE_S))
        loops += [
            (
                f"worker-{n}",
                lambda: run_next_job(self.settings, self.index, self.runner, self.metrics),
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
