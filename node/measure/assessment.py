"""One job's complete, pure assessment: structures, indices, reference comparisons,
predictions, sarcopenia criteria and change since prior studies. Encoders and the results
index read it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from myonode.core.patient import PatientFacts
from myonode.core.quality import QualityReport
from myonode.core.types import LabelMap
from myonode.core.volume import Volume
from myonode.measure.indices import DerivedValue, derived_values, patient_values
from myonode.measure.prediction import Prediction, criterion_inputs
from myonode.measure.references import (
    SEED000_GROUPS,
    Reference,
    by_sex,
    has_reference,
    seed000_mass,
)
from myonode.measure.sarcopenia import SarcopeniaAssessment, awgs2019, ewgsop2
from myonode.measure.structures import (
    StructureMeasurements,
    is_axial,
    measure_structures,
    slice_areas_cm2,
)

DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class Comparison:
    """A measured value against a published reference distribution."""

    quantity: str
    value: float
    unit: str
    reference: Reference

    @property
    def z_score(self) -> float:
        return self.reference.z_score(self.value)

    @property
    def percentile(self) -> float:
        return self.reference.percentile(self.value)


@dataclass(frozen=True)
class Prior:
    """A structure's mass from an earlier study of the same patient."""

    study_uid: str
    study_date: dt.date
    structure: str
    mass_g: float


@dataclass(frozen=True)
class Change:
    structure: str
    prior: Prior
    change_g: float
    rate_g_per_year: float | None


@dataclass
class Assessment:
    patient: PatientFacts
    structures: list[StructureMeasurements]
    derived: list[DerivedValue]
    comparisons: list[Comparison]
    sarcopenia: list[SarcopeniaAssessment]
    changes: list[Change]
    notes: list[str] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    quality: QualityReport | None = None

    def published(self, item: StructureMeasurements) -> bool:
        """Whether a structure's values may be published: found, and not failed by QC."""
        return item.voxel_count > 0 and (
            self.quality is None or self.quality.verdict(item.structure.key) != "fail"
        )

    def value(self, key: str) -> float | None:
        for item in self.derived:
            if item.key == key:
                return item.value
        return None


def psoas_max_csa(label_map: LabelMap, volume: Volume) -> float | None:
    """Largest per-slice area of left + right psoas together (seed 003), cm²."""
    labels = [n for n, s in label_map.structures.items() if s.key in ("psoas_left", "psoas_right")]
    if len(labels) != 2 or not is_axial(volume.geometry):
        return None
    mask = label_map.mask_of(labels)
    return float(slice_areas_cm2(mask, volume.geometry).max()) if mask.any() else None


def seed000_region(label_map: LabelMap, volume: Volume) -> list[StructureMeasurements] | None:
    """Structures measured between lung base and inferior L5 only (seed 000's region), when
    the engine found both bounds; None otherwise."""
    top = label_map.landmarks.get("region_top_slice")
    bottom = label_map.landmarks.get("region_bottom_slice")
    if top is None or bottom is None:
        return None
    first, last = sorted((int(top), int(bottom)))
    inside = np.zeros(label_map.labels.shape[0], dtype=bool)
    inside[max(first, 0) : last + 1] = True
    labels = np.where(inside[:, np.newaxis, np.newaxis], label_map.labels, 0)
    return measure_structures(labels, label_map.structures, volume.geometry)


def compare(
    derived: Sequence[DerivedValue], facts: PatientFacts, region_complete: bool
) -> tuple[list[Comparison], list[str]]:
    """Reference comparisons the sex, age and coverage allow, and notes on those omitted."""
    values = {d.key: d for d in derived if d.value is not None}
    comparisons, notes = [], []
    if facts.sex is None:
        if values:
            notes.append(f"No reference comparison: {facts.missing.get('sex', 'sex unknown')}.")
        return comparisons, notes
    volumetric_seed000 = [k for k in ("abdominal_muscle_mass",) if k in values]
    if volumetric_seed000 or any(f"{g}_mass" in values for g in SEED000_GROUPS[1:]):
        if not region_complete:
            notes.append(
                "No seed 000 mass reference: the lung-base-to-L5 region is not completely in "
                "the image, so masses are not comparable with Table 3."
            )
        else:
            if facts.age_years is None:
                notes.append("Seed 000 masses compared with all ages of the sex: age unknown.")
            for group in SEED000_GROUPS:
                key = "abdominal_muscle_mass" if group == "total" else f"{group}_mass"
                if key in values:
                    reference = seed000_mass(facts.sex, facts.age_years, group)
                    comparisons.append(Comparison(key, values[key].value, "g", reference))
    for key in ("iliopsoas_volume", "imi", "tmv", "pa_ratio", "gluteus_volume"):
        if key in values and has_reference(key):
            if not region_complete and key in ("iliopsoas_volume", "tmv", "gluteus_volume"):
                notes.append(f"No reference for {values[key].name}: coverage not complete.")
                continue
            comparisons.append(
                Comparison(key, values[key].value, values[key].unit, by_sex(key, facts.sex))
            )
    if "psoas_max_csa" in values:
        comparisons.append(
            Comparison(
                "psoas_max_csa",
                values["psoas_max_csa"].value,
                "cm2",
                by_sex("psoas_max_csa", facts.sex),
            )
        )
    return comparisons, notes


def changes_since(
    structures: Sequence[StructureMeasurements], study_date: dt.date | None, priors: Sequence[Prior]
) -> list[Change]:
    """Mass change per structure against the most recent earlier study that measured it."""
    if study_date is None:
        return []
    found = []
    for item in structures:
        earlier = [
            p for p in priors if p.structure == item.structure.key and p.study_date < study_date
        ]
        if not earlier:
            continue
        prior = max(earlier, key=lambda p: p.study_date)
        change = item.mass_g - prior.mass_g
        years = (study_date - prior.study_date).days / DAYS_PER_YEAR
        found.append(Change(item.structure.key, prior, change, change / years if years else None))
    return found


def assess(
    volume: Volume,
    label_map: LabelMap,
    modality: str,
    facts: PatientFacts,
    priors: Sequence[Prior] = (),
    predicted: Mapping[str, float | None] | None = None,
    quality: QualityReport | None = None,
) -> Assessment:
    """Measure a segmented volume and derive everything the report states.

    With `quality` (the QC stage's verdicts), indices, reference comparisons, change since
    prior and sarcopenia criteria use only structures that passed; the others are "not
    evaluable: QC". Without it (QC not run, e.g. a formula's unit test) nothing is withheld.
    """
    l3 = label_map.landmarks.get("l3_slice")
    l3_doubt = quality.doubtful_landmarks.get("l3_slice") if quality is not None else None
    if l3_doubt:
        l3 = None
    structures = measure_structures(
        label_map.labels,
        label_map.structures,
        volume.geometry,
        attenuation=volume.array if modality == "CT" else None,
        water=volume.array if "fat" in volume.channels else None,
        fat=volume.channels.get("fat"),
        l3_slice=int(l3) if l3 is not None else None,
    )
    withheld = {
        m.structure.key: quality.verdict(m.structure.key)
        for m in structures
        if quality is not None and m.voxel_count and not quality.passed(m.structure.key)
    }
    derived = derived_values(
        structures,
        facts,
        psoas_max_csa(label_map, volume),
        seed000_region(label_map, volume),
        withheld,
    )
    if quality is not None:
        derived = [
            DerivedValue(d.key, d.name, d.unit, None, f"not evaluable: QC ({why})")
            if d.value is not None and (why := quality.withheld_indices.get(d.key))
            else d
            for d in derived
        ]
    region_complete = bool(label_map.landmarks.get("region_complete"))
    comparisons, notes = compare(derived, facts, region_complete)
    smi = next((d for d in derived if d.key == "l3_smi"), None)
    inputs = {
        "height_m": facts.height_m,
        "age_years": facts.age_years,
        "l3_smi": smi.value if smi is not None else None,
        **(predicted or {}),
    }
    qc_missing = (
        {"l3_smi": smi.omitted.removeprefix("not evaluable: ")}
        if smi is not None and smi.omitted and smi.omitted.startswith("not evaluable: QC")
        else {"l3_smi": f"QC ({l3_doubt})"}
        if l3_doubt
        else None
    )
    sarcopenia = [ewgsop2(facts.sex, inputs, qc_missing), awgs2019(facts.sex, inputs)]
    omitted = [f"{d.name} omitted: {d.omitted}." for d in derived if d.value is None and d.omitted]
    usable = [m for m in structures if m.structure.key not in withheld]
    return Assessment(
        patient=facts,
        structures=structures,
        derived=derived,
        comparisons=comparisons,
        sarcopenia=sarcopenia,
        changes=changes_since(usable, facts.study_date, priors),
        notes=[*label_map.notes, *(quality.notes if quality else []), *omitted, *notes],
        quality=quality,
    )


def assess_predictions(
    facts: PatientFacts, predictions: Sequence[Prediction], notes: Sequence[str] = ()
) -> Assessment:
    """The assessment of an image nothing was segmented on (a radiograph): the patient's
    values, the model's predictions and the sarcopenia criteria from the predicted inputs."""
    inputs = criterion_inputs(list(predictions), facts)
    return Assessment(
        patient=facts,
        structures=[],
        derived=patient_values(facts),
        comparisons=[],
        sarcopenia=[ewgsop2(facts.sex, inputs), awgs2019(facts.sex, inputs)],
        changes=[],
        notes=list(notes),
        predictions=list(predictions),
    )
