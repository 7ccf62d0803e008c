"""The node's small REST API: results, studies with their routing decisions, jobs, outbox.

Read-only, JSON (results also as CSV). Served by `myonode serve` on `http.bind:http.port`.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import PlainTextResponse

from . import __version__
from .index import Index
from .results import ResultFilter, as_dicts, records_csv


def _rows(rows) -> list[dict]:
    return [dict(row) for row in rows]


def create_app(index: Index) -> FastAPI:
    app = FastAPI(title="myonode", version=__version__)

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "version": __version__, "counts": index.counts()}

    @app.get("/api/results", response_model=None)
    def results(
        patient_id: str | None = None,
        study_uid: str | None = None,
        since: dt.date | None = None,
        until: dt.date | None = None,
        pipeline: str | None = None,
        structure: str | None = None,
        quantity: str | None = None,
        format: Literal["json", "csv"] = Query("json"),
    ):
        records = index.query_results(
            ResultFilter(patient_id, study_uid, since, until, pipeline, structure, quantity)
        )
        if format == "csv":
            return PlainTextResponse(records_csv(records), media_type="text/csv")
        return as_dicts(records)

    @app.get("/api/studies")
    def studies(limit: int = 50) -> list[dict]:
        return _rows(
            index.query("SELECT * FROM studies ORDER BY last_received_at DESC LIMIT ?", (limit,))
        )

    @app.get("/api/studies/{study_uid}")
    def study(study_uid: str) -> dict:
        row = index.study(study_uid)
        if row is None:
            raise HTTPException(404, f"no study {study_uid}")
        return {
            "study": dict(row),
            "status": index.study_status(study_uid),
            "decisions": _rows(index.decisions(study_uid)),
            "jobs": _rows(index.query("SELECT * FROM jobs WHERE study_uid = ?", (study_uid,))),
            "outbox": _rows(index.query("SELECT * FROM outbox WHERE study_uid = ?", (study_uid,))),
            "results": as_dicts(index.query_results(ResultFilter(study_uid=study_uid))),
        }

    @app.get("/api/jobs")
    def jobs(limit: int = 100) -> list[dict]:
        return _rows(index.query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)))

    @app.get("/api/outbox")
    def outbox(limit: int = 100) -> list[dict]:
        return _rows(index.query("SELECT * FROM outbox ORDER BY id DESC LIMIT ?", (limit,)))

    return app
