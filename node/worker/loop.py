"""The worker loop: take a job from the queue, run it through the resident engines, report the
outcome. Same code for the embedded worker threads and for Celery worker processes; the job's
state lives in the store, its delivery in the queue."""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Protocol

from myonode.core.config import Settings
from myonode.core.patient import patient_facts
from myonode.dispatch.archive import Archive, ArchiveError
from myonode.dispatch.outbox import destinations_for
from myonode.infer.inputs import load_inputs
from myonode.measure.assessment import Prior
from myonode.queue import JobQueue
from myonode.store.files import results_dir_for
from myonode.store.repository import JobRecord, Store
from myonode.worker.runner import Runner

log = logging.getLogger(__name__)

# A job claimed this many times without finishing (its worker died each time) is failed, not
# run again: a poison job must end with its reason, not loop.
MAX_ATTEMPTS = 3


class MetricsSink(Protocol):
    """What the loop reports per job (the app's `Metrics` satisfies it)."""

    def job(self, pipeline: str, outcome: str, seconds: float) -> None: ...


def local_priors(store: Store, study_uid: str) -> list[Prior]:
    """Masses this node measured on earlier studies of the patient."""
    priors = []
    for row in store.prior_masses(study_uid):
        date = patient_facts({"StudyDate": row.study_date}).study_date
        if date is not None and row.value is not None:
            priors.append(Prior(row.study_uid, date, row.structure, row.value))
    return priors


def priors_for(settings: Settings, store: Store, study_uid: str) -> tuple[list[Prior], list[str]]:
    """Earlier masses of the patient: this node's store, plus the archive when configured."""
    priors, notes = local_priors(store, study_uid), []
    study = store.study(study_uid)
    url = settings.archive.dicomweb_url
    date = patient_facts({"StudyDate": study.study_date}).study_date if study else None
    if url and study and study.patient_id and date:
        try:
            known = {p.study_uid for p in priors}
            priors += [
                p for p in Archive(url).priors(study.patient_id, date) if p.study_uid not in known
            ]
        except ArchiveError as exc:
            log.warning("prior lookup failed: %s", exc)
            notes.append(f"Prior results could not be looked up in the archive: {exc}.")
    return priors, notes


def _instance_paths(store: Store, series_uid: str) -> list[Path]:
    """The series' files; a file that this machine cannot read fails the job with its path
    (a worker whose shared storage is not mounted says so instead of measuring nothing)."""
    paths = [Path(row.path) for row in store.series_instances(series_uid)]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} instance files of series {series_uid} are not "
            f"readable on this worker (first: {missing[0]}); is the shared storage mounted?"
        )
    return paths


def run_job(
    settings: Settings,
    store: Store,
    queue: JobQueue,
    runner: Runner,
    job: JobRecord,
    metrics: MetricsSink | None = None,
) -> str:
    """Run one claimed job and report it to the queue; return its end state."""
    started = time.monotonic()
    if job.attempts > MAX_ATTEMPTS:
        queue.fail(job.id, f"gave up after {MAX_ATTEMPTS} attempts that did not finish")
        return "failed"
    try:
        paths = _instance_paths(store, job.series_uid)
        priors, notes = priors_for(settings, store, job.study_uid)
        inputs = job.input_map
        volume = load_inputs(inputs, lambda uid: _instance_paths(store, uid)) if inputs else None
        output = runner.run(
            job.pipeline,
            paths,
            results_dir_for(settings.results_dir, job),
            job.reason_list,
            priors=priors,
            notes=notes,
            volume=volume,
        )
    except Exception as exc:
        log.error("job %d (%s) failed: %s", job.id, job.pipeline, exc)
        log.debug("%s", traceback.format_exc())
        queue.fail(job.id, f"{type(exc).__name__}: {exc}")
        if metrics is not None:
            metrics.job(job.pipeline, "failed", time.monotonic() - started)
        return "failed"
    study = store.study(job.study_uid)
    queue.complete(
        job.id,
        [(f.sop_uid, f.sop_class_uid, f.path) for f in output.files],
        destinations_for(settings, study.calling_aet if study else None),
        output.result_rows(),
    )
    if metrics is not None:
        metrics.job(job.pipeline, "done", time.monotonic() - started)
    log.info("job %d (%s) done: %d outputs", job.id, job.pipeline, len(output.files))
    return "done"


def run_next_job(
    settings: Settings,
    store: Store,
    queue: JobQueue,
    runner: Runner,
    metrics: MetricsSink | None = None,
) -> bool:
    """Run one queued job, if any; return whether one ran."""
    job = queue.claim()
    if job is None:
        return False
    run_job(settings, store, queue, runner, job, metrics)
    return True
