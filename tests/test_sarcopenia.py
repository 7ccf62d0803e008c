from myonode.measure.sarcopenia import awgs2019, ewgsop2


def test_imaging_only_inputs_leave_strength_unevaluable():
    result = ewgsop2("M", {"height_m": 1.8, "l3_smi": 45.0})
    assert result.conclusion == "not evaluable"
    strength, almi, smi = result.criteria
    assert not strength.evaluable and "grip" in strength.detail
    assert smi.evaluable and smi.met  # 45 < 52.4 (Prado, men)
    assert not almi.evaluable


def test_ewgsop2_confirmed_probable_absent():
    low = {"grip_kg": 20.0, "alm_kg": 15.0, "height_m": 1.6, "predicted": 1}  # ALMI 5.86
    assert ewgsop2("F", low).conclusion == "absent"  # grip 20 >= 16 for women
    assert ewgsop2("M", low).conclusion == "present"  # grip < 27, ALMI < 7.0
    assert ewgsop2("M", {**low, "alm_kg": 25.0}).conclusion == "probable"  # ALMI 9.8
    assert "predicted" in ewgsop2("M", low).criteria[0].detail


def test_awgs2019_function_or_mass_missing():
    assert awgs2019("F", {}).conclusion == "not evaluable"
    assert awgs2019("F", {"chair_rise_s": 13.0}).conclusion == "possible"
    inputs = {"chair_rise_s": 13.0, "alm_kg": 14.0, "height_m": 1.6}  # ALMI 5.47 < 5.7
    assert awgs2019("F", inputs).conclusion == "present"
    assert awgs2019("F", {**inputs, "chair_rise_s": 9.0, "grip_kg": 25.0}).conclusion == "absent"
    assert awgs2019(None, inputs).criteria[0].detail.endswith("sex unknown")


def test_minors_are_not_evaluable_whatever_their_values():
    low = {"grip_kg": 5.0, "alm_kg": 8.0, "height_m": 1.3, "chair_rise_s": 20.0}
    for assess in (ewgsop2, awgs2019):
        child = assess("F", {**low, "age_years": 9})
        assert child.conclusion == "not evaluable"
        assert "9 years old" in child.statement()
        assert assess("F", {**low, "age_years": 18}).conclusion == "present"
        assert assess("F", low).conclusion == "present"  # age unknown: evaluated


def test_a_prediction_whose_sd_spans_the_cut_off_is_not_evaluable():
    """Predicted grip 17 ± 3 kg against the women's EWGSOP2 cut-off 16 kg could be either
    side: no conclusion. 25 ± 3 kg is clearly above it."""
    base = {"predicted": 1, "alm_kg": 20.0, "alm_kg_sd": 1.0, "height_m": 1.6}
    unsure = ewgsop2("F", {**base, "grip_kg": 17.0, "grip_kg_sd": 3.0})
    assert unsure.conclusion == "not evaluable"
    assert "predicted 17.0 ± 3.0 kg spans the cut-off 16" in unsure.statement()
    sure = ewgsop2("F", {**base, "grip_kg": 25.0, "grip_kg_sd": 3.0})
    assert sure.conclusion == "absent" and "predicted 25.0 ± 3.0 kg ≥ 16" in sure.statement()
    slow = awgs2019("F", {**base, "grip_kg": 25.0, "chair_rise_s": 12.5, "chair_rise_s_sd": 2.0})
    [rise] = [c for c in slow.criteria if c.name == "slow chair rise"]
    assert not rise.evaluable and "spans the cut-off 12" in rise.detail
