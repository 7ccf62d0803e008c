"""The index's schema changes keep existing data: an SQLite index written before versions were
recorded opens, gains what it lacks and records its versions."""

import sqlite3

from myonode.store.index import Index
from myonode.store.migrations import MIGRATIONS

from support import sql

OUTBOX_BEFORE_WITHHELD = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL, series_uid TEXT NOT NULL,
    pipeline TEXT NOT NULL, pipeline_version TEXT NOT NULL,
    input_digest TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    reasons TEXT,
    error TEXT,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL
);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    job_id INTEGER REFERENCES jobs(id),
    study_uid TEXT NOT NULL,
    sop_uid TEXT NOT NULL, sop_class_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL, sent_at REAL,
    UNIQUE (sop_uid, destination)
);
INSERT INTO jobs VALUES (1, '1.2', '1.2.3', 'ct_muscle', 'v', 'd', 'done', 1, '[]', NULL, 0, 0, 0);
INSERT INTO outbox VALUES (7, 1, '1.2', '1.2.9', '1.2.840.10008.5.1.4.1.1.66', '/x/seg.dcm',
    'PACS', 'pending', 2, 0, 'refused', 0, NULL);
"""


def test_an_older_outbox_gains_the_withheld_state_and_keeps_its_rows(tmp_path):
    path = tmp_path / "index.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(OUTBOX_BEFORE_WITHHELD)
    index = Index(path)
    versions = sql(index, "SELECT version FROM schema_migrations ORDER BY version")
    assert [v["version"] for v in versions] == [m.version for m in MIGRATIONS]
    assert "submitted_at" in {c["name"] for c in sql(index, "PRAGMA table_info(jobs)")}
    [row] = sql(index, "SELECT * FROM outbox")
    assert (row["id"], row["sop_uid"], row["attempts"], row["last_error"]) == (
        7,
        "1.2.9",
        2,
        "refused",
    )
    index.mark_withheld(7, "source deleted")
    assert index.counts()["outbox"] == {"withheld": 1}
    assert index.study_status("1.2") is None  # no such study row: nothing to report
    index.close()
    assert sql(Index(path), "SELECT state FROM outbox")[0]["state"] == "withheld"
