"""Typed records the store hands out: result rows and the filter that selects them.

The same row shape comes from the node's own index and from SRs found in an archive, so every
reader (CLI, API, dashboard) prints one table whichever it reads.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ResultRow:
    """One published number (or coded conclusion). `qc` is the structure's quality-control
    verdict (pass / review / fail) on every per-structure row, None on study-level rows."""

    structure: str
    quantity: str
    value: float | None
    unit: str
    text: str | None = None
    qc: str | None = None


@dataclass(frozen=True)
class ResultRecord:
    """A result row with the study it belongs to: what `myonode results` prints."""

    study_uid: str
    patient_id: str
    study_date: str
    pipeline: str
    structure: str
    quantity: str
    value: float | None
    unit: str
    text: str | None = None
    qc: str | None = None


@dataclass(frozen=True)
class ResultFilter:
    """Which results to return; every field is optional. Dates are inclusive study dates."""

    patient_id: str | None = None
    study_uid: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    pipeline: str | None = None
    structure: str | None = None
    quantity: str | None = None

    def accepts(self, record: ResultRecord) -> bool:
        date = _parse_date(record.study_date)
        return (
            (self.patient_id is None or record.patient_id == self.patient_id)
            and (self.study_uid is None or record.study_uid == self.study_uid)
            and (self.since is None or (date is not None and date >= self.since))
            and (self.until is None or (date is not None and date <= self.until))
            and (self.pipeline is None or record.pipeline == self.pipeline)
            and (self.structure is None or record.structure == self.structure)
            and (self.quantity is None or record.quantity == self.quantity)
        )


def _parse_date(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except (TypeError, ValueError):
        return None


def as_dicts(rows: Iterable[ResultRow]) -> list[dict]:
    return [asdict(row) for row in rows]


RECORD_COLUMNS = tuple(ResultRecord.__dataclass_fields__)


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula, quoted with a leading '.

    Numbers stay numbers (a negative value is data, not a formula); header values such as a
    PatientID come from whoever sent the study.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def records_csv(records: Iterable[ResultRecord]) -> str:
    """CSV with a header row, values unrounded (for research use), text formula-safe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RECORD_COLUMNS)
    for record in records:
        writer.writerow("" if v is None else spreadsheet_safe(v) for v in asdict(record).values())
    return buffer.getvalue()
