"""Assemble: turn quiet studies into routing decisions and queued jobs.

A study is stable once no instance has arrived for `assemble.quiet_seconds`. Routing and job
creation are one transaction guarded by the study's change counter, so a study is routed once
per change, never twice, even across a crash; a late instance bumps the counter and the study
is routed again when it is quiet.
"""

from __future__ import annotations

import logging

from .index import Index
from .pipeline import Runner
from .route import CT_PIPELINE, route_study

log = logging.getLogger(__name__)


def assemble_stable_studies(index: Index, runner: Runner, quiet_seconds: float) -> int:
    """Route every stable study with unprocessed changes; return how many jobs were queued."""
    queued = 0
    version = runner.version(CT_PIPELINE)
    for study in index.stable_studies(quiet_seconds):
        decisions, jobs = route_study(
            index.study_instances(study["study_uid"]), version, index.job_done_for
        )
        job_ids = index.record_routing(study["study_uid"], study["change_seq"], decisions, jobs)
        for decision in decisions:
            log.info(
                "study %s series %s: %s%s",
                study["study_uid"],
                decision.series_uid,
                f"-> {decision.pipeline}: " if decision.selected else "not routed: ",
                decision.reason,
            )
        queued += len(job_ids)
    return queued
