"""The job queue seam with the embedded queue, on the SQLite and the PostgreSQL store: a job
whose worker dies every time ends failed with that reason, a worker that cannot read a job's
files says which, and a broker that cannot be reached leaves routed jobs waiting in the store,
not lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from myonode.app.process import offline_settings
from myonode.assemble.study import assemble_stable_studies
from myonode.core.config import load_settings
from myonode.pipelines import pipeline_versions
from myonode.queue.local import LocalQueue
from myonode.receive.ingest import Ingestor
from myonode.route.profiles import configured_pipelines, load_profiles
from myonode.store.index import Index
from myonode.worker.loop import MAX_ATTEMPTS, run_next_job
from myonode.worker.runner import Runner

from support import free_port


@pytest.fixture
def routed(tmp_path: Path, ct_series: list[Path], store_url: str):
    """The phantom series ingested and routed: one queued ct_muscle job in a fresh store."""
    settings = offline_settings(
        tmp_path / "node", load_settings(environ={}, overrides={"store.url": store_url})
    )
    index = Index(settings.store_location)
    ingestor = Ingestor(settings, index)
    for path in ct_series:
        assert ingestor.ingest(path.read_bytes()).ok
    runner = Runner(pipelines=configured_pipelines(load_profiles()))
    assert assemble_stable_studies(index, pipeline_versions(runner.pipelines), 0) == 1
    yield settings, index, runner
    index.close()


def test_a_job_whose_worker_dies_every_time_ends_failed_with_the_reason(routed):
    settings, index, runner = routed
    queue = LocalQueue(index)
    for _ in range(MAX_ATTEMPTS):  # claimed, then the process dies and restarts
        assert queue.claim() is not None
        assert queue.requeue_interrupted() == 1
    assert run_next_job(settings, index, queue, runner)
    [job] = index.jobs()
    assert job.state == "failed" and job.attempts == MAX_ATTEMPTS + 1
    assert job.error == f"gave up after {MAX_ATTEMPTS} attempts that did not finish"
    assert not run_next_job(settings, index, queue, runner)  # not queued again


def test_a_worker_that_cannot_read_the_instances_fails_the_job_naming_the_path(routed):
    settings, index, runner = routed
    [job] = index.jobs()
    missing = Path(index.series_instances(job.series_uid)[0].path)
    missing.unlink()
    assert run_next_job(settings, index, LocalQueue(index), runner)
    [job] = index.jobs()
    assert job.state == "failed"
    assert str(missing) in job.error and "shared storage mounted" in job.error


# SQLite only: the broker's connection retries, not the store, take this test's time; the
# PostgreSQL store keeps jobs while Redis is down in test_scaleout.
@pytest.mark.parametrize("store_url", [""], ids=["sqlite"])
def test_jobs_routed_while_the_broker_is_down_wait_in_the_store(routed):
    pytest.importorskip("celery", reason="the scale-out extra (celery[redis]) is not installed")
    from myonode.core.config import QueueSettings
    from myonode.queue.celery import CeleryQueue

    _, index, _ = routed
    down = QueueSettings(kind="celery", broker_url=f"redis://127.0.0.1:{free_port()}/0")
    queue = CeleryQueue(index, down)
    [job] = index.jobs()
    queue.submit([job.id])
    assert index.unsubmitted_jobs() == [job.id]
    assert queue.requeue_interrupted() == 0  # still down: offered, not taken, still waiting
    [job] = index.jobs()
    assert job.state == "queued" and job.submitted_at is None
