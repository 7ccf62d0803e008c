import pytest

from myonode.measure.references import by_sex, seed000_band, seed000_mass


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (18, "<40"),
        (40, "<40"),
        (40.9, "<40"),
        (41, "41–50"),
        (50, "41–50"),
        (51, "51–60"),
        (70, "61–70"),
        (80, "71–80"),
        (81, "81–100"),
        (99, "81–100"),
    ],
)
def test_seed000_age_bands(age, band):
    assert seed000_band(age) == band


def test_seed000_z_score_from_table_3():
    reference = seed000_mass("F", 65, "psoas")  # Table 3: F 61–70 psoas 201 ± 47.6, n = 47
    assert (reference.mean, reference.sd, reference.n) == (201, 47.6, 47)
    assert reference.z_score(153.4) == pytest.approx(-1.0)
    assert reference.percentile(201) == pytest.approx(50.0)
    assert reference.percentile(153.4) == pytest.approx(15.87, abs=0.01)
    total = seed000_mass("M", None, "total")  # all males: 3086 ± 769.1
    assert total.z_score(3086 + 2 * 769.1) == pytest.approx(2.0)
    assert "male (all ages)" in total.describe()


def test_sex_specific_references_from_seeds_001_to_003():
    assert by_sex("imi", "M").z_score(261.8 - 34.2) == pytest.approx(-1.0)  # seed 001
    assert by_sex("tmv", "F").mean == 7586.2  # seed 002
    assert by_sex("pa_ratio", "M").sd == 0.05
    assert by_sex("psoas_max_csa", "F").z_score(24.47) == 0.0  # seed 003
    assert by_sex("gluteus_volume", "M").mean == 3384.0  # 3.384 L
