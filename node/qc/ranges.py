"""Plausible ranges for QC, each with its source. They bound what a structure can be, not what
is normal: a value outside is implausible for any adult, so it is a segmentation error before
it is a finding. Upper bounds use the larger (male) distribution, lower bounds the smaller
(female) one, whatever the patient's sex, so a small man or a large woman is never flagged.

Sources (the numbers are those in `measure/references.py`, copied from `shared/seeds/`):
- seed 001, Fitzpatrick et al., Table 2 (UK Biobank, n = 5,000): iliopsoas volume per side,
  male right 410.9 ± 64.0 mL, female left 267.9 ± 36.8 mL; L−R difference ranges −96.9 …
  62.5 mL (women) and −95.6 … 184.4 mL (men): at most ≈ 45 % of the mean volume.
- seed 003, Kiefer et al. (NAKO, n = 27,805): maximum psoas CSA of both sides together
  37.92 ± 5.80 cm² (men), 24.47 ± 3.65 cm² (women); gluteus volume (maximus, medius and
  minimus of both sides) 3.384 ± 0.528 L (men).
- seed 000 / clinical.md: skeletal muscle attenuation −29 … +150 HU.
"""

from __future__ import annotations

SD_LIMIT = 4.0  # a bound is this many SDs beyond the population mean

# Per side, from seed 001 Table 2 (mL = cm³).
ILIOPSOAS_VOLUME_MAX = 410.9 + SD_LIMIT * 64.0
ILIOPSOAS_VOLUME_MIN = 267.9 - SD_LIMIT * 36.8  # only when the whole muscle is in view
# Per side: half of seed 003's both-sides total (the psoas are near-symmetric, seed 001).
PSOAS_CSA_MAX = (37.92 + SD_LIMIT * 5.80) / 2
PSOAS_CSA_MIN = (24.47 - SD_LIMIT * 3.65) / 2  # only when the lower lumbar spine is in view
# One side's gluteus maximus + medius + minimus, half of seed 003's total; each muscle alone
# must be smaller.
GLUTEUS_SIDE_VOLUME_MAX = (3384.0 + SD_LIMIT * 528.0) / 2
# Seed 001's largest L−R difference, 184.4 mL, over the male mean volume (407.3 mL).
ASYMMETRY_REVIEW_PERCENT = 45.0
ASYMMETRY_FAIL_PERCENT = 100.0  # one side three times the other
# Muscle attenuation range (seed 000) and bone.
MUSCLE_HU = (-29.0, 150.0)
BONE_HU = 200.0
IN_RANGE_REVIEW = 0.7  # share of a structure's voxels in the muscle range
IN_RANGE_FAIL = 0.5
BONE_SHARE_FAIL = 0.1
# Dixon fat fraction: above 50 % a voxel holds more fat than water, so it is fat by
# definition; 30 % is beyond the fattiest paraspinal muscle of the healthy volunteer data.
FAT_FRACTION_REVIEW = 30.0
FAT_FRACTION_FAIL = 50.0
# Any muscle the node segments is larger than this when the image covers it whole: a
# judgement, not a seed value (the multifidus, the smallest, is tens of cm³ in adults).
MIN_MUSCLE_VOLUME_CM3 = 5.0
# Shape: share of the voxels in the largest connected part; slice-to-slice area ratio.
LARGEST_PART_REVIEW = 0.8
LARGEST_PART_FAIL = 0.5
AREA_JUMP_REVIEW = 4.0
AREA_JUMP_FLOOR_CM2 = 2.0  # ratios between smaller areas are partial-volume noise
# Position, in mm or as shares of slices / voxels.
OWN_SIDE_REVIEW = 0.9
OWN_SIDE_FAIL = 0.5
# Median gap between psoas and vertebral column above the pelvis: 3–9 mm for TotalSegmentator's
# psoas on the shared CTs (partial volume and discs below 200 HU), 22–33 mm for the kidneys.
PSOAS_TO_COLUMN_REVIEW_MM = 10.0
PSOAS_TO_COLUMN_FAIL_MM = 15.0
PSOAS_ABOVE_PELVIS_MM = 30.0
BEHIND_REVIEW = 0.8
BEHIND_FAIL = 0.5
IN_PELVIS_REVIEW = 0.8
IN_PELVIS_FAIL = 0.5
