"""The store's contract on both databases (SQLite, the default, and a real PostgreSQL): what a
job's life writes and reads back, schema versions recorded once, and claims that concurrent
workers and dispatchers (threads with connections of their own) each get exactly once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from myonode.store.index import OUTBOX_LEASE_S, Index
from myonode.store.migrations import MIGRATIONS
from myonode.store.records import ResultFilter, ResultRow
from myonode.store.repository import Decision, InstanceRecord, JobRequest

from support import sql

STUDY = {
    **dict.fromkeys(
        ("patient_sex", "patient_age", "patient_birth_date", "patient_size", "patient_weight")
    ),
    **dict.fromkeys(("study_time", "accession_number", "study_description")),
    "patient_id": "P1",
    "patient_name": "A^B",
    "study_date": "20240102",
}
SERIES = {"modality": "CT", "series_number": 2, "series_description": "abdomen"}


@pytest.fixture
def store(tmp_path: Path, store_url: str):
    index = Index(store_url or tmp_path / "index.sqlite3")
    yield index
    index.close()


def instance(study_uid: str, series_uid: str, n: int) -> InstanceRecord:
    return InstanceRecord(
        sop_uid=f"{series_uid}.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        series_uid=series_uid,
        study_uid=study_uid,
        transfer_syntax="1.2.840.10008.1.2.1",
        path=Path(f"/data/{series_uid}.{n}.dcm"),
        size=512 * 1024,
        sha256=f"{n:064x}",
        calling_aet="SCANNER",
        tags={"Modality": "CT", "n": n},
    )


def routed(store: Index, study_uid: str, jobs: int = 1) -> list[int]:
    """A study of one series received (two instances) and routed to `jobs` jobs."""
    store.record_instances(
        [(instance(study_uid, f"{study_uid}.1", n), STUDY, SERIES) for n in (1, 2)]
    )
    [stable] = [s for s in store.stable_studies(0) if s.study_uid == study_uid]
    requests = [
        JobRequest(f"{study_uid}.1", f"pipe{n}", "v1", "digest", ["CT abdomen"])
        for n in range(jobs)
    ]
    decisions = [Decision(f"{study_uid}.1", "pipe0", True, "CT abdomen", {"slices": 2})]
    return store.record_routing(study_uid, stable.change_seq, decisions, requests)


def test_a_jobs_life_reads_back_the_same_on_both_stores(store):
    [job_id] = routed(store, "1.9")
    study = store.study("1.9")
    assert study is not None and (study.patient_id, study.processed_seq) == ("P1", 2)
    assert [i.sop_uid for i in store.series_instances("1.9.1")] == ["1.9.1.1", "1.9.1.2"]
    assert store.recent_studies(5)[0].instances == 2
    assert store.decisions("1.9")[0].details == '{"slices": 2}'
    assert store.study_status("1.9") == "processing"
    assert store.job_done_for("1.9.1", "pipe0", "v1", "digest")

    job = store.claim_job()
    assert job is not None and (job.id, job.state, job.attempts) == (job_id, "running", 1)
    assert store.claim_job() is None
    results = [
        ResultRow("psoas", "mass", 812.5, "g", qc="review"),
        ResultRow("psoas", "qc", None, "", qc="review"),
    ]
    outputs = [("1.9.77", "1.2.840.10008.5.1.4.1.1.66.4", Path("/r/seg.dcm"))]
    store.complete_job(job_id, outputs, ["PACS", "VNA"], results)
    assert store.job(job_id).state == "done"
    assert store.study_status("1.9") == "delivering"

    due = store.due_outbox()
    assert [(r.destination, r.source_series_uid) for r in due] == [
        ("PACS", "1.9.1"),
        ("VNA", "1.9.1"),
    ]
    assert store.due_outbox() == []  # leased to the first caller
    assert len(store.due_outbox(now=due[0].created_at + OUTBOX_LEASE_S + 60)) == 2  # expired
    store.mark_sent(due[0].id)
    store.mark_attempt_failed(due[1].id, "refused", next_attempt_at=0)
    assert store.study_status("1.9") == "delivery retrying"
    assert store.failing_deliveries() == 1
    store.mark_failed(due[1].id, "gave up")
    assert store.study_status("1.9") == "delivery failed"
    assert store.counts()["outbox"] == {"sent": 1, "failed": 1}

    [mass] = store.query_results(ResultFilter(patient_id="P1", quantity="mass"))
    assert (mass.study_uid, mass.study_date, mass.value, mass.qc) == (
        "1.9",
        "20240102",
        812.5,
        "review",
    )
    [review] = store.studies_needing_review()
    assert (review.study_uid, review.review, review.fail, review.pipelines) == (
        "1.9",
        1,
        0,
        "pipe0",
    )
    assert store.qc_counts() == {"review": 1}

    assert store.reroute(["1.9"]) == ["1.9"]
    with pytest.raises(KeyError):
        store.reroute(["no.such.study"])
    assert store.settled_studies() == []  # changed again: routing is due
    assert store.forget_instances("1.9") == 2
    assert store.study_instances("1.9") == []


def test_routing_is_refused_when_an_instance_arrived_since(store):
    store.record_instance(instance("2.9", "2.9.1", 1), STUDY, SERIES)
    [stable] = store.stable_studies(0)
    store.record_instance(instance("2.9", "2.9.1", 2), STUDY, SERIES)
    assert (
        store.record_routing("2.9", stable.change_seq, [], [JobRequest("2.9.1", "p", "v", "d", [])])
        == []
    )
    assert store.jobs() == []


def test_schema_versions_are_recorded_once(tmp_path, store_url):
    location = store_url or tmp_path / "index.sqlite3"
    for _ in range(2):
        index = Index(location)
        rows = sql(index, "SELECT version FROM schema_migrations ORDER BY version")
        assert [row["version"] for row in rows] == [m.version for m in MIGRATIONS]
        index.close()


def test_roles_opening_a_new_store_at_once_migrate_it_once(tmp_path, store_url):
    location = store_url or tmp_path / "index.sqlite3"
    errors: list[BaseException] = []
    start = threading.Barrier(5)

    def role() -> None:
        start.wait()
        try:
            Index(location).close()
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=role) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    index = Index(location)
    rows = sql(index, "SELECT version FROM schema_migrations ORDER BY version")
    assert [row["version"] for row in rows] == [m.version for m in MIGRATIONS]
    index.close()


def test_concurrent_workers_claim_each_job_exactly_once(store):
    job_ids = routed(store, "3.9", jobs=40)
    location = store.dialect.url if store.path is None else store.path
    claimed: list[list[int]] = [[] for _ in range(6)]
    start = threading.Barrier(len(claimed))

    def worker(mine: list[int]) -> None:
        own = Index(location)  # a connection (a process, in production) of its own
        start.wait()
        while (job := own.claim_job()) is not None:
            mine.append(job.id)
        own.close()

    threads = [threading.Thread(target=worker, args=(mine,)) for mine in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    everything = [job_id for mine in claimed for job_id in mine]
    assert sorted(everything) == sorted(job_ids)  # every job, none twice
    assert {job.attempts for job in store.jobs()} == {1}


def test_concurrent_dispatchers_lease_each_delivery_exactly_once(store):
    [job_id] = routed(store, "4.9")
    store.claim_job()
    outputs = [(f"4.9.7{n}", "1.2.840.10008.5.1.4.1.1.88.22", Path(f"/r/{n}")) for n in range(30)]
    store.complete_job(job_id, outputs, ["PACS"], [])
    location = store.dialect.url if store.path is None else store.path
    leased: list[list[int]] = [[] for _ in range(5)]
    start = threading.Barrier(len(leased))

    def dispatcher(mine: list[int]) -> None:
        own = Index(location)
        start.wait()
        for _ in range(3):
            mine.extend(row.id for row in own.due_outbox())
        own.close()

    threads = [threading.Thread(target=dispatcher, args=(mine,)) for mine in leased]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    everything = [row_id for mine in leased for row_id in mine]
    assert sorted(everything) == sorted(r.id for r in store.outbox())
    assert len(everything) == 30


def test_prior_masses_come_from_earlier_studies_of_the_same_patient(store):
    for study_uid, date, mass in (("5.1", "20230101", 800.0), ("5.2", "20240101", 790.0)):
        store.record_instance(
            instance(study_uid, f"{study_uid}.1", 1), {**STUDY, "study_date": date}, SERIES
        )
        [stable] = [s for s in store.stable_studies(0) if s.study_uid == study_uid]
        [job_id] = store.record_routing(
            study_uid, stable.change_seq, [], [JobRequest(f"{study_uid}.1", "p", "v", "d", [])]
        )
        store.claim_job(job_id)
        rows = [
            ResultRow("psoas", "mass", mass, "g", qc="pass"),
            ResultRow("liver", "mass", 1.0, "g", qc="fail"),
        ]
        store.complete_job(job_id, [], [], rows)
    [prior] = store.prior_masses("5.2")
    assert (prior.study_uid, prior.study_date, prior.structure, prior.value) == (
        "5.1",
        "20230101",
        "psoas",
        800.0,
    )
    assert store.prior_masses("5.1") == []
    assert store.study_status("5.2") == "done"
    assert [j.state for j in store.jobs(limit=None)] == ["done", "done"]
    assert len(store.jobs(limit=1)) == 1


def test_receivers_committing_the_same_studies_at_once_never_deadlock(store):
    """Two receivers (hosts, on PostgreSQL) whose group commits hold instances of the same
    studies in opposite orders: every commit succeeds (rows are locked in one order)."""
    location = store.dialect.url if store.path is None else store.path
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def receiver(order: int) -> None:
        own = Index(location)
        start.wait()
        try:
            for n in range(30):
                batch = [
                    (instance(uid, f"{uid}.1", n * 2 + order), STUDY, SERIES)
                    for uid in ("6.1", "6.2")
                ]
                own.record_instances(batch[::-1] if order else batch)
        except BaseException as exc:  # reported below
            errors.append(exc)
        own.close()

    threads = [threading.Thread(target=receiver, args=(order,)) for order in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert len(store.study_instances("6.1")) == len(store.study_instances("6.2")) == 60
