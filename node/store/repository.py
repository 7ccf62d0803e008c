"""The store's interface: what every stage may ask of the node's persistent state, as typed
records. `store.index.Index` implements it on SQLite and on PostgreSQL (`store.url`); the
stages see only this protocol and these records.

Records mirror their tables' columns (JSON columns stay JSON text, so the API and `myonode status
--json` print what they always printed) and also read like the mapping rows they replaced
(`record["study_uid"]`, `dict(record)`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from myonode.store.records import ResultFilter, ResultRecord, ResultRow

R = TypeVar("R", bound="Record")


class Record:
    """Base of the store's records: mapping-style reads and construction from a table row."""

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    @classmethod
    def from_row(cls: type[R], row: Mapping[str, Any]) -> R:
        """The record from a row holding (at least) its columns; extra columns are ignored."""
        names = set(row.keys())
        return cls(**{f.name: row[f.name] for f in fields(cls) if f.name in names})  # type: ignore[arg-type]


@dataclass(frozen=True)
class InstanceRecord:
    """What the index keeps about one stored instance."""

    sop_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    transfer_syntax: str
    path: Path
    size: int
    sha256: str
    calling_aet: str | None
    tags: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    """One routing decision: a series selected for, or excluded from, a pipeline."""

    series_uid: str | None
    pipeline: str | None
    selected: bool
    reason: str
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class JobRequest:
    """A job to queue. `series_uid` is the primary input (output UIDs derive from it);
    `inputs` maps role → series UIDs for jobs that read more than one series (Dixon water and
    fat per station, in station order) or one image of a series (``instances``)."""

    series_uid: str
    pipeline: str
    pipeline_version: str
    input_digest: str
    reasons: list[str]
    inputs: dict[str, list[str]] | None = None


@dataclass(frozen=True)
class StudyRecord(Record):
    study_uid: str
    patient_id: str | None = None
    patient_name: str | None = None
    patient_sex: str | None = None
    patient_age: str | None = None
    patient_birth_date: str | None = None
    patient_size: float | None = None
    patient_weight: float | None = None
    study_date: str | None = None
    study_time: str | None = None
    accession_number: str | None = None
    study_description: str | None = None
    calling_aet: str | None = None
    change_seq: int = 0
    processed_seq: int = 0
    first_received_at: float | None = None
    last_received_at: float | None = None


@dataclass(frozen=True)
class StudyListing:
    """A study and how many instances the node holds of it (the dashboard's and status' list)."""

    study: StudyRecord
    instances: int


@dataclass(frozen=True)
class StableStudy(Record):
    """A study with unprocessed changes and no new instance for the quiet period."""

    study_uid: str
    change_seq: int


@dataclass(frozen=True)
class StoredInstance(Record):
    """One indexed instance as read back (`tags` is the JSON of its routing headers)."""

    sop_uid: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: str
    size: int
    sha256: str
    calling_aet: str | None
    received_at: float
    tags: str


@dataclass(frozen=True)
class DecisionRecord(Record):
    """A stored routing decision (`details` is JSON text or None)."""

    id: int
    study_uid: str
    series_uid: str | None
    pipeline: str | None
    selected: int
    reason: str
    details: str | None
    study_seq: int
    created_at: float


@dataclass(frozen=True)
class JobRecord(Record):
    """A job: one pipeline on one series (`reasons` and `inputs` are JSON text)."""

    id: int
    study_uid: str
    series_uid: str
    pipeline: str
    pipeline_version: str
    input_digest: str
    state: str
    attempts: int = 0
    reasons: str | None = None
    inputs: str | None = None
    error: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    submitted_at: float | None = None

    @property
    def reason_list(self) -> list[str]:
        return json.loads(self.reasons or "[]")

    @property
    def input_map(self) -> dict[str, list[str]] | None:
        """Role → series UIDs for jobs that read more than one series; None for one series."""
        return json.loads(self.inputs) if self.inputs else None


@dataclass(frozen=True)
class OutboxRecord(Record):
    """One delivery of one output to one destination (`source_series_uid` when read as due)."""

    id: int
    job_id: int | None
    study_uid: str
    sop_uid: str
    sop_class_uid: str
    path: str
    destination: str
    state: str
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    created_at: float = 0.0
    sent_at: float | None = None
    source_series_uid: str | None = None


@dataclass(frozen=True)
class PriorMass(Record):
    """A structure mass this node measured on an earlier study of the same patient."""

    study_uid: str
    study_date: str | None
    structure: str
    value: float | None


@dataclass(frozen=True)
class ReviewListing(Record):
    """A study with structures whose QC verdict is review or fail, and how many of each."""

    study_uid: str
    patient_id: str
    study_date: str
    review: int
    fail: int
    pipelines: str


@runtime_checkable
class Store(Protocol):
    """Everything the stages ask of the node's persistent state."""

    def close(self) -> None: ...

    # receive
    def instance_sha256(self, sop_uid: str) -> str | None: ...
    def record_instance(
        self, record: InstanceRecord, study: dict[str, Any], series: dict[str, Any]
    ) -> None: ...
    def record_instances(
        self, entries: Sequence[tuple[InstanceRecord, dict[str, Any], dict[str, Any]]]
    ) -> None: ...

    # read
    def study(self, study_uid: str) -> StudyRecord | None: ...
    def study_uids(self) -> list[str]: ...
    def recent_studies(self, limit: int) -> list[StudyListing]: ...
    def series_instances(self, series_uid: str) -> list[StoredInstance]: ...
    def study_instances(self, study_uid: str) -> list[StoredInstance]: ...
    def routing_instances(self, study_uid: str) -> list[StoredInstance]: ...
    def decisions(self, study_uid: str) -> list[DecisionRecord]: ...
    def study_status(self, study_uid: str) -> str | None: ...
    def jobs(
        self, limit: int | None = None, study_uid: str | None = None, state: str | None = None
    ) -> list[JobRecord]: ...
    def job(self, job_id: int) -> JobRecord | None: ...
    def outbox(
        self, limit: int | None = None, study_uid: str | None = None
    ) -> list[OutboxRecord]: ...
    def failing_deliveries(self) -> int: ...
    def counts(self) -> dict[str, dict[str, int]]: ...
    def query_results(self, wanted: ResultFilter) -> list[ResultRecord]: ...
    def prior_masses(self, study_uid: str) -> list[PriorMass]: ...
    def qc_counts(self) -> dict[str, int]: ...
    def studies_needing_review(self) -> list[ReviewListing]: ...

    # retention
    def settled_studies(self) -> list[StudyRecord]: ...
    def forget_instances(self, study_uid: str) -> int: ...

    # assemble and route
    def stable_studies(
        self, quiet_seconds: float, now: float | None = None
    ) -> list[StableStudy]: ...
    def restart_quiet_timers(self) -> int: ...
    def job_done_for(self, series_uid: str, pipeline: str, version: str, digest: str) -> bool: ...
    def record_routing(
        self,
        study_uid: str,
        change_seq: int,
        decisions: Sequence[Decision],
        jobs: Sequence[JobRequest],
    ) -> list[int]: ...
    def reroute(self, study_uids: Sequence[str] = (), not_routed: bool = False) -> list[str]: ...

    # jobs (through a `myonode.queue.JobQueue`)
    def requeue_interrupted_jobs(self) -> int: ...
    def claim_job(self, job_id: int | None = None) -> JobRecord | None: ...
    def complete_job(
        self,
        job_id: int,
        outputs: Sequence[tuple[str, str, Path]],
        destinations: Sequence[str],
        results: Sequence[ResultRow],
    ) -> None: ...
    def fail_job(self, job_id: int, error: str) -> None: ...
    def mark_submitted(self, job_ids: Sequence[int]) -> None: ...
    def unsubmitted_jobs(self) -> list[int]: ...

    # outbox
    def due_outbox(self, now: float | None = None) -> list[OutboxRecord]: ...
    def mark_sent(self, outbox_id: int) -> None: ...
    def mark_attempt_failed(self, outbox_id: int, error: str, next_attempt_at: float) -> None: ...
    def mark_withheld(self, outbox_id: int, reason: str) -> None: ...
    def mark_failed(self, outbox_id: int, answer: str) -> None: ...
