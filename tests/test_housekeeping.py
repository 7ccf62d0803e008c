"""Housekeeping of a running node: its data is private to it (files 0600, directories 0700,
the index included), and a delivery that cannot succeed ends failed after a deadline instead
of being retried for ever."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from myonode.dispatch.scu import describe, send_files
from myonode.store.files import make_private_dirs, write_durably
from myonode.store.index import Index

from conftest import make_settings
from support import free_port, metric, wait_until


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
    rows = node.index.query("SELECT * FROM outbox")
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
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'outbox'").fetchone()[0]
    conn.executescript(
        "DROP TABLE outbox;" + sql.replace(", 'failed'", "") + ";"
        "INSERT INTO outbox (study_uid, sop_uid, sop_class_uid, path, destination, state,"
        " next_attempt_at, created_at) VALUES ('1.2', '1.2.3', '1.2.4', '/x', 'PACS',"
        " 'pending', 0, 0);"
    )
    conn.close()
    index = Index(path)
    [row] = index.query("SELECT id FROM outbox")
    index.mark_failed(row["id"], "gave up")
    assert index.counts()["outbox"] == {"failed": 1}
    index.close()
