"""The node's persistent state: studies, series, instances, routing decisions, jobs, outbox.

One set of queries on two databases (`store.dialect` holds their few differences):
SQLite in WAL mode with ``synchronous=FULL`` by default, PostgreSQL (``store.url``) when roles
run on several hosts. Either way a committed row survives a crash or power cut, which is what
lets the receiver acknowledge an instance only after its row is committed. Every thread gets
its own connection; SQLite serialises writers, PostgreSQL claims with ``SKIP LOCKED``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from myonode.store.dialect import dialect_for
from myonode.store.migrations import migrate
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

# A study's status once nothing more happens without new images: the archive stops asking.
FINAL_STATUSES = ("done", "failed", "not routed", "withheld", "delivery failed")


# A due delivery handed to a dispatcher is not handed to another for this long (its outcome
# is recorded sooner; a dispatcher that died leaves it due again after the lease).
OUTBOX_LEASE_S = 600.0


class Index:
    """`store.repository.Store` on SQLite (a file path: the embedded default) or PostgreSQL (a
    ``postgresql://`` URL: roles on several hosts); thread-safe, one connection per thread."""

    def __init__(self, location: Path | str) -> None:
        self.dialect = dialect_for(location)
        self.path: Path | None = getattr(self.dialect, "path", None)  # None on PostgreSQL
        self.location = self.dialect.location
        self._local = threading.local()
        self._opened: list[Any] = []
        self._opened_lock = threading.Lock()
        migrate(self._connection(), self.dialect)

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not self.dialect.usable(conn):
            conn = None  # the server restarted: a new connection, not a dead one forever
        if conn is None:
            conn = self.dialect.connect()
            self._local.conn = conn
            with self._opened_lock:
                self._opened.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A write transaction (on SQLite taken up front, BEGIN IMMEDIATE, so it cannot
        deadlock later)."""
        conn = self._connection()
        conn.execute(self.dialect.begin)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
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
        # rows locked in one order, so receivers committing at once (PostgreSQL) never deadlock
        ordered = sorted(entries, key=lambda e: (e[0].study_uid, e[0].series_uid, e[0].sop_uid))
        with self.transaction() as conn:
            for record, study, series in ordered:
                self._record_instance(conn, record, study, series, now)

    @staticmethod
    def _record_instance(
        conn: Any,
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
                   change_seq = studies.change_seq + 1, last_received_at = :now,
                   calling_aet = COALESCE(:calling_aet, studies.calling_aet)""",
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
                row = conn.execute(
                    """INSERT INTO jobs (study_uid, series_uid, pipeline, pipeline_version,
                           input_digest, state, reasons, inputs, created_at)
                       VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?) RETURNING id""",
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
                ).fetchone()
                job_ids.append(row["id"])
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
                for row in (
                    conn.execute(
                        f"SELECT study_uid FROM studies WHERE study_uid IN ({marks})", wanted
                    )
                    if wanted
                    else ()
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
            if job_id is None:  # concurrent claimers skip a row another one holds
                row = conn.execute(
                    f"""UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1
                       WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1
                           {self.dialect.skip_locked})
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
            (*params, self.dialect.no_limit if limit is None else limit),
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
        """Pending deliveries that are due, with the series their job measured, leased to the
        caller for `OUTBOX_LEASE_S`: concurrent dispatchers never get the same row (the
        caller records each one's outcome, which sets its state or next attempt)."""
        now = time.time() if now is None else now
        due = "state = 'pending' AND next_attempt_at <= ?"
        if not self._rows(f"SELECT 1 FROM outbox WHERE {due} LIMIT 1", (now,)):
            return []  # the usual poll: no write transaction, no lock taken
        with self.transaction() as conn:
            leased = conn.execute(
                f"""UPDATE outbox SET next_attempt_at = ?
                   WHERE id IN (SELECT id FROM outbox WHERE {due}{self.dialect.skip_locked})
                   RETURNING id""",
                (now + OUTBOX_LEASE_S, now),
            ).fetchall()
            ids = [row["id"] for row in leased]
            if not ids:
                return []
            rows = conn.execute(
                f"""SELECT o.*, j.series_uid AS source_series_uid
                   FROM outbox o LEFT JOIN jobs j ON j.id = o.job_id
                   WHERE o.id IN ({",".join("?" * len(ids))})
                   ORDER BY o.destination, o.id""",
                ids,
            ).fetchall()
        return [OutboxRecord.from_row(row) for row in rows]

    def outbox(self, limit: int | None = None, study_uid: str | None = None) -> list[OutboxRecord]:
        """Deliveries, newest first, optionally of one study."""
        clauses, params = self._where((("study_uid", study_uid),))
        rows = self._rows(
            f"SELECT * FROM outbox {clauses} ORDER BY id DESC LIMIT ?",
            (*params, self.dialect.no_limit if limit is None else limit),
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
            f"""SELECT r.study_uid, COALESCE(s.patient_id, '') AS patient_id,
                      COALESCE(s.study_date, '') AS study_date,
                      CAST(SUM(CASE WHEN r.qc = 'review' THEN 1 ELSE 0 END) AS INTEGER)
                          AS review,
                      CAST(SUM(CASE WHEN r.qc = 'fail' THEN 1 ELSE 0 END) AS INTEGER) AS fail,
                      {self.dialect.group_concat_distinct("r.pipeline")} AS pipelines
               FROM results r LEFT JOIN studies s ON s.study_uid = r.study_uid
               WHERE r.quantity = 'qc' AND r.qc IN ('review', 'fail')
               GROUP BY r.study_uid, s.patient_id, s.study_date
               ORDER BY MAX(r.created_at) DESC"""
        )
        return [ReviewListing.from_row(row) for row in rows]
