"""Sarcopenia criteria (EWGSOP2, AWGS 2019) evaluated from what the images and header give.

Images give muscle quantity; strength and physical performance are usually not in DICOM. A
trained CXR model (seed 004) can *predict* grip strength, chair-rise time and appendicular lean
mass; such predicted inputs are used only when present and are labelled as predictions. Every
criterion states whether it could be evaluated and, if not, which input was missing.

Cut-offs:
- EWGSOP2 (Cruz-Jentoft 2019; as in seed 002): grip < 27 kg (men) / < 16 kg (women); ALMI
  < 7.0 / < 5.5 kg/m². Probable sarcopenia = low strength; confirmed = plus low quantity.
- AWGS 2019 (Chen 2020; as in seed 004): grip < 28 / < 18 kg or 5-times chair stand ≥ 12 s;
  ALMI < 7.0 / < 5.7 kg/m². Sarcopenia = low function and low mass.
- CT L3 skeletal muscle index < 52.4 (men) / < 38.5 (women) cm²/m² (Prado 2008) as a CT proxy
  for low muscle quantity; EWGSOP2 accepts CT/MRI for quantity but sets no CT cut-off.

All of these cut-offs were set in adults (EWGSOP2, AWGS 2019, SARC-CXR's cohorts of mean age
61 and 72): for a patient known to be under 18 both guidelines are not evaluable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Conclusion = Literal["present", "absent", "probable", "possible", "not evaluable"]

EWGSOP2_GRIP = {"M": 27.0, "F": 16.0}
EWGSOP2_ALMI = {"M": 7.0, "F": 5.5}
AWGS_GRIP = {"M": 28.0, "F": 18.0}
AWGS_CHAIR_RISE_S = 12.0
AWGS_ALMI = {"M": 7.0, "F": 5.7}
PRADO_L3_SMI = {"M": 52.4, "F": 38.5}
ADULT_AGE_YEARS = 18


@dataclass(frozen=True)
class Criterion:
    name: str
    evaluable: bool
    met: bool | None
    detail: str


@dataclass(frozen=True)
class SarcopeniaAssessment:
    guideline: str
    conclusion: Conclusion
    criteria: tuple[Criterion, ...]

    def statement(self) -> str:
        parts = "; ".join(f"{c.name}: {c.detail}" for c in self.criteria)
        return f"{self.guideline}: {self.conclusion}. {parts}"


def _below(
    name: str,
    value: float | None,
    cut: dict[str, float],
    sex: str | None,
    unit: str,
    missing: str,
    predicted: bool = False,
    sd: float | None = None,
) -> Criterion:
    if sex is None:
        return Criterion(name, False, None, "not evaluable: sex unknown")
    return _criterion(name, value, cut[sex], unit, missing, predicted, sd)


def _criterion(
    name: str,
    value: float | None,
    cut: float,
    unit: str,
    missing: str,
    predicted: bool = False,
    sd: float | None = None,
    met_at_or_above: bool = False,
) -> Criterion:
    """Whether `value` is below `cut` (at or above it with `met_at_or_above`).

    A predicted value whose standard deviation reaches across the cut-off is not evaluable:
    the model cannot tell the side, and the mean alone would read as a confident answer.
    """
    if value is None:
        return Criterion(name, False, None, f"not evaluable: {missing}")
    source = "predicted " if predicted else ""
    spread = f" ± {sd:.1f}" if sd is not None else ""
    if sd is not None and abs(value - cut) < sd:
        detail = f"not evaluable: {source}{value:.1f}{spread} {unit} spans the cut-off {cut:g}"
        return Criterion(name, False, None, detail)
    met = value >= cut if met_at_or_above else value < cut
    relation = "≥" if value >= cut else "<"
    return Criterion(name, True, met, f"{source}{value:.1f}{spread} {unit} {relation} {cut:g}")


def almi(
    alm_kg: float | None, height_m: float | None, alm_sd: float | None = None
) -> tuple[float | None, float | None]:
    """ALMI = ALM / height² and, for a predicted ALM, its SD (the height taken as exact);
    (None, None) without ALM or height."""
    if alm_kg is None or not height_m:
        return None, None
    return alm_kg / height_m**2, None if alm_sd is None else alm_sd / height_m**2


def _almi(inputs: Mapping[str, float | None]) -> tuple[float | None, float | None]:
    return almi(inputs.get("alm_kg"), inputs.get("height_m"), inputs.get("alm_kg_sd"))


def _minor(guideline: str, inputs: Mapping[str, float | None]) -> SarcopeniaAssessment | None:
    """Not evaluable for a patient known to be a minor (`age_years` < 18), else None."""
    age = inputs.get("age_years")
    if age is None or age >= ADULT_AGE_YEARS:
        return None
    detail = f"not evaluable: the patient is {age:.0f} years old; the cut-offs are for adults"
    return SarcopeniaAssessment(
        guideline, "not evaluable", (Criterion("adult patient", False, None, detail),)
    )


def ewgsop2(
    sex: str | None,
    inputs: Mapping[str, float | None],
    why_missing: Mapping[str, str] | None = None,
) -> SarcopeniaAssessment:
    """EWGSOP2 from `inputs`: grip_kg, alm_kg, height_m (predicted ones flagged by
    ``predicted=1``), l3_smi (cm²/m²), age_years. `why_missing` overrides the reason an
    absent input is given (e.g. an L3 SMI withheld by quality control)."""
    if minor := _minor("EWGSOP2", inputs):
        return minor
    predicted = bool(inputs.get("predicted"))
    almi_value, almi_sd = _almi(inputs)
    strength = _below(
        "low grip strength",
        inputs.get("grip_kg"),
        EWGSOP2_GRIP,
        sex,
        "kg",
        "grip strength is not in the images or header",
        predicted,
        inputs.get("grip_kg_sd"),
    )
    almi = _below(
        "low ALMI",
        almi_value,
        EWGSOP2_ALMI,
        sex,
        "kg/m²",
        "appendicular lean mass (or height) not available",
        predicted,
        almi_sd,
    )
    smi = _below(
        "low L3 SMI (CT proxy, Prado 2008)",
        inputs.get("l3_smi"),
        PRADO_L3_SMI,
        sex,
        "cm²/m²",
        (why_missing or {}).get("l3_smi", "L3 level, total muscle at L3 or height not available"),
    )
    quantity = [c for c in (almi, smi) if c.evaluable]
    low_quantity = any(c.met for c in quantity) if quantity else None
    if not strength.evaluable:
        conclusion: Conclusion = "not evaluable"
    elif not strength.met:
        conclusion = "absent"
    elif low_quantity:
        conclusion = "present"
    else:
        conclusion = "probable"
    return SarcopeniaAssessment("EWGSOP2", conclusion, (strength, almi, smi))


def awgs2019(sex: str | None, inputs: Mapping[str, float | None]) -> SarcopeniaAssessment:
    """AWGS 2019 from `inputs`: grip_kg, chair_rise_s, alm_kg, height_m, age_years."""
    if minor := _minor("AWGS 2019", inputs):
        return minor
    predicted = bool(inputs.get("predicted"))
    almi_value, almi_sd = _almi(inputs)
    grip = _below(
        "low handgrip",
        inputs.get("grip_kg"),
        AWGS_GRIP,
        sex,
        "kg",
        "grip strength is not in the images or header",
        predicted,
        inputs.get("grip_kg_sd"),
    )
    rise = _criterion(
        "slow chair rise",
        inputs.get("chair_rise_s"),
        AWGS_CHAIR_RISE_S,
        "s",
        "chair-rise time absent",
        predicted,
        inputs.get("chair_rise_s_sd"),
        met_at_or_above=True,
    )
    mass = _below(
        "low ALMI",
        almi_value,
        AWGS_ALMI,
        sex,
        "kg/m²",
        "appendicular lean mass (or height) not available",
        predicted,
        almi_sd,
    )
    function = [c for c in (grip, rise) if c.evaluable]
    low_function = any(c.met for c in function) if function else None
    if low_function is None:
        conclusion: Conclusion = "not evaluable"
    elif low_function and not mass.evaluable:
        conclusion = "possible"  # AWGS 2019 "possible sarcopenia": low function, mass unknown
    elif not low_function or not mass.met:
        conclusion = "absent"
    else:
        conclusion = "present"
    return SarcopeniaAssessment("AWGS 2019", conclusion, (grip, rise, mass))
