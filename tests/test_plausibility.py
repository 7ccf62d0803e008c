"""Header values outside what a body or a scanner can produce are not used: an implausible
age is a missing age (with the reason), and a CT series whose rescale would make its HU
meaningless is not routed, with the reason recorded."""

from __future__ import annotations

import pydicom
import pytest

from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.core.patient import patient_facts
from myonode.pipelines import pipeline_versions
from myonode.route import folder_studies, route_rows
from myonode.route.profiles import configured_pipelines, load_profiles


@pytest.mark.parametrize(
    "header",
    [
        {"PatientAge": "999Y"},
        {"PatientBirthDate": "17990101", "StudyDate": "20260115"},
    ],
)
def test_an_implausible_age_is_missing_with_the_reason(header):
    facts = patient_facts(header)
    assert facts.age_years is None
    assert "not plausible" in facts.missing["age"]


def test_a_plausible_age_is_kept():
    assert patient_facts({"PatientAge": "058Y"}).age_years == 58


def route_ct(tmp_path, **attributes) -> list:
    array, geometry = abdomen_phantom(shape=(8, 48, 48), pixel_mm=6.0, slice_mm=6.0)
    paths = write_ct_series(array, geometry, tmp_path / "ct", seed="plausibility")
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    profiles = load_profiles()
    [(study_uid, rows)] = folder_studies(tmp_path / "ct").items()
    routing = route_rows(
        study_uid, rows, profiles, pipeline_versions(configured_pipelines(profiles))
    )
    return routing.decisions


@pytest.mark.parametrize(
    ("slope", "intercept", "reason"),
    [
        (1e6, -1024, "implausible RescaleSlope 1e+06"),
        (0, -1024, "implausible RescaleSlope 0"),
        (1, -1e7, "implausible RescaleIntercept -1e+07"),
    ],
)
def test_a_ct_with_an_implausible_rescale_is_not_routed(tmp_path, slope, intercept, reason):
    decisions = route_ct(tmp_path, RescaleSlope=slope, RescaleIntercept=intercept)
    assert decisions and not any(d.selected for d in decisions)
    assert all(reason in d.reason for d in decisions), [d.reason for d in decisions]


def test_a_ct_with_the_usual_rescale_is_routed(tmp_path):
    decisions = route_ct(tmp_path, RescaleSlope=1, RescaleIntercept=-1024)
    assert any(d.selected for d in decisions), [d.reason for d in decisions]
