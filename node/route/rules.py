"""Evaluate a profile's rules on one series: every rule gives matched/failed and what it saw.

Pure functions over `SeriesInfo`; the contrast rule takes the status computed separately
(it may need pixels, so it is only computed for series that pass every other rule).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pydicom.uid import UID

from myonode.route.contrast import ContrastStatus
from myonode.route.profiles import Profile, Range
from myonode.route.series import SeriesInfo

_DIFFUSION_TYPES = {"ADC", "TRACEW", "TRACE", "DIFFUSION", "EADC", "FA", "DWI"}


@dataclass(frozen=True)
class RuleResult:
    rule: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(value: float | None, unit: str = " mm") -> str:
    return "missing" if value is None else f"{value:g}{unit}"


def _range(name: str, value: float | None, rule: Range, unit: str = " mm") -> RuleResult:
    if value is None:
        return RuleResult(
            name, rule.allow_missing, "missing" + (" (allowed)" if rule.allow_missing else "")
        )
    if rule.min is not None and value < rule.min - 1e-6:
        return RuleResult(name, False, f"{value:g}{unit} < {rule.min:g}{unit}")
    if rule.max is not None and value > rule.max + 1e-6:
        return RuleResult(name, False, f"{value:g}{unit} > {rule.max:g}{unit}")
    return RuleResult(name, True, f"{value:g}{unit}")


def _sop_name(value: str) -> str:
    name = UID(value).keyword if value else ""
    return name or value or "empty"


def header_rules(profile: Profile, info: SeriesInfo) -> list[RuleResult]:
    """All rules except contrast, in the profile's schema order."""
    rules = profile.rules
    results = []
    if info.problems:
        results.append(RuleResult("consistency", False, "; ".join(info.problems)))
    else:
        results.append(RuleResult("consistency", True, "headers consistent"))
    if rules.modality is not None:
        results.append(
            RuleResult("modality", info.modality in rules.modality, info.modality or "missing")
        )
    if rules.sop_classes is not None:
        results.append(
            RuleResult(
                "sop_class", info.sop_class_uid in rules.sop_classes, _sop_name(info.sop_class_uid)
            )
        )
    if rules.image_type is not None:
        shown = "\\".join(info.image_type) or "missing"
        missing = [v for v in rules.image_type.require_all if v not in info.image_type]
        excluded = [v for v in rules.image_type.exclude_any if v in info.image_type]
        detail = shown
        if missing:
            detail += f" (lacks {', '.join(missing)})"
        if excluded:
            detail += f" ({', '.join(excluded)})"
        results.append(RuleResult("image_type", not missing and not excluded, detail))
    if rules.exclude_diffusion:
        b_value = info.tags.get("DiffusionBValue")
        diffusion = bool(_DIFFUSION_TYPES & set(info.image_type))
        try:
            diffusion = diffusion or float(b_value or 0) > 0
        except (TypeError, ValueError):
            pass
        results.append(
            RuleResult("diffusion", not diffusion, "diffusion image" if diffusion else "no")
        )
    if rules.orientation is not None:
        rule = rules.orientation
        if info.obliquity_deg is None:
            results.append(RuleResult("orientation", False, "unknown (no orientation)"))
        else:
            ok = info.plane in rule.allowed and info.obliquity_deg <= rule.tolerance_deg
            detail = info.plane
            if info.obliquity_deg > 0.5:
                detail += f", {info.obliquity_deg:.0f}° oblique"
            if info.plane in rule.allowed and not ok:
                detail += f" > {rule.tolerance_deg:g}° tolerance"
            results.append(RuleResult("orientation", ok, detail))
    if rules.slice_thickness_mm is not None:
        results.append(_range("slice_thickness", info.slice_thickness_mm, rules.slice_thickness_mm))
    if rules.slice_spacing_mm is not None:
        results.append(_range("slice_spacing", info.slice_spacing_mm, rules.slice_spacing_mm))
    if rules.kernel is not None:
        kernel_class = info.kernel_class
        ok = kernel_class in rules.kernel.allowed or (
            kernel_class == "unknown" and rules.kernel.allow_unknown
        )
        shown = f"{info.kernel} ({kernel_class})" if info.kernel else "none (unknown)"
        results.append(RuleResult("kernel", ok, shown))
    if rules.gantry_tilt_deg is not None:
        results.append(_range("gantry_tilt", info.gantry_tilt_deg, rules.gantry_tilt_deg, unit="°"))
    if rules.body_part is not None:
        part = str(info.tags.get("BodyPartExamined") or "").strip().upper()
        if part:
            ok = part in rules.body_part.allowed
        else:
            ok = rules.body_part.allow_missing
        results.append(RuleResult("body_part", ok, part or "missing"))
    if rules.coverage_mm is not None:
        results.append(_range("coverage", info.coverage_mm, rules.coverage_mm))
    if rules.fov_mm is not None:
        results.append(_range("fov", info.fov_mm, rules.fov_mm))
    if rules.min_instances is not None:
        results.append(
            RuleResult(
                "instances",
                info.instance_count >= rules.min_instances,
                f"{info.instance_count}"
                + (
                    ""
                    if info.instance_count >= rules.min_instances
                    else f" < {rules.min_instances}"
                ),
            )
        )
    if rules.dixon_channel is not None:
        channel = info.dixon_channel or "none"
        results.append(RuleResult("dixon_channel", channel in rules.dixon_channel, channel))
    if profile.dixon is not None:
        wanted = [*profile.dixon.required, *profile.dixon.optional]
        channel = info.dixon_channel or "none"
        results.append(
            RuleResult(
                "dixon_channel",
                channel in wanted,
                channel if channel != "none" else "not a Dixon channel image",
            )
        )
    if rules.view is not None:
        results.append(RuleResult("view", info.view in rules.view.allowed, info.view))
    if rules.pixel_spacing_required is not None:
        known = info.pixel_spacing_mm is not None
        source = info.spacing_source or ("PixelSpacing" if known else "none")
        results.append(
            RuleResult("pixel_spacing", known or not rules.pixel_spacing_required, source)
        )
    if rules.photometric is not None:
        value = str(info.tags.get("PhotometricInterpretation") or "missing")
        results.append(RuleResult("photometric", value in rules.photometric, value))
    return results


def contrast_rule(profile: Profile, status: ContrastStatus) -> RuleResult:
    assert profile.rules.contrast is not None
    return RuleResult("contrast", status.status in profile.rules.contrast.allowed, status.summary)
