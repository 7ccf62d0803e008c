"""Assemble: turn quiet studies into routing decisions and queued jobs.

A study is stable once no instance has arrived for `assemble.quiet_seconds`. Routing and job
creation are one transaction guarded by the study's change counter, so a study is routed once
per change, never twice, even across a crash; a late instance bumps the counter and the study
is routed again when it is quiet.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .index import Index
from .pipeline import Runner
from .routing import Profile, load_profiles, route_indexed_study
from .routing.select import PipelineUnavailable

log = logging.getLogger(__name__)


def pipeline_versions(runner: Runner):
    """`version_of` for routing: the runner's pipeline version, None where the node has no
    such pipeline, and `PipelineUnavailable` with the reason where it cannot run: no engine
    configured, or the engine cannot be created (logged as an error)."""

    def version_of(pipeline: str) -> str | None:
        if pipeline not in runner.pipelines:
            return None
        try:
            return runner.version(pipeline)
        except PipelineUnavailable:
            raise  # expected (e.g. no model configured): the routing decision records why
        except Exception as exc:
            log.error("pipeline %s unavailable: %s: %s", pipeline, type(exc).__name__, exc)
            raise PipelineUnavailable(
                f"its engine cannot be created ({type(exc).__name__}: {exc})"
            ) from exc

    return version_of


def assemble_stable_studies(
    index: Index,
    runner: Runner,
    quiet_seconds: float,
    profiles: Sequence[Profile] | None = None,
) -> int:
    """Route every stable study with unprocessed changes; return how many jobs were queued."""
    profiles = load_profiles() if profiles is None else profiles
    version_of = pipeline_versions(runner)
    queued = 0
    for study in index.stable_studies(quiet_seconds):
        routing = route_indexed_study(
            index, study["study_uid"], profiles, version_of, index.job_done_for
        )
        job_ids = index.record_routing(
            study["study_uid"], study["change_seq"], routing.decisions, routing.jobs
        )
        for decision in routing.decisions:
            log.info(
                "study %s series %s: %s%s",
                study["study_uid"],
                decision.series_uid,
                f"-> {decision.pipeline}: " if decision.selected else "not routed: ",
                decision.reason,
            )
        queued += len(job_ids)
    return queued
