"""Routing: which series of a stable study feed which pipeline, and why.

Minimal rules for the walking skeleton: an axial CT image series with enough slices goes to
the CT muscle pipeline (the largest such series if there are several); every other series is
recorded as not routed, with the reason.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom import uid

from . import sop
from .index import Decision, JobRequest

CT_PIPELINE = "ct_muscle"
MIN_SLICES = 5
AXIAL_COSINE = 0.95  # |slice normal . z| above this counts as axial (about 18 degrees of tilt)


@dataclass(frozen=True)
class SeriesSummary:
    """What routing knows about one series: its tags from the first instance, and counts."""

    series_uid: str
    sop_class_uid: str
    tags: dict
    instance_count: int
    input_digest: str


def summarise(instances: Sequence) -> list[SeriesSummary]:
    """Group index rows (or mappings with the same keys) into series summaries."""
    grouped: dict[str, list] = defaultdict(list)
    for row in instances:
        grouped[row["series_uid"]].append(row)
    summaries = []
    for series_uid, rows in grouped.items():
        rows = sorted(rows, key=lambda r: r["sop_uid"])
        digest = hashlib.sha256(
            "".join(f"{r['sop_uid']}:{r['sha256']};" for r in rows).encode()
        ).hexdigest()
        tags = rows[0]["tags"]
        summaries.append(
            SeriesSummary(
                series_uid=series_uid,
                sop_class_uid=rows[0]["sop_class_uid"],
                tags=json.loads(tags) if isinstance(tags, str) else tags,
                instance_count=len(rows),
                input_digest=digest,
            )
        )
    return summaries


def orientation(tags: dict) -> str:
    """axial / coronal / sagittal / oblique from ImageOrientationPatient, or unknown."""
    iop = tags.get("ImageOrientationPatient")
    if not iop or len(iop) != 6:
        return "unknown"
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < AXIAL_COSINE:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _exclusion(series: SeriesSummary) -> str | None:
    modality = series.tags.get("Modality", "?")
    if series.sop_class_uid in sop.RESULT_CLASSES:
        return f"derived result object ({modality}); not measured"
    if modality != "CT":
        return f"modality {modality}: no pipeline for it yet"
    if series.sop_class_uid != uid.CTImageStorage:
        return f"SOP class {series.sop_class_uid} is not single-frame CT Image Storage"
    plane = orientation(series.tags)
    if plane != "axial":
        return f"orientation {plane}, the CT pipeline needs axial slices"
    if series.instance_count < MIN_SLICES:
        return f"{series.instance_count} slices, fewer than {MIN_SLICES}"
    return None


def route_study(
    instances: Sequence,
    pipeline_version: str,
    already_done: Callable[[str, str, str, str], bool],
) -> tuple[list[Decision], list[JobRequest]]:
    """Decide per series; return the decisions and the jobs to queue."""
    decisions: list[Decision] = []
    candidates: list[SeriesSummary] = []
    for series in summarise(instances):
        reason = _exclusion(series)
        if reason:
            decisions.append(Decision(series.series_uid, None, False, reason))
        else:
            candidates.append(series)
    candidates.sort(key=lambda s: s.instance_count, reverse=True)
    jobs: list[JobRequest] = []
    for rank, series in enumerate(candidates):
        if rank > 0:
            decisions.append(
                Decision(
                    series.series_uid,
                    CT_PIPELINE,
                    False,
                    f"another axial CT series has more slices ({candidates[0].instance_count})",
                )
            )
            continue
        reason = f"axial CT, {series.instance_count} slices; largest axial CT series of the study"
        if already_done(series.series_uid, CT_PIPELINE, pipeline_version, series.input_digest):
            decisions.append(
                Decision(
                    series.series_uid, CT_PIPELINE, True, reason + "; unchanged since last run"
                )
            )
            continue
        decisions.append(Decision(series.series_uid, CT_PIPELINE, True, reason))
        jobs.append(
            JobRequest(
                series.series_uid, CT_PIPELINE, pipeline_version, series.input_digest, [reason]
            )
        )
    return decisions, jobs
