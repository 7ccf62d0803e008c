"""Scale-out on real components: Debian redis-server as the Celery broker, the node's receiver,
router and dispatcher in one process, and Celery worker processes (`myonode serve --role
worker`) sharing its store and storage path. A worker killed mid-job and a broker restarted
mid-batch lose nothing and run nothing twice to a different result; the same on a real
PostgreSQL store, where the receiver refuses what it cannot index while PostgreSQL is down."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.app.service import Node
from myonode.core.config import Peer
from myonode.dispatch.scu import describe, send_files
from myonode.queue.celery import QUEUE, TASK, celery_app

from conftest import make_settings
from support import (
    RESULT_MODALITIES,
    Storescp,
    received_modalities,
    scanner_sends,
    sql,
    wait_until,
)
from support.servers import CeleryWorker, PostgresServer, RedisServer

pytest.importorskip("celery", reason="the scale-out extra (celery[redis]) is not installed")

SCANNER = "CT-SCANNER"  # `scanner_sends`' calling AE: results go back to it, here a storescp
JOB_TIMEOUT_S = 600  # two CPU cores shared with other test runs


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def storescp(tmp_path):
    peer = Storescp(tmp_path / "archive").start()
    yield peer
    peer.stop()


@pytest.fixture
def stack(tmp_path, redis, storescp, request):
    """The node's front roles in this process, and a factory for worker processes. The broker
    hands out a vanished worker's job again after the test's `visibility_timeout_s` mark."""
    mark = request.node.get_closest_marker("visibility_timeout_s")
    store_url = (
        request.getfixturevalue("postgres").create_database()
        if "postgres" in request.fixturenames
        else ""
    )
    settings = make_settings(
        tmp_path,
        **{
            "store.url": store_url,
            "queue.kind": "celery",
            "queue.broker_url": redis.url,
            "queue.visibility_timeout_s": mark.args[0] if mark else 3600,
            "queue.resubmit_seconds": 0.5,
            "http.enabled": False,
        },
    ).model_copy(update={"peers": {SCANNER: Peer(host="127.0.0.1", port=storescp.port)}})
    config = tmp_path / "node.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    node = Node(settings, roles=("receiver", "router", "dispatcher"))
    node.start()
    workers: list[CeleryWorker] = []

    def worker() -> CeleryWorker:
        started = CeleryWorker(config, tmp_path / f"worker-{len(workers)}.log").start()
        workers.append(started)
        return started

    yield node, worker
    for started in workers:
        started.stop()
    node.stop()


def study(tmp_path: Path, name: str) -> list[Path]:
    array, geometry = abdomen_phantom(shape=(8, 64, 64), pixel_mm=5.0, slice_mm=5.0)
    return write_ct_series(array, geometry, tmp_path / name, seed=f"scaleout-{name}")


def jobs(node: Node) -> list:
    return sql(node.index, "SELECT * FROM jobs ORDER BY id")


@pytest.mark.visibility_timeout_s(20)
def test_worker_killed_mid_job_the_job_completes_on_the_other(tmp_path, stack, storescp):
    node, worker = stack
    first = worker()
    scanner_sends(study(tmp_path, "a"), node.settings.dicom.ae_title, node.port)
    wait_until(lambda: [j for j in jobs(node) if j["state"] == "running"], JOB_TIMEOUT_S)
    second = worker()
    first.kill()

    wait_until(lambda: received_modalities(storescp) == RESULT_MODALITIES, JOB_TIMEOUT_S)
    wait_until(
        lambda: {r["state"] for r in sql(node.index, "SELECT state FROM outbox")} == {"sent"}
    )
    [job] = jobs(node)
    assert job["state"] == "done" and job["error"] is None
    assert job["attempts"] == 2  # claimed by the killed worker, then run again by the other
    assert second.process is not None and second.process.poll() is None
    sent = sql(node.index, "SELECT sop_uid, state FROM outbox")
    assert len(sent) == len(RESULT_MODALITIES) and {r["state"] for r in sent} == {"sent"}


def test_redis_restarted_mid_batch_every_study_processed_exactly_once(
    tmp_path, stack, redis, storescp
):
    node, worker = stack
    worker(), worker()
    scanner_sends(study(tmp_path, "a"), node.settings.dicom.ae_title, node.port)
    wait_until(lambda: jobs(node), JOB_TIMEOUT_S)
    redis.stop()
    # the store takes the instances and the routing while the broker is down; the jobs wait
    for name in ("b", "c"):
        scanner_sends(study(tmp_path, name), node.settings.dicom.ae_title, node.port)
    wait_until(lambda: len(jobs(node)) == 3, JOB_TIMEOUT_S)
    assert [j["submitted_at"] for j in jobs(node)][1:] == [None, None]
    redis.start()

    wait_until(
        lambda: (
            [j["state"] for j in jobs(node)] == ["done"] * 3
            and sql(node.index, "SELECT COUNT(*) AS n FROM outbox WHERE state = 'sent'")[0]["n"]
            == 3 * len(RESULT_MODALITIES)
        ),
        JOB_TIMEOUT_S,
    )
    assert [j["attempts"] for j in jobs(node)] == [1, 1, 1]
    assert all(j["submitted_at"] is not None for j in jobs(node))
    outputs = sql(node.index, "SELECT sop_uid, study_uid FROM outbox")
    assert len({r["sop_uid"] for r in outputs}) == 3 * len(RESULT_MODALITIES)
    assert len({r["study_uid"] for r in outputs}) == 3
    # the peer got each output once, under its deterministic UID
    assert len(storescp.files()) == 3 * len(RESULT_MODALITIES)


@pytest.mark.visibility_timeout_s(20)
def test_on_postgresql_a_killed_worker_and_a_broker_restart_lose_nothing(
    tmp_path, postgres, stack, redis, storescp
):
    """Both failures of the two tests above in one batch, on PostgreSQL: study a's worker is
    killed mid-job, the broker is down while study b arrives; both come back as SEG + SR once.
    Then PostgreSQL goes down while a job message reaches the worker: it waits, not lost."""
    node, worker = stack
    assert node.index.dialect.name == "postgresql"
    first = worker()
    scanner_sends(study(tmp_path, "a"), node.settings.dicom.ae_title, node.port)
    wait_until(lambda: [j for j in jobs(node) if j["state"] == "running"], JOB_TIMEOUT_S)
    second = worker()
    first.kill()
    redis.stop()
    scanner_sends(study(tmp_path, "b"), node.settings.dicom.ae_title, node.port)
    wait_until(lambda: len(jobs(node)) == 2, JOB_TIMEOUT_S)
    assert jobs(node)[1]["submitted_at"] is None  # waits in the store for the broker
    redis.start()

    wait_until(
        lambda: (
            [j["state"] for j in jobs(node)] == ["done"] * 2
            and sql(node.index, "SELECT COUNT(*) AS n FROM outbox WHERE state = 'sent'")[0]["n"]
            == 2 * len(RESULT_MODALITIES)
        ),
        JOB_TIMEOUT_S,
    )
    assert [j["attempts"] for j in jobs(node)] == [2, 1]  # a: killed, then run by the other
    assert second.process is not None and second.process.poll() is None
    outputs = sql(node.index, "SELECT sop_uid, study_uid FROM outbox")
    assert len({r["sop_uid"] for r in outputs}) == 2 * len(RESULT_MODALITIES)
    assert len(storescp.files()) == 2 * len(RESULT_MODALITIES)
    assert sorted(set(received_modalities(storescp))) == RESULT_MODALITIES

    # PostgreSQL down while a worker waits: a job message that arrives then is not dropped
    # (it is tried again until the store is back); here a late duplicate of job a, skipped
    done = jobs(node)
    postgres.stop()
    celery_app(node.settings.queue).send_task(TASK, args=[done[0]["id"]], queue=QUEUE)
    log = tmp_path / "worker-1.log"
    wait_until(lambda: "retry: Retry in" in log.read_text(), 120)
    postgres.start()
    wait_until(lambda: "'skipped'" in log.read_text(), 120)
    assert jobs(node) == done  # nothing ran twice


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test's own, to stop and start."""
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture
def receiver(tmp_path, own_postgres):
    """The receiver role alone, on the test's own PostgreSQL."""
    settings = make_settings(tmp_path, **{"store.url": own_postgres.create_database()})
    node = Node(settings, roles=("receiver",))
    node.start()
    yield node
    node.stop()


def test_with_postgresql_down_the_receiver_refuses_and_keeps_no_file(
    tmp_path, own_postgres, receiver
):
    node, settings = receiver, receiver.settings
    first, second = study(tmp_path, "a")[:2]
    own_postgres.stop()

    [refused] = send_files([describe(first)], "SCANNER", "MYONODE", "127.0.0.1", node.port)
    # 0xC000 "cannot read: PostgreSQL at ... unreachable", never a success
    assert not refused.ok and refused.status is not None and refused.status >= 0xA000
    assert "PostgreSQL" in refused.comment
    assert [p for p in settings.instances_dir.rglob("*") if p.is_file()] == []

    own_postgres.start()
    results = send_files(
        [describe(p) for p in (first, second)], "SCANNER", "MYONODE", "127.0.0.1", node.port
    )
    assert [r.ok for r in results] == [True, True]
    stored = sql(node.index, "SELECT sop_uid, path FROM instances")
    assert len(stored) == 2 and all(Path(r["path"]).is_file() for r in stored)
