"""Housekeeping of a running node: its data is private to it (files 0600, directories 0700,
the index included), a delivery that cannot succeed ends failed after a deadline instead
of being retried for ever, and retention deletes only what is done and delivered."""

from __future__ import annotations

import os
import sqlite3
import stat

import pydicom
import pytest
import yaml

from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.dispatch.scu import describe, send_files
from myonode.store.files import make_private_dirs, write_durably
from myonode.store.index import Index
from myonode.store.records import ResultFilter
from myonode.store.retention import prune

from conftest import make_settings
from support import Storescp, free_port, metric, myonode, sql, wait_until


@pytest.fixture
def storescp(tmp_path):
    peer = Storescp(tmp_path / "archive").start()
    yield peer
    peer.stop()


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """The umask a careless service manager leaves (files 0644, directories 0755)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_received_data_and_the_index_are_private(tmp_path, node_factory, ct_series, open_umask):
    settings = make_settings(tmp_path)
    node = node_factory(settings, peers={"SCANNER": free_port()})
    results = send_files(
        [describe(p) for p in ct_series], "SCANNER", "MYONODE", "127.0.0.1", node.port
    )
    assert all(r.ok for r in results)
    wait_until(lambda: node.index.counts()["outbox"].get("pending", 0) == 3, timeout=60)
    data = settings.storage.data_dir
    assert mode(data) == 0o700
    index_files = [data / "index.sqlite3", data / "index.sqlite3-wal", data / "index.sqlite3-shm"]
    assert [mode(p) for p in index_files if p.exists()] == [0o600] * sum(
        p.exists() for p in index_files
    )
    assert (data / "index.sqlite3").exists()
    stored = [p for p in data.rglob("*") if p.name not in {i.name for i in index_files}]
    assert any(p.suffix == ".dcm" for p in stored) and any(p.is_dir() for p in stored)
    for path in stored:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path


def test_an_existing_open_data_dir_is_closed_at_start(tmp_path, node_factory, open_umask):
    settings = make_settings(tmp_path)
    data = settings.storage.data_dir
    data.mkdir(mode=0o755)
    Index(settings.index_path).close()  # created 0644 by SQLite under umask 022
    assert mode(settings.index_path) == 0o644
    node_factory(settings)
    assert mode(data) == 0o700 and mode(settings.index_path) == 0o600


def test_durable_writes_create_private_parents(tmp_path, open_umask):
    target = tmp_path / "a" / "b" / "c.dcm"
    write_durably(target, b"x")
    assert mode(target) == 0o600
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700
    before = mode(tmp_path)
    make_private_dirs(tmp_path / "a" / "b")  # existing: no error
    assert mode(tmp_path) == before  # a parent that existed is not the node's to change


@pytest.mark.parametrize("peered", [False, True], ids=["unknown AE", "unreachable AE"])
def test_a_delivery_that_cannot_succeed_ends_failed_after_the_deadline(
    tmp_path, node_factory, ct_series, peered
):
    settings = make_settings(tmp_path, **{"dispatch.give_up_after_hours": 2 / 3600})
    node = node_factory(settings, peers={"SCANNER": free_port()} if peered else None)
    send_files([describe(p) for p in ct_series], "SCANNER", "MYONODE", "127.0.0.1", node.port)
    wait_until(lambda: node.index.counts()["outbox"] == {"failed": 3}, timeout=90)
    rows = sql(node.index, "SELECT * FROM outbox")
    reason = "rejected or failed" if peered else "no address for AE 'SCANNER'"
    assert all(r["last_error"].startswith("gave up after ") for r in rows)
    assert all(reason in r["last_error"] for r in rows), rows[0]["last_error"]
    assert all(r["attempts"] >= 2 for r in rows)  # it did retry before giving up
    study_uid = rows[0]["study_uid"]
    assert node.index.study_status(study_uid) == "delivery failed"
    assert metric(node, "myonode_outbox", state="failed") == 3


def test_an_older_outbox_learns_the_failed_state(tmp_path):
    path = tmp_path / "index.sqlite3"
    Index(path).close()
    conn = sqlite3.connect(path)
    schema = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'outbox'").fetchone()[0]
    conn.executescript(  # as an index written before schema versions were recorded
        "DROP TABLE schema_migrations; DROP TABLE outbox;" + schema.replace(", 'failed'", "") + ";"
        "INSERT INTO outbox (study_uid, sop_uid, sop_class_uid, path, destination, state,"
        " next_attempt_at, created_at) VALUES ('1.2', '1.2.3', '1.2.4', '/x', 'PACS',"
        " 'pending', 0, 0);"
    )
    conn.close()
    index = Index(path)
    [row] = sql(index, "SELECT id FROM outbox")
    index.mark_failed(row["id"], "gave up")
    assert index.counts()["outbox"] == {"failed": 1}
    index.close()


def two_studies(tmp_path, seed: str):
    array, geometry = abdomen_phantom(shape=(8, 48, 48), pixel_mm=6.0, slice_mm=6.0)
    return write_ct_series(array, geometry, tmp_path / seed, seed=seed)


def test_prune_deletes_only_what_is_done_and_delivered(tmp_path, node_factory, storescp):
    """One study measured and delivered, one whose results cannot be delivered (its sender
    has no address): retention by age takes the first only; a dry run deletes nothing."""
    settings = make_settings(tmp_path)
    node = node_factory(settings, peers={storescp.ae_title: storescp.port})
    delivered = two_studies(tmp_path, "retention-done")
    stuck = two_studies(tmp_path, "retention-stuck")
    send_files(
        [describe(p) for p in delivered], storescp.ae_title, "MYONODE", "127.0.0.1", node.port
    )
    send_files([describe(p) for p in stuck], "NOBODY", "MYONODE", "127.0.0.1", node.port)
    done_uid = str(pydicom.dcmread(delivered[0]).StudyInstanceUID)
    stuck_uid = str(pydicom.dcmread(stuck[0]).StudyInstanceUID)
    wait_until(lambda: node.index.study_status(done_uid) == "done", timeout=120)
    wait_until(lambda: node.index.study_status(stuck_uid) == "delivery retrying", timeout=120)
    instances = settings.instances_dir  # the node keeps running: prune works beside it
    before = stored_files(settings)

    dry = prune_command(tmp_path, settings, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.split() == [done_uid] and "would delete" in dry.stderr
    assert stored_files(settings) == before

    real = prune_command(tmp_path, settings)
    assert real.returncode == 0, real.stderr
    assert real.stdout.split() == [done_uid]
    assert not (instances / done_uid).exists() and not (settings.results_dir / done_uid).exists()
    assert len(list((instances / stuck_uid).rglob("*.dcm"))) == len(stuck)
    assert any((settings.results_dir / stuck_uid).rglob("*.dcm"))  # its undelivered outputs
    index = Index(settings.index_path)
    assert index.study_instances(done_uid) == []
    assert index.query_results(ResultFilter(study_uid=done_uid))  # measurements stay
    assert len(index.study_instances(stuck_uid)) == len(stuck)
    index.close()
    again = prune_command(tmp_path, settings)
    assert again.stdout.split() == []  # nothing left to delete


def test_prune_by_free_space_and_not_by_age(tmp_path, node_factory, storescp):
    settings = make_settings(tmp_path)
    node = node_factory(settings, peers={storescp.ae_title: storescp.port})
    paths = two_studies(tmp_path, "retention-space")
    send_files([describe(p) for p in paths], storescp.ae_title, "MYONODE", "127.0.0.1", node.port)
    uid = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    wait_until(lambda: node.index.study_status(uid) == "done", timeout=120)
    args = (node.index, settings.instances_dir, settings.results_dir)
    assert prune(*args, keep_days=30, free_mb=None).studies == []  # too recent
    assert prune(*args, keep_days=None, free_mb=0).studies == []  # enough space
    report = prune(*args, keep_days=None, free_mb=2**40, dry_run=True)  # a 1 EiB target
    assert report.studies == [uid] and report.bytes > 0
    assert len(node.index.study_instances(uid)) == len(paths)


def stored_files(settings) -> list:
    roots = (settings.instances_dir, settings.results_dir)
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


def prune_command(tmp_path, settings, *args: str):
    """`myonode prune` on the node's data directory, for studies older than a tenth of a s."""
    path = tmp_path / "myonode.yaml"
    path.write_text(yaml.safe_dump({"storage": {"data_dir": str(settings.storage.data_dir)}}))
    return myonode("--config", path, "prune", "--keep-days", "0.000001", *args)
