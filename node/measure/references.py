"""Reference distributions from the seed papers, and z-scores / percentiles against them.

Percentiles assume a normal distribution with the published mean and SD (the papers give no
quantiles); they are approximate in the tails and for skewed quantities.

Sources (the numbers are copied from the papers in `shared/seeds/`):
- seed 000, Vu et al., Table 3: abdominal muscle mass (g) between the most inferior lung slice
  and the inferior aspect of L5, by sex and age band (CT). The bands are "<40", "41–50", ...;
  the paper leaves age 40 unassigned, we place it in "<40".
- seed 001, Fitzpatrick/Basty et al., Table 2: iliopsoas volumes (mL) and IMI by sex (MR,
  UK Biobank). The table prints IMI in "ml/cm²"; the values (≈ 205 for 542 mL at ≈ 1.63 m)
  are mL/m², which we use.
- seed 002, Kim et al., Table 1: thigh muscle volume (cm³) and P/A ratio by sex (Dixon MR).
  Its TVI (0.32 cm³/m²) cannot be right for TMV ≈ 9,300 cm³; TVI has no reference here.
- seed 003, Kiefer et al.: total maximum psoas CSA (cm²) and gluteus volume by sex (MR, NAKO).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    """A published population mean ± SD for one quantity in one group of people."""

    mean: float
    sd: float
    n: int | None
    population: str
    source: str

    def z_score(self, value: float) -> float:
        return (value - self.mean) / self.sd

    def percentile(self, value: float) -> float:
        return 50.0 * (1.0 + math.erf(self.z_score(value) / math.sqrt(2.0)))

    def describe(self) -> str:
        n = f", n = {self.n}" if self.n else ""
        return f"{self.source}, {self.population}{n}: {self.mean:g} ± {self.sd:g}"


SEED000 = "Vu et al. (seed 000) Table 3"
SEED001 = "Fitzpatrick et al. (seed 001) Table 2"
SEED002 = "Kim et al. (seed 002) Table 1"
SEED003 = "Kiefer et al. (seed 003)"

# Seed 000 Table 3 columns: total and the six muscle groups (left + right), grams.
SEED000_GROUPS = (
    "total",
    "erector_spinae",
    "gluteus_medius",
    "lateral_abdominals",
    "psoas",
    "quadratus_lumborum",
    "rectus_abdominis",
)
_SEED000_ROWS = {
    ("F", None): (190, "2041 560.7 704 171.0 82 68.7 745 263.1 224 62.0 84 27.9 205 82.3"),
    ("M", None): (156, "3086 769.1 954 242.3 154 92.9 1171 350.3 367 98.8 131 41.7 309 99.2"),
    ("F", "<40"): (32, "2212 636.0 758 193.8 61 76.1 804 295.5 241 69.7 108 29.5 240 101.8"),
    ("F", "41–50"): (19, "2256 560.1 760 150.2 75 44.1 830 275.3 259 60.7 98 27.0 233 69.0"),
    ("F", "51–60"): (54, "2135 552.2 736 178.1 78 47.3 770 262.9 243 58.8 89 25.3 219 86.2"),
    ("F", "61–70"): (47, "1926 501.5 664 155.8 87 74.6 718 233.5 201 47.6 74 17.6 182 70.5"),
    ("F", "71–80"): (30, "1860 432.2 654 109.6 96 68.5 674 239.9 195 48.1 67 15.4 174 49.3"),
    ("F", "81–100"): (8, "1579 408.8 533 125.5 132 118.3 552 158.4 173 55.3 46 9.8 142 42.1"),
    ("M", "<40"): (9, "3363 889.0 1073 246.8 143 81.9 1189 391.3 452 116.2 170 50.5 336 96.9"),
    ("M", "41–50"): (25, "3377 759.1 1058 246.6 183 129.1 1211 358.8 426 89.5 156 30.1 343 115.7"),
    ("M", "51–60"): (39, "3385 819.3 1041 247.5 149 83.6 1311 394.5 393 98.4 149 41.3 342 104.6"),
    ("M", "61–70"): (41, "2944 603.0 908 202.6 154 86.5 1138 299.2 334 75.0 115 30.3 295 86.9"),
    ("M", "71–80"): (31, "2726 644.5 849 198.2 138 79.4 1038 285.2 320 76.7 108 31.7 272 75.6"),
    ("M", "81–100"): (9, "2629 536.7 754 153.4 170 73.7 1057 255.1 311 83.9 92 19.0 245 49.5"),
}
_SEX = {"F": "female", "M": "male"}


def seed000_band(age_years: float) -> str:
    age = math.floor(age_years)
    if age <= 40:
        return "<40"
    if age >= 81:
        return "81–100"
    low = ((age - 1) // 10) * 10 + 1
    return f"{low}–{low + 9}"


def seed000_mass(sex: str, age_years: float | None, group: str) -> Reference:
    """Seed 000 abdominal muscle mass reference for `group` (a SEED000_GROUPS name)."""
    band = seed000_band(age_years) if age_years is not None else None
    n, row = _SEED000_ROWS[(sex, band)]
    values = [float(v) for v in row.split()]
    index = SEED000_GROUPS.index(group)
    population = _SEX[sex] + (f" {band} y" if band else " (all ages)")
    return Reference(values[2 * index], values[2 * index + 1], n, population, SEED000)


_BY_SEX: dict[str, dict[str, tuple[float, float, float, float, int | None, str]]] = {
    # quantity: (female mean, sd, male mean, sd, n, source)
    "iliopsoas_volume": (542.3, 72.1, 814.5, 125.4, 5000, SEED001),
    "iliopsoas_left_volume": (267.9, 36.8, 403.6, 63.5, 5000, SEED001),
    "iliopsoas_right_volume": (274.4, 37.0, 410.9, 64.0, 5000, SEED001),
    "iliopsoas_lr_difference": (-6.5, 16.1, -7.3, 22.8, 5000, SEED001),
    "imi": (205.1, 22.6, 261.8, 34.2, 5000, SEED001),
    "tmv": (7586.2, 1076.1, 11166.4, 1689.8, None, SEED002),
    "pa_ratio": (0.44, 0.06, 0.45, 0.05, None, SEED002),
    "psoas_max_csa": (24.47, 3.65, 37.92, 5.80, None, SEED003),
    "gluteus_volume": (2386.0, 408.0, 3384.0, 528.0, None, SEED003),
}


def by_sex(quantity: str, sex: str) -> Reference:
    """A sex-specific reference from seeds 001–003 (keys of `_BY_SEX`)."""
    f_mean, f_sd, m_mean, m_sd, n, source = _BY_SEX[quantity]
    mean, sd = (f_mean, f_sd) if sex == "F" else (m_mean, m_sd)
    return Reference(mean, sd, n, _SEX[sex], source)


def has_reference(quantity: str) -> bool:
    return quantity in _BY_SEX
