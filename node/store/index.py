"""The node's persistent state: studies, series, instances, routing decisions, jobs, outbox.

SQLite in WAL mode with ``synchronous=FULL``: a committed row survives a crash or power cut,
which is what lets the receiver acknowledge an instance only after its row is committed.
Every thread gets its own connection; SQLite serialises writers.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from myonode.store.records import RECORD_COLUMNS, ResultFilter, ResultRecord, ResultRow
from myonode.store.repository import (
    Decision,
    DecisionRecord,
    InstanceRecord,
    JobRecord,
    JobRequest,
    OutboxRecord,
    PriorMass,
    ReviewListing,
    StableStudy,
    StoredInstance,
    StudyListing,
    StudyRecord,
)

__all__ = ["FINAL_STATUSES", "Decision", "Index", "InstanceRecord", "JobRequest"]

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
CREATE INDEX IF NOT EXISTS results_study ON results(study_uid);
"""
# 'withheld': not delivered on purpose (the source study was deleted from the archive).
# 'failed': the destination refused it for good (e.g. STOW-RS 4xx); not retried.
OUTBOX = """
CREATE TABLE IF NOT EXISTS outbox (
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
);
"""
# A study's status once nothing more happens without new images: the archive stops asking.
FINAL_STATUSES = ("done", "failed", "not routed", "withheld", "delivery failed")


# Columns added after a table was first created: (table, column, type). Applied on open so an
# index written by an older version keeps working.
MIGRATIONS = (
    ("jobs", "inputs", "TEXT"),
    ("results", "qc", "TEXT"),
    ("jobs", "submitted_at", "REAL"),
)


class Index:
    """The SQLite implementation of `store.repository.Store`: thread-safe, one connection per
    thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()
        conn = self._connection()
        conn.executescript(SCHEMA)
        self._migrate_outbox(conn)
        self._migrate()

    def _migrate(self) -> None:
        """Add columns that an index created by an older version lacks."""
        with self.transaction() as conn:
            for table, column, kind in MIGRATIONS:
                present = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    @staticmethod
    def _migrate_outbox(conn: sqlite3.Connection) -> None:
        """Create the outbox, or widen an older one's state CHECK (SQLite cannot alter it)."""
        row = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'outbox'").fetchone()
        if row is None:
            conn.executescript(OUTBOX)
        elif "'failed'" not in row["sql"]:
            conn.executescript(
                "BEGIN IMMEDIATE; ALTER TABLE outbox RENAME TO outbox_old;"
                + OUTBOX
                + "INSERT INTO outbox SELECT * FROM outbox_old; DROP TABLE outbox_old; COMMIT;"
            )

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._opened_lock:
                self._opened.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE) so it cannot deadlock later."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return self._connection().execute(sql, params).fetchall()

    def close(self) -> None:
        """Close every thread's connection (threads must not use the index afterwards)."""
        with self._opened_lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()
        self._local = threading.local()

    # -- receive ---------------------------------------------------------------------------

    def instance_sha256(self, sop_uid: str) -> str | None:
        rows = self._rows("SELECT sha256 FROM instances WHERE sop_uid = ?", (sop_uid,))
        return rows[0]["sha256"] if rows else None

    def record_instance(
        self, record: InstanceRecord, study: dict[str, Any], series: dict[str, Any]
    ) -> None:
        """Add or replace an instance and mark its study changed (reopening it if processed)."""
        self.record_instances([(record, study, series)])

    def record_instances(
        self, entries: Sequence[tuple[InstanceRecord, dict[str, Any], dict[str, Any]]]
    ) -> None:
        """`record_instance` for several instances in one transaction (one commit, one fsync):
        the receiver's group commit across concurrent associations."""
        now = time.time()
        with self.transaction() as conn:
            for record, study, series in entries:
                self._record_instance(conn, record, study, series, now)

    @staticmethod
    def _record_instance(
        conn: sqlite3.Connection,
        record: InstanceRecord,
        study: dict[str, Any],
        series: dict[str, Any],
        now: float,
    ) -> None:
        conn.execute(
            """INSERT INTO studies (study_uid, patient_id, patient_name, patient_sex,
                   patient_age, patient_birth_date, patient_size, patient_weight, study_date,
                   study_time, accession_number, study_description, calling_aet,
                   change_seq, first_received_at, last_received_at)
               VALUES (:study_uid, :patient_id, :patient_name, :patient_sex, :patient_age,
                   :patient_birth_date, :patient_size, :patient_weight, :study_date,
                   :study_time, :accession_number, :study_description, :calling_aet,
                   1, :now, :now)
               ON CONFLICT (study_uid) DO UPDATE SET
                   change_seq = change_seq + 1, last_received_at = :now,
                   calling_aet = COALESCE(:calling_aet, calling_aet)""",
            {
                **study,
                "study_uid": record.study_uid,
                "calling_aet": record.calling_aet,
                "now": now,
            },
        )
        conn.execute(
            """INSERT INTO series (series_uid, study_uid, modality, series_number,
                   series_description)
               VALUES (:series_uid, :study_uid, :modality, :series_number, :series_description)
               ON CONFLICT (series_uid) DO NOTHING""",
            {**series, "series_uid": record.series_uid, "study_uid": record.study_uid},
        )
        conn.execute(
            """INSERT INTO instances (sop_uid, series_uid, study_uid, sop_class_uid,
                   transfer_syntax, path, size, sha256, calling_aet, received_at, tags)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (sop_uid) DO UPDATE SET
                   sop_class_uid = excluded.sop_class_uid,
                   transfer_syntax = excluded.transfer_syntax, path = excluded.path,
                   size = excluded.size, sha256 = excluded.sha256,
                   calling_aet = excluded.calling_aet, received_at = excluded.received_at,
                   tags = excluded.tags""",
            (
                record.sop_uid,
                record.series_uid,
                record.study_uid,
                record.sop_class_uid,
                record.transfer_syntax,
                str(record.path),
                record.size,
                record.sha256,
                record.calling_aet,
                now,
                json.dumps(record.tags),
            ),
        )
        conn.execute(
            """UPDATE series SET instance_count =
                   (SELECT COUNT(*) FROM instances WHERE series_uid = ?)
               WHERE series_uid = ?""",
            (record.series_uid, record.series_uid),
        )

    def series_instances(self, series_uid: str) -> list[StoredInstance]:
        rows = self._rows(
            "SELECT * FROM instances WHERE series_uid = ? ORDER BY sop_uid", (series_uid,)
        )
        return [StoredInstance.from_row(row) for row in rows]

    def study(self, study_uid: str) -> StudyRecord | None:
        rows = self._rows("SELECT * FROM studies WHERE study_uid = ?", (study_uid,))
        return StudyRecord.from_row(rows[0]) if rows else None

    def study_uids(self) -> list[str]:
        return [row["study_uid"] for row in self._rows("SELECT study_uid FROM studies")]

    def recent_studies(self, limit: int) -> list[StudyListing]:
        """The latest received studies first, each with its instance count."""
        rows = self._rows(
            """SELECT s.*, (SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid)
                   AS instance_count
               FROM studies s ORDER BY last_received_at DESC LIMIT ?""",
            (limit,),
        )
        return [StudyListing(StudyRecord.from_row(row), row["instance_count"]) for row in rows]

    def settled_studies(self) -> list[StudyRecord]:
        """Studies routed since their last instance (nothing left to route), oldest first:
        the candidates of retention, which still checks each one's status."""
        rows = self._rows(
            """SELECT * FROM studies WHERE processed_seq = change_seq
               ORDER BY last_received_at, study_uid"""
        )
        return [StudyRecord.from_row(row) for row in rows]

    def forget_instances(self, study_uid: str) -> int:
        """Drop a study's instance rows (retention deleted their files); studies, decisions,
        jobs, results and outbox stay. Returns how many were dropped."""
        with self.transaction() as conn:
            conn.execute("UPDATE series SET instance_count = 0 WHERE study_uid = ?", (study_uid,))
            return conn.execute("DELETE FROM instances WHERE study_uid = ?", (study_uid,)).rowcount

    def study_instances(self, study_uid: str) -> list[StoredInstance]:
        rows = self._rows(
            "SELECT * FROM instances WHERE study_uid = ? ORDER BY series_uid, sop_uid",
            (study_uid,),
        )
        return [StoredInstance.from_row(row) for row in rows]

    def routing_instances(self, study_uid: str) -> list[StoredInstance]:
        """A study's instances plus those of its series filed under another study, so that a
        Series Instance UID reused across studies is seen (and refused) by routing."""
        rows = self._rows(
            """SELECT * FROM instances WHERE series_uid IN
                   (SELECT DISTINCT series_uid FROM instances WHERE study_uid = ?)""",
            (study_uid,),
        )
        return [StoredInstance.from_row(row) for row in rows]

    # -- assemble and route ----------------------------------------------------------------

    def stable_studies(self, quiet_seconds: float, now: float | None = None) -> list[StableStudy]:
        """Studies with unprocessed changes and no new instance for `quiet_seconds`."""
        now = time.time() if now is None else now
        rows = self._rows(
            """SELECT study_uid, change_seq FROM studies
               WHERE change_seq > processed_seq AND last_received_at <= ?
               ORDER BY last_received_at""",
            (now - quiet_seconds,),
        )
        return [StableStudy.from_row(row) for row in rows]

    def restart_quiet_timers(self) -> int:
        """Start every unprocessed study's quiet period afresh.

        Time the node was down is not quiet time: senders could not reach it, so a study cut
        off by a crash or restart gets a full quiet period to be completed before routing.
        """
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE studies SET last_received_at = ? WHERE change_seq > processed_seq",
                (time.time(),),
            ).rowcount

    def job_done_for(self, series_uid: str, pipeline: str, version: str, digest: str) -> bool:
        rows = self._rows(
            """SELECT 1 FROM jobs WHERE series_uid = ? AND pipeline = ? AND pipeline_version = ?
               AND input_digest = ? AND state IN ('queued', 'running', 'done')""",
            (series_uid, pipeline, version, digest),
        )
        return bool(rows)

    def record_routing(
        self,
        study_uid: str,
        change_seq: int,
        decisions: Sequence[Decision],
        jobs: Sequence[JobRequest],
    ) -> list[int]:
        """Store the decisions and queue the jobs, and mark the study processed at `change_seq`.

        One transaction, guarded by `change_seq`: if an instance arrived since the study was
        read, nothing is written and the study is routed again once it is quiet.
        """
        now = time.time()
        with self.transaction() as conn:
            current = conn.execute(
                "SELECT change_seq FROM studies WHERE study_uid = ?", (study_uid,)
            ).fetchone()
            if current is None or current["change_seq"] != change_seq:
                return []
            conn.execute("DELETE FROM decisions WHERE study_uid = ?", (study_uid,))
            conn.executemany(
                """INSERT INTO decisions (study_uid, series_uid, pipeline, selected, reason,
                       details, study_seq, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    (
                        study_uid,
                        d.series_uid,
                        d.pipeline,
                        int(d.selected),
                        d.reason,
                        json.dumps(d.details) if d.details else None,
                        change_seq,
                        now,
                    )
                    for d in decisions
                ],
            )
            job_ids = []
            for job in jobs:
                cursor = conn.execute(
                    """INSERT INTO jobs (study_uid, series_uid, pipeline, pipeline_version,
                           input_digest, state, reasons, inputs, created_at)
                       VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)""",
                    (
                        study_uid,
                        job.series_uid,
                        job.pipeline,
                        job.pipeline_version,
                        job.input_digest,
                        json.dumps(job.reasons),
                        json.dumps(job.inputs) if job.inputs else None,
                        now,
                    ),
                )
                job_ids.append(cursor.lastrowid)
            conn.execute(
                "UPDATE studies SET processed_seq = ? WHERE study_uid = ?", (change_seq, study_uid)
            )
        return job_ids

    def reroute(self, study_uids: Sequence[str] = (), not_routed: bool = False) -> list[str]:
        """Mark studies changed so that the node routes them again once they are quiet (now,
        for studies received earlier): `study_uids`, plus with `not_routed` every routed study
        that has no job (all its series not routed or their pipelines unavailable).

        Jobs already done for the same inputs and pipeline version are not repeated, so
        re-routing is safe; it exists for what the node could not do before (a model bundle
        configured since, a profile changed).
        """
        with self.transaction() as conn:
            wanted = list(dict.fromkeys(study_uids))
            marks = ",".join("?" * len(wanted))
            known = {
                row["study_uid"]
                for row in conn.execute(
                    f"SELECT study_uid FROM studies WHERE study_uid IN ({marks})", wanted
                )
            }
            missing = [uid for uid in wanted if uid not in known]
            if missing:
                raise KeyError(f"no such study in the index: {', '.join(missing)}")
            if not_routed:
                wanted += [
                    row["study_uid"]
                    for row in conn.execute(
                        """SELECT study_uid FROM studies s WHERE processed_seq = change_seq
                               AND processed_seq > 0 AND NOT EXISTS
                               (SELECT 1 FROM jobs j WHERE j.study_uid = s.study_uid)"""
                    )
                    if row["study_uid"] not in wanted
                ]
            conn.executemany(
                "UPDATE studies SET change_seq = change_seq + 1 WHERE study_uid = ?",
                [(uid,) for uid in wanted],
            )
        return wanted

    def decisions(self, study_uid: str) -> list[DecisionRecord]:
        rows = self._rows("SELECT * FROM decisions WHERE study_uid = ? ORDER BY id", (study_uid,))
        return [DecisionRecord.from_row(row) for row in rows]

    def study_status(self, study_uid: str) -> str | None:
        """Where a study stands, in a few words: what the archive's label and the dashboard show.

        Only the latest job of each (series, pipeline) counts, so a re-run that succeeded
        after a failure reads "done".
        """
        study = self.study(study_uid)
        if study is None:
            return None
        if study["change_seq"] > study["processed_seq"]:
            return "receiving"
        jobs = self._rows(
            """SELECT id, state FROM jobs j WHERE study_uid = ? AND id = (SELECT MAX(id)
                   FROM jobs WHERE series_uid = j.series_uid AND pipeline = j.pipeline)""",
            (study_uid,),
        )
        states = {job["state"] for job in jobs}
        if not jobs:
            return "not routed"
        if states & {"queued", "running"}:
            return "processing"
        if "failed" in states:
            return "failed"
        marks = ",".join("?" * len(jobs))
        outbox = self._rows(
            f"SELECT state, last_error FROM outbox WHERE job_id IN ({marks})",
            [job["id"] for job in jobs],
        )
        if any(row["state"] == "pending" for row in outbox):
            retrying = any(row["state"] == "pending" and row["last_error"] for row in outbox)
            return "delivery retrying" if retrying else "delivering"
        if any(row["state"] == "failed" for row in outbox):
            return "delivery failed"
        if any(row["state"] == "withheld" for row in outbox):
            return "withheld"
        return "done"

    # -- jobs ------------------------------------------------------------------------------

    def requeue_interrupted_jobs(self) -> int:
        """Jobs that were running when the node died run again (their outputs are idempotent)."""
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE jobs SET state = 'queued', started_at = NULL WHERE state = 'running'"
            ).rowcount

    def claim_job(self, job_id: int | None = None) -> JobRecord | None:
        """Mark a job running and return it: the oldest queued one, or `job_id` while it is
        queued or running (a job redelivered after its worker died runs again)."""
        with self.transaction() as conn:
            if job_id is None:
                row = conn.execute(
                    """UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1
                       WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1)
                       RETURNING *""",
                    (time.time(),),
                ).fetchone()
            else:
                row = conn.execute(
                    """UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1
                       WHERE id = ? AND state IN ('queued', 'running') RETURNING *""",
                    (time.time(), job_id),
                ).fetchone()
        return JobRecord.from_row(row) if row else None

    def mark_submitted(self, job_ids: Sequence[int]) -> None:
        """The queue's broker holds these jobs' messages (so they are not offered again)."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE jobs SET submitted_at = ? WHERE id = ?",
                [(time.time(), job_id) for job_id in job_ids],
            )

    def unsubmitted_jobs(self) -> list[int]:
        """Queued jobs no broker has accepted yet (it was down, or the router stopped)."""
        rows = self._rows(
            "SELECT id FROM jobs WHERE state = 'queued' AND submitted_at IS NULL ORDER BY id"
        )
        return [row["id"] for row in rows]

    def jobs(
        self, limit: int | None = None, study_uid: str | None = None, state: str | None = None
    ) -> list[JobRecord]:
        """Jobs, newest first, optionally of one study or in one state."""
        clauses, params = self._where((("study_uid", study_uid), ("state", state)))
        rows = self._rows(
            f"SELECT * FROM jobs {clauses} ORDER BY id DESC LIMIT ?",
            (*params, -1 if limit is None else limit),
        )
        return [JobRecord.from_row(row) for row in rows]

    def job(self, job_id: int) -> JobRecord | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return JobRecord.from_row(rows[0]) if rows else None

    @staticmethod
    def _where(pairs: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
        """A WHERE clause matching every (column, value) pair whose value is not None."""
        wanted = [(column, value) for column, value in pairs if value is not None]
        if not wanted:
            return "", []
        return "WHERE " + " AND ".join(f"{c} = ?" for c, _ in wanted), [v for _, v in wanted]

    def complete_job(
        self,
        job_id: int,
        outputs: Sequence[tuple[str, str, Path]],
        destinations: Sequence[str],
        results: Sequence[ResultRow],
    ) -> None:
        """Mark a job done, queue its outputs for every destination and store its results.

        `outputs` holds (sop_uid, sop_class_uid, path); `results` holds rows with structure,
        quantity, value, unit and text (`results.ResultRow`). A re-run replaces earlier
        results and re-queues the (deterministically identified) outputs, never duplicating.
        """
        now = time.time()
        with self.transaction() as conn:
            job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            for sop_uid, sop_class_uid, path in outputs:
                for destination in destinations:
                    conn.execute(
                        """INSERT INTO outbox (job_id, study_uid, sop_uid, sop_class_uid, path,
                               destination, state, next_attempt_at, created_at)
                           VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)
                           ON CONFLICT (sop_uid, destination) DO UPDATE SET
                               job_id = excluded.job_id, path = excluded.path,
                               state = 'pending', attempts = 0, last_error = NULL,
                               created_at = excluded.created_at,
                               next_attempt_at = excluded.next_attempt_at, sent_at = NULL""",
                        (
                            job_id,
                            job["study_uid"],
                            sop_uid,
                            sop_class_uid,
                            str(path),
                            destination,
                            now,
                            now,
                        ),
                    )
            conn.execute(
                "DELETE FROM results WHERE series_uid = ? AND pipeline = ?",
                (job["series_uid"], job["pipeline"]),
            )
            if results:
                # every field of the result rows is a column of `results` (carried generically)
                names = [f.name for f in fields(results[0])]
                conn.executemany(
                    f"""INSERT INTO results (job_id, study_uid, series_uid, pipeline, created_at,
                           {", ".join(names)})
                       VALUES (?, ?, ?, ?, ?, {", ".join("?" * len(names))})""",
                    [
                        (
                            job_id,
                            job["study_uid"],
                            job["series_uid"],
                            job["pipeline"],
                            now,
                            *(getattr(row, name) for name in names),
                        )
                        for row in results
                    ],
                )
            conn.execute(
                "UPDATE jobs SET state = 'done', finished_at = ?, error = NULL WHERE id = ?",
                (now, job_id),
            )

    def fail_job(self, job_id: int, error: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? WHERE id = ?",
                (time.time(), error, job_id),
            )

    def prior_masses(self, study_uid: str) -> list[PriorMass]:
        """Structure masses from earlier studies of the same patient, for change since prior."""
        rows = self._rows(
            """SELECT r.study_uid, s.study_date, r.structure, r.value
               FROM results r JOIN studies s ON s.study_uid = r.study_uid
               JOIN studies current ON current.study_uid = ?
               WHERE r.quantity = 'mass' AND COALESCE(r.qc, 'pass') = 'pass'
                 AND r.study_uid != current.study_uid
                 AND s.patient_id = current.patient_id AND current.patient_id != ''
                 AND s.study_date < current.study_date""",
            (study_uid,),
        )
        return [PriorMass.from_row(row) for row in rows]

    # -- outbox ----------------------------------------------------------------------------

    def due_outbox(self, now: float | None = None) -> list[OutboxRecord]:
        """Pending deliveries that are due, with the series their job measured."""
        now = time.time() if now is None else now
        rows = self._rows(
            """SELECT o.*, j.series_uid AS source_series_uid
               FROM outbox o LEFT JOIN jobs j ON j.id = o.job_id
               WHERE o.state = 'pending' AND o.next_attempt_at <= ?
               ORDER BY o.destination, o.id""",
            (now,),
        )
        return [OutboxRecord.from_row(row) for row in rows]

    def outbox(self, limit: int | None = None, study_uid: str | None = None) -> list[OutboxRecord]:
        """Deliveries, newest first, optionally of one study."""
        clauses, params = self._where((("study_uid", study_uid),))
        rows = self._rows(
            f"SELECT * FROM outbox {clauses} ORDER BY id DESC LIMIT ?",
            (*params, -1 if limit is None else limit),
        )
        return [OutboxRecord.from_row(row) for row in rows]

    def failing_deliveries(self) -> int:
        """Pending deliveries whose last attempt failed (the destination is down or refuses)."""
        return self._rows(
            "SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending' AND last_error IS NOT NULL"
        )[0]["n"]

    def mark_sent(self, outbox_id: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                """UPDATE outbox SET state = 'sent', sent_at = ?, attempts = attempts + 1,
                       last_error = NULL WHERE id = ?""",
                (time.time(), outbox_id),
            )

    def mark_attempt_failed(self, outbox_id: int, error: str, next_attempt_at: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                """UPDATE outbox SET attempts = attempts + 1, last_error = ?,
                       next_attempt_at = ? WHERE id = ?""",
                (error, next_attempt_at, outbox_id),
            )

    def mark_failed(self, outbox_id: int, answer: str) -> None:
        """Stop retrying a delivery: the destination refused it for good, or it stayed
        unknown or unreachable past the deadline; keep the answer or reason."""
        with self.transaction() as conn:
            conn.execute(
                """UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?
                   WHERE id = ?""",
                (answer, outbox_id),
            )

    def mark_withheld(self, outbox_id: int, reason: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET state = 'withheld', last_error = ? WHERE id = ?",
                (reason, outbox_id),
            )

    def query_results(self, wanted: ResultFilter) -> list[ResultRecord]:
        """Results joined with their study, filtered in SQL, in study and insertion order."""
        clauses, params = [], []
        for column, value in (
            ("s.patient_id", wanted.patient_id),
            ("r.study_uid", wanted.study_uid),
            ("r.pipeline", wanted.pipeline),
            ("r.structure", wanted.structure),
            ("r.quantity", wanted.quantity),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if wanted.since is not None:
            clauses.append("s.study_date >= ?")
            params.append(wanted.since.strftime("%Y%m%d"))
        if wanted.until is not None:
            clauses.append("s.study_date <= ?")
            params.append(wanted.until.strftime("%Y%m%d"))
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._rows(
            f"""SELECT r.*, COALESCE(s.patient_id, '') AS patient_id,
                       COALESCE(s.study_date, '') AS study_date
                FROM results r LEFT JOIN studies s ON s.study_uid = r.study_uid
                {where} ORDER BY s.study_date, r.study_uid, r.id""",
            params,
        )
        return [ResultRecord(**{name: row[name] for name in RECORD_COLUMNS}) for row in rows]

    # -- reporting -------------------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        """Row counts by state, for `myonode status` and metrics."""
        summary: dict[str, dict[str, int]] = {}
        for table in ("jobs", "outbox"):
            rows = self._rows(f"SELECT state, COUNT(*) AS n FROM {table} GROUP BY state")
            summary[table] = {row["state"]: row["n"] for row in rows}
        summary["studies"] = {"total": self._rows("SELECT COUNT(*) AS n FROM studies")[0]["n"]}
        summary["instances"] = {"total": self._rows("SELECT COUNT(*) AS n FROM instances")[0]["n"]}
        return summary

    def qc_counts(self) -> dict[str, int]:
        """Structures by QC verdict over the latest results of every job (for /metrics)."""
        rows = self._rows("SELECT qc, COUNT(*) AS n FROM results WHERE quantity = 'qc' GROUP BY qc")
        return {row["qc"]: row["n"] for row in rows if row["qc"]}

    def studies_needing_review(self) -> list[ReviewListing]:
        """Studies with a structure whose QC verdict is review or fail, with their counts."""
        rows = self._rows(
            """SELECT r.study_uid, COALESCE(s.patient_id, '') AS patient_id,
                      COALESCE(s.study_date, '') AS study_date,
                      SUM(r.qc = 'review') AS review, SUM(r.qc = 'fail') AS fail,
                      GROUP_CONCAT(DISTINCT r.pipeline) AS pipelines
               FROM results r LEFT JOIN studies s ON s.study_uid = r.study_uid
               WHERE r.quantity = 'qc' AND r.qc IN ('review', 'fail')
               GROUP BY r.study_uid ORDER BY MAX(r.created_at) DESC"""
        )
        return [ReviewListing.from_row(row) for row in rows]
