"""The node's web app: the read-only REST API, the dashboard page on top of it, and /metrics.

JSON (results also as CSV). Served by `myonode serve` on `http.bind:http.port`, behind the
Host allow-list and token authentication of `app.auth` (all but /api/health). `limit`
parameters are clamped to 1..`http.max_rows`; /docs and /openapi.json only with `http.docs`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST

from myonode import __version__
from myonode.app.auth import Guard, accepted_digests
from myonode.app.metrics import Metrics
from myonode.core.config import Settings
from myonode.store.files import results_dir_for
from myonode.store.index import FINAL_STATUSES, Index
from myonode.store.records import ResultFilter, as_dicts, records_csv
from myonode.worker.runner import OVERLAY_PNG

DASHBOARD_DIR = Path(__file__).parent / "dashboard"


def _rows(rows) -> list[dict]:
    return [dict(row) for row in rows]


def create_app(
    index: Index,
    settings: Settings,
    metrics: Metrics,
    wanted: dict[str, list[str] | None] | None = None,
) -> FastAPI:
    """`wanted`: the modalities and SOP classes the node's profiles select (`/api/wanted`)."""
    docs = settings.http.docs
    app = FastAPI(
        title="myonode",
        version=__version__,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.add_middleware(
        Guard, digests=accepted_digests(settings), allowed_hosts=settings.http.allowed_hosts
    )

    def clamp(limit: int) -> int:
        return max(1, min(limit, settings.http.max_rows))

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    @app.get("/api/health")
    def health() -> dict:
        return {
            "status": "ok",
            "version": __version__,
            "counts": index.counts(),
            "viewer": {"url": settings.viewer.public_url, "port": settings.viewer.port},
        }

    @app.get("/api/wanted")
    def wanted_series() -> dict:
        """What an archive should forward (the Orthanc plugin leaves out other series)."""
        return wanted or {"modalities": [], "sop_classes": []}

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
        """Recent studies with their status and routing decisions."""
        rows = index.query(
            """SELECT s.*, (SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid)
                   AS instances
               FROM studies s ORDER BY last_received_at DESC LIMIT ?""",
            (clamp(limit),),
        )
        return [
            {
                **dict(row),
                "status": index.study_status(row["study_uid"]),
                "decisions": _rows(index.decisions(row["study_uid"])),
            }
            for row in rows
        ]

    @app.get("/api/studies/{study_uid}")
    def study(study_uid: str) -> dict:
        row = index.study(study_uid)
        if row is None:
            raise HTTPException(404, f"no study {study_uid}")
        status = index.study_status(study_uid)
        return {
            "study": dict(row),
            "status": status,
            "final": status in FINAL_STATUSES,  # nothing more will happen without new images
            "decisions": _rows(index.decisions(study_uid)),
            "jobs": _rows(index.query("SELECT * FROM jobs WHERE study_uid = ?", (study_uid,))),
            "outbox": _rows(index.query("SELECT * FROM outbox WHERE study_uid = ?", (study_uid,))),
            "results": as_dicts(index.query_results(ResultFilter(study_uid=study_uid))),
        }

    @app.get("/api/review")
    def review() -> list[dict]:
        """Studies with a structure that did not pass quality control (review or fail)."""
        return _rows(index.studies_needing_review())

    @app.get("/api/jobs")
    def jobs(limit: int = 100) -> list[dict]:
        return _rows(index.query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (clamp(limit),)))

    @app.get("/api/jobs/{job_id}/overlay.png", response_class=FileResponse)
    def overlay(job_id: int) -> FileResponse:
        """The key slice with the job's segmentation drawn over it."""
        rows = index.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        path = results_dir_for(settings.results_dir, rows[0]) / OVERLAY_PNG if rows else None
        if path is None or not path.is_file():
            raise HTTPException(404, f"no overlay image for job {job_id}")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/outbox")
    def outbox(limit: int = 100) -> list[dict]:
        return _rows(index.query("SELECT * FROM outbox ORDER BY id DESC LIMIT ?", (clamp(limit),)))

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR, html=True), name="dashboard")
    return app
