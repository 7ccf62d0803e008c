"""Derived indices, reference comparisons and change since prior, hand-computed."""

import datetime as dt

import numpy as np
import pytest

from myonode.core.patient import PatientFacts, patient_facts
from myonode.core.types import LabelMap
from myonode.core.volume import Geometry, Volume
from myonode.dicom import anatomy
from myonode.measure.assessment import Prior, assess, changes_since, compare
from myonode.measure.indices import derived_values
from myonode.measure.references import seed000_mass
from myonode.measure.structures import StructureMeasurements

FACTS = PatientFacts("F", 65.0, 1.60, 64.0, dt.date(2026, 1, 15))


def structure(key: str, volume: float, l3_area: float | None = None) -> StructureMeasurements:
    return StructureMeasurements(
        anatomy.STRUCTURES[key], 1, int(volume), volume, volume * 1.06, area_at_l3_cm2=l3_area
    )


def values(items) -> dict:
    return {d.key: d for d in items}


def test_iliopsoas_index_and_asymmetry():
    measured = [structure("iliopsoas_left", 260.0), structure("iliopsoas_right", 280.0)]
    derived = values(derived_values(measured, FACTS))
    assert derived["iliopsoas_volume"].value == pytest.approx(540.0)
    assert derived["imi"].value == pytest.approx(540.0 / 1.6**2)
    assert derived["iliopsoas_lr_difference"].value == pytest.approx(-20.0)  # left - right
    assert derived["iliopsoas_asymmetry"].value == pytest.approx(100 * 20 / 270)
    assert derived["bmi"].value == pytest.approx(25.0)


def test_thigh_tmv_tvi_and_pa_ratio():
    measured = [
        structure(f"thigh_{c}_{s}", v)
        for c, v in (("anterior", 2000.0), ("medial", 1200.0), ("posterior", 900.0))
        for s in ("left", "right")
    ]
    derived = values(derived_values(measured, FACTS))
    assert derived["tmv"].value == pytest.approx(2 * 4100.0)
    assert derived["tvi"].value == pytest.approx(8200.0 / 1.6**2)
    assert derived["pa_ratio"].value == pytest.approx(900 / 2000)


def test_l3_smi_and_omissions_say_why():
    measured = [structure("psoas_left", 100.0, 8.0), structure("erector_spinae_left", 300.0, 22.0)]
    derived = values(derived_values(measured, FACTS))
    assert derived["l3_csa"].value == pytest.approx(30.0)
    assert derived["l3_smi"].value == pytest.approx(30.0 / 1.6**2)
    no_height = patient_facts({"PatientSex": "F", "PatientAge": "065Y"})
    derived = values(derived_values(measured, no_height))
    assert derived["l3_smi"].value is None and "PatientSize" in derived["l3_smi"].omitted
    assert derived["bmi"].value is None and "PatientWeight" in derived["bmi"].omitted
    no_l3 = values(derived_values([structure("psoas_left", 100.0)], FACTS))
    assert no_l3["l3_smi"].value is None and "L3" in no_l3["l3_smi"].omitted


def test_seed000_groups_compared_only_with_complete_region():
    measured = [structure(s.key, 100.0) for s in anatomy.SEED000_GROUPS]
    derived = derived_values(measured, FACTS)
    assert values(derived)["abdominal_muscle_mass"].value == pytest.approx(12 * 106.0)
    comparisons, notes = compare(derived, FACTS, region_complete=True)
    psoas = next(c for c in comparisons if c.quantity == "psoas_mass")
    reference = seed000_mass("F", 65, "psoas")
    assert psoas.value == pytest.approx(212.0)
    assert psoas.z_score == pytest.approx((212.0 - reference.mean) / reference.sd)
    comparisons, notes = compare(derived, FACTS, region_complete=False)
    assert comparisons == [] and "not completely in the image" in notes[0]
    comparisons, notes = compare(
        derived, PatientFacts(missing={"sex": "PatientSex is absent"}), True
    )
    assert comparisons == [] and "PatientSex is absent" in notes[0]


def test_change_since_most_recent_prior():
    current = [structure("psoas_left", 100.0)]  # 106 g
    priors = [
        Prior("1.2.1", dt.date(2024, 1, 15), "psoas_left", 120.0),
        Prior("1.2.2", dt.date(2025, 1, 15), "psoas_left", 112.0),
        Prior("1.2.3", dt.date(2027, 1, 1), "psoas_left", 1.0),  # later: ignored
    ]
    [change] = changes_since(current, dt.date(2026, 1, 15), priors)
    assert change.prior.study_uid == "1.2.2"
    assert change.change_g == pytest.approx(-6.0)
    assert change.rate_g_per_year == pytest.approx(-6.0 / (365 / 365.25))


def test_assess_end_to_end_on_a_small_label_map():
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[:, 2:4, 2:4] = 1
    labels[:, 2:4, 5:7] = 2
    geometry = Geometry(np.zeros(3), np.eye(3), np.array([10.0, 10.0, 10.0]))
    volume = Volume(np.full(labels.shape, 45.0, np.float32), geometry)
    label_map = LabelMap(
        labels, {1: anatomy.PSOAS[0], 2: anatomy.PSOAS[1]}, landmarks={"l3_slice": 2}
    )
    result = assess(volume, label_map, "CT", FACTS)
    assert [s.volume_cm3 for s in result.structures] == [16.0, 16.0]
    assert result.value("psoas_max_csa") == pytest.approx(8.0)  # 8 voxels x 1 cm2 on one slice
    assert result.value("l3_smi") == pytest.approx(8.0 / 1.6**2)
    assert (
        next(c for c in result.comparisons if c.quantity == "psoas_max_csa").reference.mean == 24.47
    )
    assert result.structures[0].attenuation.mean == pytest.approx(45.0)


def test_seed000_masses_only_between_lung_base_and_l5():
    labels = np.zeros((10, 4, 4 * len(anatomy.SEED000_GROUPS)), np.uint8)
    structures = {}
    for n, item in enumerate(anatomy.SEED000_GROUPS, start=1):
        labels[:, :, 4 * (n - 1) : 4 * n] = n  # every group fills all 10 slices
        structures[n] = item
    geometry = Geometry(np.zeros(3), np.eye(3), np.array([10.0, 10.0, 10.0]))
    volume = Volume(np.zeros(labels.shape, np.float32), geometry)
    landmarks = {"region_top_slice": 7, "region_bottom_slice": 2, "region_complete": 1}
    result = assess(volume, LabelMap(labels, structures, landmarks=landmarks), "CT", FACTS)
    per_slice_g = 16 * 1.0 * 1.06  # 16 voxels of 1 cm3 per group and slice
    assert result.value("psoas_mass") == pytest.approx(2 * 6 * per_slice_g)  # slices 2..7
    assert result.structures[0].mass_g == pytest.approx(10 * per_slice_g)  # whole structure
    assert result.value("abdominal_muscle_mass") == pytest.approx(12 * 6 * per_slice_g)
