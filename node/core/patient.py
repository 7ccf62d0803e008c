"""Patient facts from the DICOM header, each with the reason when it cannot be used.

Height (PatientSize, metres), weight (PatientWeight, kg) and age are often missing or wrong in
real headers; an implausible value is treated as missing (and said so), never silently converted,
because a height entered in centimetres and "fixed" by guessing would change every index.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

AGE_RANGE_YEARS = (0.0, 125.0)
HEIGHT_RANGE_M = (0.5, 2.5)
WEIGHT_RANGE_KG = (2.0, 400.0)
_AGE = re.compile(r"^(\d{3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


@dataclass(frozen=True)
class PatientFacts:
    """Sex ("M"/"F"), age in years, height (m), weight (kg), and why any is missing."""

    sex: str | None = None
    age_years: float | None = None
    height_m: float | None = None
    weight_kg: float | None = None
    study_date: dt.date | None = None
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def bmi(self) -> float | None:
        if self.height_m is None or self.weight_kg is None:
            return None
        return self.weight_kg / self.height_m**2


def _date(value: Any) -> dt.date | None:
    text = str(value or "").strip()
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def patient_facts(header: Mapping[str, Any]) -> PatientFacts:
    """Read facts from a mapping of DICOM keywords (a pydicom Dataset works too)."""

    def get(keyword: str) -> Any:
        value = header.get(keyword) if hasattr(header, "get") else None
        return getattr(value, "value", value)

    missing: dict[str, str] = {}
    sex = str(get("PatientSex") or "").strip().upper()
    if sex not in ("M", "F"):
        missing["sex"] = f"PatientSex is {sex!r}" if sex else "PatientSex is absent"
        sex = None

    study_date = _date(get("StudyDate"))
    age = None
    age_text = str(get("PatientAge") or "").strip()
    match = _AGE.match(age_text)
    if match:
        age = int(match[1]) * _AGE_UNIT_YEARS[match[2]]
    else:
        birth = _date(get("PatientBirthDate"))
        if birth and study_date and birth <= study_date:
            age = (study_date - birth).days / 365.25
        else:
            missing["age"] = "neither PatientAge nor PatientBirthDate with StudyDate is usable"
    if age is not None and not AGE_RANGE_YEARS[0] <= age <= AGE_RANGE_YEARS[1]:
        missing["age"] = (
            f"an age of {age:.0f} years (PatientAge {age_text or 'from dates'}) is not plausible"
        )
        age = None

    height = _number(get("PatientSize"))
    if height is None:
        missing["height"] = "PatientSize (height) is absent"
    elif not HEIGHT_RANGE_M[0] <= height <= HEIGHT_RANGE_M[1]:
        missing["height"] = f"PatientSize {height:g} is not a plausible height in metres"
        height = None

    weight = _number(get("PatientWeight"))
    if weight is None:
        missing["weight"] = "PatientWeight is absent"
    elif not WEIGHT_RANGE_KG[0] <= weight <= WEIGHT_RANGE_KG[1]:
        missing["weight"] = f"PatientWeight {weight:g} is not a plausible weight in kg"
        weight = None

    return PatientFacts(sex, age, height, weight, study_date, missing)
