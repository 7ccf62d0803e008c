"""Derived indices: sums, ratios and height-normalised indices from structure measurements.

Each index is computed only when its inputs exist; otherwise it is kept with ``value=None``
and the reason, so the report can say what was omitted and why (clinical.md).

- IMI = total iliopsoas volume / height², mL/m² (seed 001).
- L3 SMI = total skeletal-muscle CSA on the L3 slice / height², cm²/m² (Prado 2008).
- TMV = total thigh muscle volume, cm³; TVI = TMV / height², cm³/m² (seed 002; the paper's
  printed TVI unit is inconsistent, see references.py); P/A = posterior / anterior thigh
  compartment volume (seed 002).
- L−R difference = left − right volume (seed 001); asymmetry = |L − R| / mean(L, R), in % (seed
  002 reports a median of 3.1 %).
- Psoas max CSA = the largest axial area of left + right psoas together (seed 003 sums both
  sides; we take the maximum of the per-slice sum, so both sides come from the same level).

An index whose inputs include a structure that did not pass quality control (`withheld`:
key -> verdict) is kept with ``value=None`` and "not evaluable: QC (...)", never computed
from a doubtful value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from myonode.core.patient import PatientFacts
from myonode.measure.references import SEED000_GROUPS
from myonode.measure.structures import StructureMeasurements


@dataclass(frozen=True)
class DerivedValue:
    key: str
    name: str
    unit: str  # UCUM
    value: float | None
    omitted: str | None = None


def _omit(key: str, name: str, unit: str, reason: str) -> DerivedValue:
    return DerivedValue(key, name, unit, None, reason)


def _per_height2(
    key: str, name: str, unit: str, value: float | None, facts: PatientFacts, missing_value: str
) -> DerivedValue:
    if value is None:
        return _omit(key, name, unit, missing_value)
    if facts.height_m is None:
        return _omit(key, name, unit, facts.missing.get("height", "height unknown"))
    return DerivedValue(key, name, unit, value / facts.height_m**2)


def patient_values(facts: PatientFacts) -> list[DerivedValue]:
    values = []
    for key, name, unit, value in (
        ("height", "Body height", "m", facts.height_m),
        ("weight", "Body weight", "kg", facts.weight_kg),
        ("age", "Age", "a", facts.age_years),
    ):
        if value is None:
            values.append(_omit(key, name, unit, facts.missing.get(key, f"{key} unknown")))
        else:
            values.append(DerivedValue(key, name, unit, value))
    if facts.bmi is None:
        reason = "; ".join(facts.missing[k] for k in ("height", "weight") if k in facts.missing)
        values.append(_omit("bmi", "Body mass index", "kg/m2", reason))
    else:
        values.append(DerivedValue("bmi", "Body mass index", "kg/m2", facts.bmi))
    return values


def _sum(
    measured: Mapping[str, StructureMeasurements],
    keys: Sequence[str],
    attribute: str = "volume_cm3",
) -> float | None:
    """Sum an attribute over structures; None unless every one was segmented."""
    if not all(k in measured for k in keys):
        return None
    return sum(getattr(measured[k], attribute) for k in keys)


def _sided(base: str) -> tuple[str, str]:
    return f"{base}_left", f"{base}_right"


def qc_blocked(keys: Sequence[str], withheld: Mapping[str, str]) -> str | None:
    """Why an index over `keys` is not evaluable because of QC, or None if it is."""
    blocked = [f"{key.replace('_', ' ')} {withheld[key]}" for key in keys if key in withheld]
    return f"not evaluable: QC ({', '.join(blocked)})" if blocked else None


def derived_values(
    structures: Sequence[StructureMeasurements],
    facts: PatientFacts,
    psoas_max_csa_cm2: float | None = None,
    in_region: Sequence[StructureMeasurements] | None = None,
    withheld: Mapping[str, str] | None = None,
) -> list[DerivedValue]:
    """Every index the segmented structures and the patient facts allow (or why not).

    `in_region` are the same structures measured only between the lung base and inferior L5,
    the region seed 000's masses are defined on; group masses use them when given.
    `withheld` maps the keys of structures that did not pass QC to their verdict.
    """
    withheld = withheld or {}
    measured = {m.structure.key: m for m in structures}
    values = patient_values(facts)

    def add(key: str, name: str, unit: str, value: float | None, inputs: Sequence[str]) -> None:
        blocked = qc_blocked(inputs, withheld)
        values.append(
            _omit(key, name, unit, blocked) if blocked else DerivedValue(key, name, unit, value)
        )

    seed000_keys = [k for g in SEED000_GROUPS[1:] for k in _sided(g)]
    regional = {m.structure.key: m for m in in_region} if in_region is not None else measured
    if all(k in regional for k in seed000_keys):
        for group in SEED000_GROUPS[1:]:
            mass = _sum(regional, _sided(group), "mass_g")
            add(f"{group}_mass", f"{group.replace('_', ' ')} mass", "g", mass, _sided(group))
        add(
            "abdominal_muscle_mass",
            "Abdominal muscle mass (12 groups)",
            "g",
            _sum(regional, seed000_keys, "mass_g"),
            seed000_keys,
        )

    muscles = [m for m in structures if m.structure.muscle]
    at_l3 = [m.area_at_l3_cm2 for m in muscles if m.area_at_l3_cm2 is not None]
    if muscles:
        l3_csa = sum(at_l3) if at_l3 else None
        reason = "L3 level not found in the image"
        blocked = qc_blocked([m.structure.key for m in muscles if m.area_at_l3_cm2], withheld)
        if blocked:
            l3_csa, reason = None, blocked
        if l3_csa is None:
            values.append(_omit("l3_csa", "Skeletal muscle CSA at L3", "cm2", reason))
        else:
            values.append(DerivedValue("l3_csa", "Skeletal muscle CSA at L3", "cm2", l3_csa))
        values.append(
            _per_height2("l3_smi", "L3 skeletal muscle index", "cm2/m2", l3_csa, facts, reason)
        )

    iliopsoas = _sum(measured, _sided("iliopsoas"))
    if iliopsoas is not None:
        add("iliopsoas_volume", "Iliopsoas volume (L+R)", "mL", iliopsoas, _sided("iliopsoas"))
        blocked = qc_blocked(_sided("iliopsoas"), withheld)
        values.append(
            _per_height2(
                "imi",
                "Iliopsoas muscle index",
                "mL/m2",
                None if blocked else iliopsoas,
                facts,
                blocked or "",
            )
        )

    tmv = _sum(measured, _sided("thigh_muscles"))
    compartments = [_sided(f"thigh_{c}") for c in ("anterior", "medial", "posterior")]
    if tmv is None:
        tmv = _sum(measured, [k for pair in compartments for k in pair])
    thigh_keys = [k for k in (*_sided("thigh_muscles"), *sum(compartments, ())) if k in measured]
    if tmv is not None:
        add("tmv", "Thigh muscle volume (L+R)", "cm3", tmv, thigh_keys)
        blocked = qc_blocked(thigh_keys, withheld)
        values.append(
            _per_height2(
                "tvi",
                "Thigh muscle volume index",
                "cm3/m2",
                None if blocked else tmv,
                facts,
                blocked or "",
            )
        )
    anterior, posterior = _sum(measured, compartments[0]), _sum(measured, compartments[2])
    if anterior and posterior is not None:
        add(
            "pa_ratio",
            "Posterior/anterior thigh ratio",
            "1",
            posterior / anterior,
            [*compartments[0], *compartments[2]],
        )

    gluteal = [
        k for g in ("gluteus_maximus", "gluteus_medius", "gluteus_minimus") for k in _sided(g)
    ]
    gluteus = _sum(measured, gluteal)
    if gluteus is not None:
        add("gluteus_volume", "Gluteus volume (max+med+min, L+R)", "cm3", gluteus, gluteal)

    if psoas_max_csa_cm2 is not None:
        add("psoas_max_csa", "Psoas max CSA (L+R)", "cm2", psoas_max_csa_cm2, _sided("psoas"))

    for key in sorted({m.structure.key.rsplit("_", 1)[0] for m in structures if m.structure.side}):
        left, right = (measured.get(k) for k in _sided(key))
        if left is None or right is None:
            continue
        name = key.replace("_", " ")
        blocked = qc_blocked(_sided(key), withheld)
        if left.voxel_count == 0 or right.voxel_count == 0 or blocked:
            missing = left.voxel_count == 0 or right.voxel_count == 0
            reason = "one side was not found" if missing else str(blocked)
            values.append(_omit(f"{key}_lr_difference", f"{name} L−R difference", "cm3", reason))
            values.append(_omit(f"{key}_asymmetry", f"{name} asymmetry", "%", reason))
            continue
        difference = left.volume_cm3 - right.volume_cm3
        mean = (left.volume_cm3 + right.volume_cm3) / 2
        values.append(
            DerivedValue(f"{key}_lr_difference", f"{name} L−R difference", "cm3", difference)
        )
        values.append(
            DerivedValue(
                f"{key}_asymmetry", f"{name} asymmetry", "%", 100.0 * abs(difference) / mean
            )
        )
    return values
