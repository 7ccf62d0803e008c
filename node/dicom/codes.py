"""Coded concepts for measurements, indices and assessments in the SR.

Standard concepts come from DICOM PS3.16 (SCT, DCM, LN, UCUM as listed in its CIDs); the rest
use the private scheme ``99MYO`` (see anatomy.py) and appear in the README's code table.
`DERIVED` maps each derived-index key to (concept, finding site or None) so that encoding the
SR and reading it back (results from an archive) use one table.
"""

from __future__ import annotations

from pydicom.sr.coding import Code

from myonode.dicom import anatomy
from myonode.dicom.anatomy import private_code

VOLUME = Code("118565006", "SCT", "Volume")
MASS = Code("118538004", "SCT", "Mass")  # not codes.SCT.Mass: 4147007 is "mass lesion"
AREA = Code("42798000", "SCT", "Area")
ATTENUATION = Code("112031", "DCM", "Attenuation Coefficient")
FAT_FRACTION = Code("129100", "DCM", "Fat fraction")
MEAN = Code("373098007", "SCT", "Mean")
STANDARD_DEVIATION = Code("386136009", "SCT", "Standard Deviation")
MAXIMUM = Code("56851009", "SCT", "Maximum")
Z_SCORE = Code("121416", "DCM", "Z-Score of measurement")
PERCENTILE = Code("121415", "DCM", "Percentile Ranking of measurement")
BODY_HEIGHT = Code("8302-2", "LN", "Body height")
BODY_WEIGHT = Code("29463-7", "LN", "Body weight")
BMI = Code("60621009", "SCT", "Body mass index")
SUBJECT_AGE = Code("121033", "DCM", "Subject Age")
L3_VERTEBRA = Code("36470004", "SCT", "L3 vertebra")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")
COMMENT = Code("121106", "DCM", "Comment")
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")

AREA_AT_L3 = private_code("L3CSA", "Cross-sectional area at the L3 level")
L3_SMI = private_code("L3SMI", "L3 skeletal muscle index")
IMI = private_code("IMI", "Iliopsoas muscle index")
TMV = private_code("TMV", "Thigh muscle volume")
TVI = private_code("TVI", "Thigh muscle volume index")
PA_RATIO = private_code("PARATIO", "Posterior to anterior thigh muscle volume ratio")
LR_DIFFERENCE = private_code("LRDIFF", "Left minus right volume difference")
ASYMMETRY = private_code("ASYM", "Left-right volume asymmetry")
PSOAS_MAX_CSA = private_code("PSOASCSA", "Maximum psoas cross-sectional area, left plus right")
ABDOMINAL_MUSCLE_MASS = private_code("ABDMASS", "Abdominal muscle mass, seed 000 groups")
MASS_CHANGE = private_code("MASSCHANGE", "Mass change since prior study")
MASS_CHANGE_RATE = private_code("MASSRATE", "Mass change rate since prior study")
SARCOPENIA_EWGSOP2 = private_code("SARCEWGSOP2", "Sarcopenia assessment (EWGSOP2)")
SARCOPENIA_AWGS = private_code("SARCAWGS2019", "Sarcopenia assessment (AWGS 2019)")
PROBABLE = private_code("PROBABLE", "Probable (criteria partly met)")
POSSIBLE = private_code("POSSIBLE", "Possible (function low, mass not evaluable)")
NOT_EVALUABLE = private_code("NOTEVALUABLE", "Not evaluable from the available inputs")
GLUTEI = private_code("GLUTEI", "Gluteus maximus, medius and minimus muscles")
# SARC-CXR (seed 004) predictions: no LOINC/SCT concept is a value predicted from an image.
ALM = private_code("ALM", "Appendicular lean mass")
ALMI = private_code("ALMI", "Appendicular lean mass index")
HANDGRIP = private_code("HANDGRIP", "Handgrip strength")
CHAIR_RISE = private_code("CHAIRRISE5", "Five-times chair-rise time")
SARCOPENIA_PROBABILITY = private_code("SARCPROB", "Sarcopenia probability")
PREDICTED = private_code("IMGPREDICTED", "Predicted from the image by a regression model")
# Quality control of a segmented structure (myonode.qc): the verdict is coded with the
# standard values of CID 6044 (usable and meets / usable and does not meet the quality-control
# standard / unusable); no standard concept names a segmentation's QC verdict, nor its reasons.
QC_VERDICT = private_code("QCVERDICT", "Segmentation quality control verdict")
QC_REASONS = private_code("QCREASONS", "Segmentation quality control reasons")
QC_VALUES = {
    "pass": Code("111237", "DCM", "Usable - Meets the quality control standard"),
    "review": Code("111236", "DCM", "Usable - Does not meet the quality control standard"),
    "fail": Code("111235", "DCM", "Unusable - Quality renders image unusable"),
}

UNITS = {
    "cm3": "cubic centimeter",
    "mL": "milliliter",
    "g": "gram",
    "g/a": "gram per year",
    "cm2": "square centimeter",
    "cm2/m2": "square centimeter per square meter",
    "mL/m2": "milliliter per square meter",
    "cm3/m2": "cubic centimeter per square meter",
    "kg/m2": "kilogram per square meter",
    "m": "meter",
    "kg": "kilogram",
    "a": "year",
    "s": "second",
    "%": "percent",
    "1": "no units",
    "{z-score}": "z-score",
    "[hnsf'U]": "Hounsfield unit",
}


def ucum(unit: str) -> Code:
    """The UCUM code for one of the node's units."""
    return Code(unit, "UCUM", UNITS[unit])


CONCLUSIONS = {
    "present": PRESENT,
    "absent": ABSENT,
    "probable": PROBABLE,
    "possible": POSSIBLE,
    "not evaluable": NOT_EVALUABLE,
}
GUIDELINES = {"EWGSOP2": SARCOPENIA_EWGSOP2, "AWGS 2019": SARCOPENIA_AWGS}

_GROUPS = {
    "psoas": anatomy.PSOAS_MAJOR,
    "quadratus_lumborum": anatomy.QUADRATUS_LUMBORUM,
    "erector_spinae": anatomy.ERECTOR_SPINAE,
    "gluteus_medius": anatomy.GLUTEUS_MEDIUS,
    "rectus_abdominis": anatomy.RECTUS_ABDOMINIS,
    "lateral_abdominals": anatomy.LATERAL_ABDOMINALS,
    "gluteus_maximus": anatomy.GLUTEUS_MAXIMUS,
    "gluteus_minimus": anatomy.GLUTEUS_MINIMUS,
    "deep_back_muscles": anatomy.DEEP_BACK_MUSCLES,
    "iliopsoas": anatomy.ILIOPSOAS,
    "multifidus": anatomy.MULTIFIDUS,
    "thigh_muscles": anatomy.THIGH_MUSCLES,
    "thigh_anterior": anatomy.ANTERIOR_THIGH,
    "thigh_medial": anatomy.MEDIAL_THIGH,
    "thigh_posterior": anatomy.POSTERIOR_THIGH,
}

DERIVED: dict[str, tuple[Code, Code | None]] = {
    "height": (BODY_HEIGHT, None),
    "weight": (BODY_WEIGHT, None),
    "bmi": (BMI, None),
    "age": (SUBJECT_AGE, None),
    "abdominal_muscle_mass": (ABDOMINAL_MUSCLE_MASS, None),
    "l3_csa": (AREA_AT_L3, anatomy.SKELETAL_MUSCLE),
    "l3_smi": (L3_SMI, None),
    "iliopsoas_volume": (VOLUME, anatomy.ILIOPSOAS),
    "imi": (IMI, None),
    "tmv": (TMV, None),
    "tvi": (TVI, None),
    "pa_ratio": (PA_RATIO, None),
    "gluteus_volume": (VOLUME, GLUTEI),
    "psoas_max_csa": (PSOAS_MAX_CSA, None),
    **{f"{group}_mass": (MASS, site) for group, site in _GROUPS.items()},
    **{f"{group}_lr_difference": (LR_DIFFERENCE, site) for group, site in _GROUPS.items()},
    **{f"{group}_asymmetry": (ASYMMETRY, site) for group, site in _GROUPS.items()},
}


def derived_key(concept: str, site: str | None) -> str | None:
    """The derived-index key for an SR item's concept value and finding-site value."""
    for key, (code, finding_site) in DERIVED.items():
        if code.value == concept and (finding_site.value if finding_site else None) == site:
            return key
    return None


def private_codes() -> list[Code]:
    """Every private concept used in SEG and SR, for the README table."""
    found = {c.value: c for c in anatomy.private_codes()}
    for value in list(globals().values()) + [site for _, site in DERIVED.values()]:
        if isinstance(value, Code) and value.scheme_designator == anatomy.PRIVATE_SCHEME:
            found.setdefault(value.value, value)
    return list(found.values())
