import datetime as dt

import pytest

from myonode.core.patient import patient_facts


def test_complete_header():
    facts = patient_facts(
        {
            "PatientSex": "F",
            "PatientAge": "063Y",
            "PatientSize": "1.65",
            "PatientWeight": "68",
            "StudyDate": "20260115",
        }
    )
    assert (facts.sex, facts.age_years, facts.height_m, facts.weight_kg) == ("F", 63, 1.65, 68)
    assert facts.bmi == pytest.approx(68 / 1.65**2)
    assert facts.study_date == dt.date(2026, 1, 15)
    assert facts.missing == {}


def test_age_from_birth_date_and_months():
    facts = patient_facts({"PatientBirthDate": "19600115", "StudyDate": "20260115"})
    assert facts.age_years == pytest.approx(66, abs=0.01)
    assert patient_facts({"PatientAge": "018M"}).age_years == pytest.approx(1.5)


def test_missing_and_implausible_values_are_explained_not_guessed():
    facts = patient_facts({"PatientSex": "O", "PatientSize": "170", "PatientWeight": "0"})
    assert facts.sex is None and facts.height_m is None and facts.weight_kg is None
    assert "'O'" in facts.missing["sex"]
    assert "170" in facts.missing["height"] and "metres" in facts.missing["height"]
    assert "absent" in facts.missing["weight"]
    assert "age" in facts.missing and facts.bmi is None
