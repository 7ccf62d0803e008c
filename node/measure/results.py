"""Results as rows: from an assessment (into the index), and back out of an SR.

The same row shape comes from the node's own index and from SRs found in an archive, so
`myonode results` prints one table whichever it reads. `rows_from_sr` is the inverse of the
SR encoder; a test holds the two together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from pydicom.dataset import Dataset

from myonode.dicom import codes as c
from myonode.measure.assessment import Assessment
from myonode.measure.prediction import PREDICTED_SARCOPENIA, PREDICTED_SUFFIX, PREDICTION_PREFIX
from myonode.store.records import ResultRecord, ResultRow

# (concept value, derivation value or None) -> quantity, for per-structure measurements.
STRUCTURE_QUANTITIES = {
    (c.VOLUME.value, None): "volume",
    (c.MASS.value, None): "mass",
    (c.ATTENUATION.value, c.MEAN.value): "mean_attenuation",
    (c.ATTENUATION.value, c.STANDARD_DEVIATION.value): "sd_attenuation",
    (c.FAT_FRACTION.value, c.MEAN.value): "mean_fat_fraction",
    (c.FAT_FRACTION.value, c.STANDARD_DEVIATION.value): "sd_fat_fraction",
    (c.AREA.value, c.MAXIMUM.value): "max_csa",
    (c.AREA_AT_L3.value, None): "l3_csa",
    (c.MASS_CHANGE.value, None): "mass_change",
    (c.MASS_CHANGE_RATE.value, None): "mass_change_rate",
}
STUDY_LEVEL = ""  # the structure column of rows that belong to the whole study
QC_QUANTITY = "qc"  # a structure's QC row: the verdict in `qc`, the reasons in `text`
MAX_TEXT = 1024  # an SR TEXT item's length, so rows read back from the SR are the same


def records_from_sr(sr: Dataset) -> list[ResultRecord]:
    """Rows of one of the node's SRs with their study, patient and pipeline attached."""
    description = str(sr.get("SeriesDescription", ""))
    parts = description.split()
    pipeline = parts[1] if len(parts) > 1 and parts[0] == "myonode" else ""
    return [
        ResultRecord(
            str(sr.StudyInstanceUID),
            str(sr.get("PatientID", "")),
            str(sr.get("StudyDate", "")),
            pipeline,
            row.structure,
            row.quantity,
            row.value,
            row.unit,
            row.text,
            row.qc,
        )
        for row in rows_from_sr(sr)
    ]


def result_rows(assessment: Assessment) -> list[ResultRow]:
    """Every number (and coded conclusion) the SR carries, as rows."""
    rows: list[ResultRow] = []
    changes = {change.structure: change for change in assessment.changes}
    for item in assessment.structures:
        if item.voxel_count == 0:
            continue
        key = item.structure.key
        verdict = assessment.quality.verdict(key) if assessment.quality else None
        if assessment.quality is not None:
            text = assessment.quality.describe(key)[:MAX_TEXT]
            rows.append(ResultRow(key, QC_QUANTITY, None, "", text, verdict))
        if not assessment.published(item):
            continue  # failed QC: the verdict and its reasons, no number
        measured = [
            ResultRow(key, "volume", item.volume_cm3, "cm3"),
            ResultRow(key, "mass", item.mass_g, "g"),
        ]
        for name, stats, unit in (
            ("attenuation", item.attenuation, "[hnsf'U]"),
            ("fat_fraction", item.fat_fraction, "%"),
        ):
            if stats is not None:
                measured.append(ResultRow(key, f"mean_{name}", stats.mean, unit))
                measured.append(ResultRow(key, f"sd_{name}", stats.sd, unit))
        if item.max_area is not None:
            measured.append(ResultRow(key, "max_csa", item.max_area.area_cm2, "cm2"))
        if item.area_at_l3_cm2 is not None:
            measured.append(ResultRow(key, "l3_csa", item.area_at_l3_cm2, "cm2"))
        if key in changes:
            measured.append(ResultRow(key, "mass_change", changes[key].change_g, "g"))
            if changes[key].rate_g_per_year is not None:
                measured.append(
                    ResultRow(key, "mass_change_rate", changes[key].rate_g_per_year, "g/a")
                )
        rows += [replace(row, qc=verdict) for row in measured]
    for derived in assessment.derived:
        if derived.value is not None and derived.key in c.DERIVED:
            rows.append(ResultRow(STUDY_LEVEL, derived.key, derived.value, derived.unit))
    for comparison in assessment.comparisons:
        rows.append(ResultRow(STUDY_LEVEL, comparison.quantity, comparison.value, comparison.unit))
        rows.append(
            ResultRow(STUDY_LEVEL, f"{comparison.quantity}_z", comparison.z_score, "{z-score}")
        )
        rows.append(
            ResultRow(STUDY_LEVEL, f"{comparison.quantity}_percentile", comparison.percentile, "%")
        )
    for prediction in assessment.predictions:
        unit = prediction.target.unit
        rows.append(ResultRow(STUDY_LEVEL, prediction.key, prediction.mean, unit))
        if prediction.sd is not None:
            rows.append(ResultRow(STUDY_LEVEL, f"{prediction.key}_sd", prediction.sd, unit))
    suffix = PREDICTED_SUFFIX if assessment.predictions else ""
    for item in assessment.sarcopenia:
        rows.append(
            ResultRow(
                STUDY_LEVEL, _sarcopenia_key(item.guideline) + suffix, None, "", item.conclusion
            )
        )
    return _unique(rows)


def _unique(rows: Iterable[ResultRow]) -> list[ResultRow]:
    """Drop repeats (a comparison restates a derived value), keeping the first."""
    seen, unique = set(), []
    for row in rows:
        if (row.structure, row.quantity) not in seen:
            seen.add((row.structure, row.quantity))
            unique.append(row)
    return unique


def _sarcopenia_key(guideline: str) -> str:
    return "sarcopenia_" + guideline.lower().replace(" ", "")


def _code(item: Dataset, keyword: str) -> str | None:
    sequence = item.get(keyword)
    return str(sequence[0].CodeValue) if sequence else None


def _modifier(item: Dataset, concept: str) -> str | None:
    for child in item.get("ContentSequence", []):
        if _code(child, "ConceptNameCodeSequence") == concept and "ConceptCodeSequence" in child:
            return str(child.ConceptCodeSequence[0].CodeValue)
    return None


def _num(item: Dataset) -> tuple[float, str] | None:
    if item.get("ValueType") != "NUM" or not item.get("MeasuredValueSequence"):
        return None
    measured = item.MeasuredValueSequence[0]
    return float(measured.NumericValue), str(measured.MeasurementUnitsCodeSequence[0].CodeValue)


def _tracking_identifier(group: Dataset) -> str | None:
    for child in group.get("ContentSequence", []):
        if _code(child, "ConceptNameCodeSequence") == "112039":  # Tracking Identifier
            return str(child.TextValue)
    return None


def rows_from_sr(sr: Dataset) -> list[ResultRow]:
    """Read back the rows of an SR written by `encode.sr.build_report`."""
    rows: list[ResultRow] = []
    verdicts: dict[str, str] = {}
    reasons: dict[str, str] = {}
    derivation, site = "121401", "363698007"  # DCM Derivation, SCT Finding Site
    z_score, percentile = c.Z_SCORE.value, c.PERCENTILE.value
    sd = c.STANDARD_DEVIATION.value
    for container in sr.get("ContentSequence", []):
        if _code(container, "ConceptNameCodeSequence") != "126010":  # Imaging Measurements
            continue
        for group in container.get("ContentSequence", []):
            identifier = _tracking_identifier(group) or ""
            reference = (
                identifier.removeprefix("reference:")
                if identifier.startswith("reference:")
                else None
            )
            for item in group.get("ContentSequence", []):
                concept = _code(item, "ConceptNameCodeSequence")
                if concept == c.QC_VERDICT.value and item.get("ValueType") == "CODE":
                    value = _code(item, "ConceptCodeSequence")
                    verdicts[identifier] = next(
                        k for k, v in c.QC_VALUES.items() if v.value == value
                    )
                    continue
                if concept == c.QC_REASONS.value and item.get("ValueType") == "TEXT":
                    reasons[identifier] = str(item.TextValue)
                    continue
                if item.get("ValueType") == "CODE" and concept in {
                    g.value for g in c.GUIDELINES.values()
                }:
                    guideline = next(k for k, v in c.GUIDELINES.items() if v.value == concept)
                    value = _code(item, "ConceptCodeSequence")
                    conclusion = next(k for k, v in c.CONCLUSIONS.items() if v.value == value)
                    key = _sarcopenia_key(guideline)
                    if identifier == PREDICTED_SARCOPENIA:
                        key += PREDICTED_SUFFIX
                    rows.append(ResultRow(STUDY_LEVEL, key, None, "", conclusion))
                    continue
                number = _num(item)
                if number is None:
                    continue
                value, unit = number
                if identifier.startswith(PREDICTION_PREFIX):
                    key = identifier.removeprefix(PREDICTION_PREFIX)
                    suffix = "_sd" if _modifier(item, derivation) == sd else ""
                    rows.append(ResultRow(STUDY_LEVEL, key + suffix, value, unit))
                elif reference is not None:
                    suffix = {z_score: "_z", percentile: "_percentile"}.get(concept, "")
                    rows.append(ResultRow(STUDY_LEVEL, reference + suffix, value, unit))
                elif identifier == "derived-indices":
                    key = c.derived_key(concept, _modifier(item, site))
                    if key is not None:
                        rows.append(ResultRow(STUDY_LEVEL, key, value, unit))
                else:
                    quantity = STRUCTURE_QUANTITIES.get((concept, _modifier(item, derivation)))
                    if quantity is not None:
                        rows.append(ResultRow(identifier, quantity, value, unit))
    rows += [
        ResultRow(key, QC_QUANTITY, None, "", reasons.get(key), verdict)
        for key, verdict in verdicts.items()
    ]
    rows = [replace(row, qc=verdicts.get(row.structure)) if row.structure else row for row in rows]
    return _unique(_ordered(rows, list(reasons)))


def _ordered(rows: list[ResultRow], order: list[str]) -> list[ResultRow]:
    """Structure rows first, then study-level rows, as `result_rows` emits them: a structure's
    quantities in `STRUCTURE_QUANTITIES` order, whichever of its SR groups held them.
    Structures come in `order` (their volumetric groups', which every structure has, also
    one that failed QC and has no planar group), then in order of appearance."""
    rank = {quantity: n for n, quantity in enumerate(STRUCTURE_QUANTITIES.values())}
    rank[QC_QUANTITY] = -1
    structures = list(dict.fromkeys([*order, *(r.structure for r in rows if r.structure)]))
    per_structure = sorted(
        (r for r in rows if r.structure),
        key=lambda r: (structures.index(r.structure), rank[r.quantity]),
    )
    return per_structure + [r for r in rows if not r.structure]
