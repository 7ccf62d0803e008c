"""The node's web app: the read-only REST API, the dashboard page on top of it, and /metrics.

JSON (results also as CSV). Served by `myonode serve` on `http.bind:http.port`, behind the
Host allow-list and token authentication of `app.auth` (all but /api/health). `limit`
parameters are clamped to 1..`http.max_rows`; /docs and /openapi.json only with `http.docs`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
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
from myonode.store.index import FINAL_STATUSES
from myonode.store.records import ResultFilter, as_dicts, records_csv
from myonode.store.repository import Record, Store
from myonode.worker.runner import OVERLAY_PNG

DASHBOARD_DIR = Path(__file__).parent / "dashboard"


def _rows(records: Sequence[Record]) -> list[dict]:
    return [dict(record) for record in records]


def create_app(
    index: Store,
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
        return [
            {
                **dict(listing.study),
                "instances": listing.instances,
                "status": index.study_status(listing.study.study_uid),
                "decisions": _rows(index.decisions(listing.study.study_uid)),
            }
            for listing in index.recent_studies(clamp(limit))
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
            "jobs": _rows(index.jobs(study_uid=study_uid)[::-1]),
            "outbox": _rows(index.outbox(study_uid=study_uid)[::-1]),
            "results": as_dicts(index.query_results(ResultFilter(study_uid=study_uid))),
        }

    @app.get("/api/review")
    def review() -> list[dict]:
        """Studies with a structure that did not pass quality control (review or fail)."""
        return _rows(index.studies_needing_review())

    @app.get("/api/jobs")
    def jobs(limit: int = 100) -> list[dict]:
        return _rows(index.jobs(clamp(limit)))

    @app.get("/api/jobs/{job_id}/overlay.png", response_class=FileResponse)
    def overlay(job_id: int) -> FileResponse:
        """The key slice with the job's segmentation drawn over it."""
        job = index.job(job_id)
        path = results_dir_for(settings.results_dir, job) / OVERLAY_PNG if job else None
        if path is None or not path.is_file():
            raise HTTPException(404, f"no overlay image for job {job_id}")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/outbox")
    def outbox(limit: int = 100) -> list[dict]:
        return _rows(index.outbox(clamp(limit)))

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR, html=True), name="dashboard")
    return app
