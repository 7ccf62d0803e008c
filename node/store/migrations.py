"""The index's schema as a versioned list of migrations, applied in one transaction at open and
recorded in `schema_migrations`, on SQLite and PostgreSQL alike.

Version 1 is the baseline: it creates what is missing and upgrades what an older node left (an
SQLite index written before versions were recorded: columns added since, the outbox's widened
state CHECK), so an existing index file opens as before. A schema change appends a version with
its statements (written in SQLite's types; `dialect.ddl` maps them); never edit a released one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from myonode.store.dialect import Dialect

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT, patient_name TEXT, patient_sex TEXT, patient_age TEXT,
    patient_birth_date TEXT, patient_size REAL, patient_weight REAL,
    study_date TEXT, study_time TEXT, accession_number TEXT, study_description TEXT,
    calling_aet TEXT,
    change_seq INTEGER NOT NULL DEFAULT 0,
    processed_seq INTEGER NOT NULL DEFAULT 0,
    first_received_at REAL, last_received_at REAL
);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    modality TEXT, series_number INTEGER, series_description TEXT,
    instance_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    study_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    calling_aet TEXT,
    received_at REAL NOT NULL,
    tags TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL, series_uid TEXT, pipeline TEXT,
    selected INTEGER NOT NULL, reason TEXT NOT NULL, details TEXT,
    study_seq INTEGER NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_study ON decisions(study_uid);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL, series_uid TEXT NOT NULL,
    pipeline TEXT NOT NULL, pipeline_version TEXT NOT NULL,
    input_digest TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    reasons TEXT,
    inputs TEXT,
    error TEXT,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, pipeline TEXT NOT NULL,
    structure TEXT NOT NULL, quantity TEXT NOT NULL,
    value REAL, unit TEXT NOT NULL, text TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_study ON results(study_uid)
"""
# 'withheld': not delivered on purpose (the source study was deleted from the archive).
# 'failed': the destination refused it for good (e.g. STOW-RS 4xx); not retried.
OUTBOX = """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    job_id INTEGER REFERENCES jobs(id),
    study_uid TEXT NOT NULL,
    sop_uid TEXT NOT NULL, sop_class_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'withheld', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL, sent_at REAL,
    UNIQUE (sop_uid, destination)
)
"""
# Columns added to tables after they were first created, before versions were recorded.
ADDED_COLUMNS = (
    ("jobs", "inputs", "TEXT"),
    ("results", "qc", "TEXT"),
    ("jobs", "submitted_at", "REAL"),
)

RECORD = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL
)
"""


def _baseline(conn: Any, dialect: Dialect) -> None:
    for statement in dialect.ddl(SCHEMA):
        conn.execute(statement)
    outbox = dialect.table_sql(conn, "outbox")
    if outbox is None:
        conn.execute(dialect.ddl(OUTBOX)[0])
    elif dialect.name == "sqlite" and "'failed'" not in outbox:
        # SQLite cannot alter a CHECK: copy the rows into a table with the wider one
        conn.execute("ALTER TABLE outbox RENAME TO outbox_old")
        conn.execute(OUTBOX)
        conn.execute("INSERT INTO outbox SELECT * FROM outbox_old")
        conn.execute("DROP TABLE outbox_old")
    for table, column, kind in ADDED_COLUMNS:
        if column not in dialect.columns(conn, table):
            conn.execute(dialect.ddl(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")[0])


def _statements(script: str) -> Callable[[Any, Dialect], None]:
    def apply(conn: Any, dialect: Dialect) -> None:
        for statement in dialect.ddl(script):
            conn.execute(statement)

    return apply


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Any, Dialect], None]


MIGRATIONS = (
    Migration(1, "baseline: studies, series, instances, decisions, jobs, results", _baseline),
    Migration(
        2,
        "outbox: index of pending deliveries by due time (dispatchers poll it)",
        _statements("CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at)"),
    ),
)


def migrate(conn: Any, dialect: Dialect) -> list[int]:
    """Apply the migrations this store lacks, in one transaction; returns their versions.

    Processes that open the store at once (a router and its workers) wait for each other: the
    first applies, the others find the versions recorded.
    """
    conn.execute(dialect.begin)
    try:
        dialect.lock_schema(conn)
        conn.execute(dialect.ddl(RECORD)[0])
        done = {row["version"] for row in conn.execute("SELECT version FROM schema_migrations")}
        applied = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            migration.apply(conn, dialect)
            conn.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, time.time()),
            )
            applied.append(migration.version)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return applied
