"""Series selection for one study: every profile's rules on every series, one best input per
pipeline, the decisions to store and the jobs to queue.

Profiles run in priority order. For each, the series that pass every rule are *eligible*; the
profile's `prefer` list ranks them (documented per criterion in `PREFERENCES`), and ties after
the list fall to the lowest SeriesNumber, then the Series Instance UID, so the choice is
deterministic. A pipeline is fed once per study: a later profile for a pipeline that an earlier
profile already fed records that instead of queueing a second job. A profile whose pipeline is
not installed, or cannot run (`PipelineUnavailable`, e.g. it needs a model the node does not
have), records what it would have chosen and why nothing ran, and queues nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from myonode.pipelines import PipelineUnavailable, VersionOf
from myonode.route import contrast as contrast_mod
from myonode.route.contrast import ContrastStatus, ImageEvidence
from myonode.route.dixon import plan_stations
from myonode.route.profiles import Profile
from myonode.route.rules import RuleResult, contrast_rule, header_rules
from myonode.route.series import SeriesInfo
from myonode.store.index import Decision, JobRequest

Sampler = Callable[[SeriesInfo, int], tuple[np.ndarray, tuple[float, float]]]
AlreadyDone = Callable[[str, str, str, str], bool]

_CONTRAST_RANK = {"unenhanced": 0, "unknown": 1, "contrast": 2, "conflicting": 3}
_KERNEL_RANK = {"soft": 0, "unknown": 1, "medium": 2, "sharp": 3}
_VIEW_RANK = {"PA": 0, "frontal": 1, "AP": 2}

# name -> (what it prefers, for docs and reasons)
PREFERENCES = {
    "unenhanced": "unenhanced before unknown before contrast-enhanced before conflicting",
    "soft_kernel": "soft kernel before unknown before medium before sharp",
    "thinnest": "thinnest slices (among those the rules allow)",
    "finest_in_plane": "smallest pixel spacing",
    "coverage": "longest coverage along the slice normal",
    "instances": "most images",
    "latest": "latest SeriesDate/SeriesTime (a repeat is usually the better acquisition)",
    "view_pa": "PA before frontal of unknown direction before AP",
    "spacing_known": "calibrated pixel spacing before none",
    "largest_matrix": "largest Rows × Columns",
    "original": "ORIGINAL before DERIVED images",
    "dixon_water": "Dixon water image before non-Dixon before other Dixon channels",
}


def unit_key(unit: SeriesInfo) -> str:
    """Identity of a routing unit: the series, or series/instance for a radiograph."""
    return f"{unit.series_uid}/{unit.sop_uids[0]}" if unit.is_radiograph else unit.series_uid


def preference(name: str, unit: SeriesInfo, status: ContrastStatus | None) -> tuple[Any, str]:
    """(sort value, lower is better; how it reads) of one criterion for one unit."""
    if name == "unenhanced":
        value = status.status if status else "unknown"
        return _CONTRAST_RANK[value], value
    if name == "soft_kernel":
        return _KERNEL_RANK.get(unit.kernel_class, 1), unit.kernel_class
    if name == "thinnest":
        t = unit.slice_thickness_mm
        return (math.inf if t is None else t), f"{t:g} mm" if t is not None else "unknown"
    if name == "finest_in_plane":
        s = min(unit.pixel_spacing_mm) if unit.pixel_spacing_mm else math.inf
        return s, f"{s:g} mm" if s != math.inf else "unknown"
    if name == "coverage":
        c = unit.coverage_mm or 0.0
        return -c, f"{c:.0f} mm"
    if name == "instances":
        return -unit.instance_count, f"{unit.instance_count} images"
    if name == "latest":
        return -unit.acquired, unit.series_time or "unknown"
    if name == "view_pa":
        return _VIEW_RANK.get(unit.view, 3), unit.view
    if name == "spacing_known":
        return (0 if unit.pixel_spacing_mm else 1), unit.spacing_source or "PixelSpacing"
    if name == "largest_matrix":
        rows, columns = unit.tags.get("Rows") or 0, unit.tags.get("Columns") or 0
        return -(int(rows) * int(columns)), f"{rows}×{columns}"
    if name == "original":
        original = "ORIGINAL" in unit.image_type
        return (0 if original else 1), "ORIGINAL" if original else "not ORIGINAL"
    if name == "dixon_water":
        channel = unit.dixon_channel
        return (0 if channel == "water" else 1 if channel is None else 2), channel or "not Dixon"
    raise KeyError(name)


def _fallback_key(unit: SeriesInfo) -> tuple:
    number = unit.series_number if unit.series_number is not None else 1 << 30
    return (number, unit.series_uid, unit.sop_uids[0])


@dataclass
class ProfileOutcome:
    """What one profile did with a study."""

    profile: Profile
    eligible: list[str] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)
    reason: str = ""
    not_chosen: dict[str, str] = field(default_factory=dict)
    job: JobRequest | None = None
    state: str = "nothing eligible"  # queued / unchanged / not installed / unavailable / ...
    inputs: dict[str, list[str]] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name,
            "pipeline": self.profile.pipeline,
            "kind": self.profile.kind,
            "state": self.state,
            "selected": self.selected,
            "reason": self.reason,
            "inputs": self.inputs,
            "eligible": self.eligible,
            "not_chosen": self.not_chosen,
            "notes": self.notes,
        }


@dataclass
class StudyRouting:
    """Every rule on every series, the outcome per profile, decisions and jobs."""

    study_uid: str
    units: list[SeriesInfo]
    contrast: dict[str, ContrastStatus]
    rules: dict[str, dict[str, list[RuleResult]]]
    outcomes: list[ProfileOutcome]
    decisions: list[Decision] = field(default_factory=list)
    jobs: list[JobRequest] = field(default_factory=list)

    def unit_details(self, unit: SeriesInfo) -> dict[str, Any]:
        key = unit_key(unit)
        status = self.contrast.get(key)
        return {
            "unit": unit.summary(),
            "contrast": status.to_json() if status else None,
            "profiles": {
                outcome.profile.name: {
                    "pipeline": outcome.profile.pipeline,
                    "eligible": key in outcome.eligible,
                    "selected": key in outcome.selected,
                    "rules": [r.to_json() for r in self.rules[outcome.profile.name][key]],
                    "why_not": outcome.not_chosen.get(key),
                }
                for outcome in self.outcomes
            },
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "study_uid": self.study_uid,
            "series": [{"key": unit_key(u), **self.unit_details(u)} for u in self.units],
            "pipelines": [o.to_json() for o in self.outcomes],
            "decisions": [
                {
                    "series_uid": d.series_uid,
                    "pipeline": d.pipeline,
                    "selected": d.selected,
                    "reason": d.reason,
                }
                for d in self.decisions
            ],
            "jobs": [
                {
                    "series_uid": j.series_uid,
                    "pipeline": j.pipeline,
                    "pipeline_version": j.pipeline_version,
                }
                for j in self.jobs
            ],
        }


def _evaluate_contrast(
    profile: Profile, unit: SeriesInfo, sampler: Sampler | None
) -> ContrastStatus:
    assert profile.rules.contrast is not None
    evidence = contrast_mod.header_evidence(unit.tags)
    if not profile.rules.contrast.image_evidence:
        image = ImageEvidence("not assessed", "image evidence disabled in the profile")
    elif sampler is None or not unit.paths:
        image = ImageEvidence("not assessed", "no image files at hand")
    else:
        try:
            slices, spacing = sampler(unit, profile.rules.contrast.max_slices)
            image = contrast_mod.image_evidence(slices, spacing)
        except Exception as exc:  # unreadable pixels must not stop routing
            image = ImageEvidence("not assessed", f"pixels unreadable: {type(exc).__name__}: {exc}")
    return contrast_mod.combine(evidence, image)


def default_sampler(unit: SeriesInfo, max_slices: int) -> tuple[np.ndarray, tuple[float, float]]:
    return contrast_mod.sample_hu(unit.paths, max_slices)


def _describe_choice(unit: SeriesInfo, status: ContrastStatus | None, profile: Profile) -> str:
    """Why this input is measured, in words a reader of the SR understands."""
    if profile.kind == "radiograph":
        text = f"{unit.modality} {unit.view} radiograph {unit.label}"
        text += f", pixel spacing: {unit.spacing_source or 'PixelSpacing'}"
        return text
    text = f"{unit.plane} {unit.modality} {unit.label}: {unit.instance_count} images"
    if unit.slice_thickness_mm is not None:
        text += f", {unit.slice_thickness_mm:g} mm slices"
    if unit.coverage_mm is not None:
        text += f" covering {unit.coverage_mm:.0f} mm"
    if unit.kernel:
        text += f", kernel {unit.kernel} ({unit.kernel_class})"
    if unit.dixon_channel:
        text += f", Dixon {unit.dixon_channel}"
    if status is not None:
        text += f"; contrast {status.summary}"
    return text


def _rank(
    profile: Profile,
    units: list[SeriesInfo],
    contrast: dict[str, ContrastStatus],
) -> tuple[SeriesInfo, dict[str, str]]:
    """The best unit by the profile's preferences, and why each other one lost."""

    def key(unit: SeriesInfo) -> tuple:
        status = contrast.get(unit_key(unit))
        return (*(preference(n, unit, status)[0] for n in profile.prefer), _fallback_key(unit))

    ordered = sorted(units, key=key)
    best = ordered[0]
    best_status = contrast.get(unit_key(best))
    lost = {}
    for unit in ordered[1:]:
        status = contrast.get(unit_key(unit))
        why = f"series number/UID order after {best.label} (all preferences equal)"
        for name in profile.prefer:
            mine, shown = preference(name, unit, status)
            theirs, their_shown = preference(name, best, best_status)
            if mine != theirs:
                why = f"{best.label} preferred by {name}: {their_shown} vs {shown}"
                break
        lost[unit_key(unit)] = f"eligible, not chosen: {why}"
    return best, lost


def _digest(parts: Sequence[str]) -> str:
    return hashlib.sha256(";".join(parts).encode()).hexdigest()


def route_study(
    study_uid: str,
    units: Sequence[SeriesInfo],
    profiles: Sequence[Profile],
    version_of: VersionOf,
    already_done: AlreadyDone | None = None,
    sampler: Sampler | None = default_sampler,
) -> StudyRouting:
    """Apply `profiles` to a study's units; return decisions, jobs and the full explanation.

    `version_of(pipeline)` gives the installed pipeline's version, None if the node has no
    such pipeline, or raises `PipelineUnavailable` if it cannot run; `already_done(series,
    pipeline, version, digest)` says a job for exactly these inputs exists; `sampler` reads a
    few slices for image contrast evidence.
    """
    by_key = {unit_key(u): u for u in units}
    contrast: dict[str, ContrastStatus] = {}
    rules: dict[str, dict[str, list[RuleResult]]] = {}
    outcomes: list[ProfileOutcome] = []
    fed: dict[str, str] = {}
    jobs: list[JobRequest] = []
    for profile in profiles:
        outcome = ProfileOutcome(profile)
        outcomes.append(outcome)
        results = rules[profile.name] = {}
        for key, unit in by_key.items():
            found = header_rules(profile, unit)
            if profile.rules.contrast is not None and all(r.ok for r in found):
                if key not in contrast:
                    contrast[key] = _evaluate_contrast(profile, unit, sampler)
                found.append(contrast_rule(profile, contrast[key]))
            results[key] = found
            if all(r.ok for r in found):
                outcome.eligible.append(key)
        if not outcome.eligible:
            continue
        eligible = [by_key[k] for k in outcome.eligible]
        if profile.kind == "dixon":
            assert profile.dixon is not None
            plan = plan_stations(
                eligible,
                profile.dixon.required,
                profile.dixon.optional,
                profile.dixon.max_station_gap_mm,
            )
            for info, why in plan.dropped:
                outcome.not_chosen[unit_key(info)] = why
            outcome.notes += plan.notes
            if not plan.stations:
                outcome.state = "no complete station"
                continue
            chosen = [s.series[c] for s in plan.stations for c in plan.channels]
            outcome.inputs = plan.inputs()
            reference = plan.stations[0].series[plan.channels[0]]
            outcome.reason = (
                f"Dixon {'+'.join(plan.channels)} in {len(plan.stations)} station(s) covering "
                f"{plan.coverage_mm:.0f} mm: "
                + "; ".join(
                    f"station {n + 1} z {s.z_range[0]:.0f}-{s.z_range[1]:.0f} mm: "
                    + ", ".join(f"{c} {s.series[c].label}" for c in plan.channels)
                    for n, s in enumerate(plan.stations)
                )
            )
            if plan.notes:
                outcome.reason += "; " + "; ".join(plan.notes)
            digest = _digest([u.input_digest for u in chosen])
        else:
            best, lost = _rank(profile, eligible, contrast)
            outcome.not_chosen.update(lost)
            chosen, reference = [best], best
            role = "radiograph" if profile.kind == "radiograph" else "image"
            outcome.inputs = {role: [best.series_uid]}
            if profile.kind == "radiograph":
                outcome.inputs["instances"] = [best.sop_uids[0]]
            outcome.reason = _describe_choice(best, contrast.get(unit_key(best)), profile)
            if len(eligible) > 1:
                order = ", ".join(profile.prefer) or "series number"
                outcome.reason += f"; best of {len(eligible)} eligible by {order}"
            digest = best.input_digest
        outcome.selected = [unit_key(u) for u in chosen]
        pipeline = profile.pipeline
        if pipeline in fed:
            outcome.state = "already fed"
            for key in outcome.selected:
                outcome.not_chosen[key] = (
                    f"eligible, but {pipeline} is already fed by profile {fed[pipeline]} "
                    "(higher priority)"
                )
            outcome.selected = []
            continue
        try:
            version = version_of(pipeline)
        except PipelineUnavailable as exc:
            outcome.state = "unavailable"
            for key in outcome.selected:
                outcome.not_chosen[key] = (
                    f"would be selected ({outcome.reason}), but pipeline {pipeline} cannot run: "
                    f"{exc}"
                )
            outcome.selected = []
            continue
        if version is None:
            outcome.state = "not installed"
            for key in outcome.selected:
                outcome.not_chosen[key] = (
                    f"would be selected ({outcome.reason}), but pipeline {pipeline} is not "
                    "installed on this node"
                )
            outcome.selected = []
            continue
        fed[pipeline] = profile.name
        if already_done is not None and already_done(
            reference.series_uid, pipeline, version, digest
        ):
            outcome.state = "unchanged"
            outcome.reason += "; unchanged since last run"
            continue
        outcome.state = "queued"
        reasons = [f"{profile.name} -> {pipeline}: {outcome.reason}"]
        reasons += [
            f"not chosen: {by_key[k].label}: {why}"
            for k, why in outcome.not_chosen.items()
            if k in outcome.eligible
        ][:5]
        outcome.job = JobRequest(
            reference.series_uid, pipeline, version, digest, reasons, outcome.inputs
        )
        jobs.append(outcome.job)
    routing = StudyRouting(study_uid, list(units), contrast, rules, outcomes, jobs=jobs)
    routing.decisions = _decisions(routing)
    return routing


def _closest_failure(routing: StudyRouting, unit: SeriesInfo) -> tuple[str | None, str]:
    """(pipeline, reason) from the profile that came nearest to taking this unit."""
    key = unit_key(unit)
    for outcome in routing.outcomes:
        if key in outcome.not_chosen:
            return outcome.profile.pipeline, f"{outcome.profile.name}: {outcome.not_chosen[key]}"
    if unit.is_result:
        return None, f"derived result object ({unit.modality}); not measured"
    candidates = []
    for outcome in routing.outcomes:
        found = routing.rules[outcome.profile.name][key]
        modality = next((r for r in found if r.rule == "modality"), None)
        if modality is not None and not modality.ok:
            continue
        failed = [r for r in found if not r.ok]
        candidates.append((len(failed), outcome.profile.priority, outcome, failed))
    if not candidates:
        return None, f"no profile routes modality {unit.modality or 'missing'}"
    _, _, outcome, failed = min(candidates, key=lambda c: (c[0], c[1]))
    reason = "; ".join(f"{r.rule}: {r.detail}" for r in failed) or outcome.state
    return outcome.profile.pipeline, f"{outcome.profile.name}: {reason}"


def _decisions(routing: StudyRouting) -> list[Decision]:
    decisions = []
    for unit in routing.units:
        key = unit_key(unit)
        details = routing.unit_details(unit)
        taken = [o for o in routing.outcomes if key in o.selected]
        for outcome in taken:
            decisions.append(
                Decision(
                    unit.series_uid,
                    outcome.profile.pipeline,
                    True,
                    f"{outcome.profile.name}: {outcome.reason}",
                    details,
                )
            )
        if not taken:
            pipeline, reason = _closest_failure(routing, unit)
            decisions.append(Decision(unit.series_uid, pipeline, False, reason, details))
    return decisions
