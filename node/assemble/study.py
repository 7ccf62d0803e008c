"""Assemble: turn quiet studies into routing decisions and queued jobs.

A study is stable once no instance has arrived for `assemble.quiet_seconds`. Routing and job
creation are one transaction guarded by the study's change counter, so a study is routed once
per change, never twice, even across a crash; a late instance bumps the counter and the study
is routed again when it is quiet.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from myonode.pipelines import VersionOf
from myonode.queue import JobQueue
from myonode.route import Profile, load_profiles, route_indexed_study
from myonode.store.repository import Store

log = logging.getLogger(__name__)


def assemble_stable_studies(
    index: Store,
    version_of: VersionOf,
    quiet_seconds: float,
    profiles: Sequence[Profile] | None = None,
    queue: JobQueue | None = None,
) -> int:
    """Route every stable study with unprocessed changes; return how many jobs were queued.

    Jobs are submitted to `queue` only after the routing transaction committed them, so a
    worker never sees a job the store does not hold."""
    profiles = load_profiles() if profiles is None else profiles
    queued = 0
    for study in index.stable_studies(quiet_seconds):
        routing = route_indexed_study(
            index, study.study_uid, profiles, version_of, index.job_done_for
        )
        job_ids = index.record_routing(
            study.study_uid, study.change_seq, routing.decisions, routing.jobs
        )
        if queue is not None and job_ids:
            queue.submit(job_ids)
        for decision in routing.decisions:
            log.info(
                "study %s series %s: %s%s",
                study.study_uid,
                decision.series_uid,
                f"-> {decision.pipeline}: " if decision.selected else "not routed: ",
                decision.reason,
            )
        queued += len(job_ids)
    return queued
