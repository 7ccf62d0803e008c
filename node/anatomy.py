"""The structures the node segments and the coded concepts that name them in SEG and SR.

Codes follow `shared/brief/codes.md`: segment category SCT 123037004 for anatomical
structures (85756007 for tissue classes), laterality as a modifier (left 7771000,
right 24028007). Concepts with no verified SNOMED CT code use the private scheme ``99MYO``;
every private code is listed in the README (a test checks it). No code is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.coding import Code

ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
TISSUE = Code("85756007", "SCT", "Tissue")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")
PRIVATE_SCHEME = "99MYO"


def private_code(value: str, meaning: str) -> Code:
    """A concept of the node's private coding scheme (PS3.3 8.2: designator starting '99')."""
    return Code(value, PRIVATE_SCHEME, meaning)


@dataclass(frozen=True)
class Structure:
    """One segmentable structure: a stable key for results and its coded description."""

    key: str
    name: str
    category: Code
    property_type: Code
    laterality: Code | None = None
    muscle: bool = True  # counts towards total skeletal muscle (e.g. the L3 CSA)

    @property
    def side(self) -> str | None:
        return {LEFT.value: "left", RIGHT.value: "right"}.get(
            self.laterality.value if self.laterality else ""
        )


# Concepts (verified against DICOM CIDs or the Slicer/TotalSegmentator maps; see codes.md).
ERECTOR_SPINAE = Code("44947003", "SCT", "Erector spinae muscle")
DEEP_BACK_MUSCLES = Code("244849004", "SCT", "Deep muscle of back")
ILIOPSOAS = Code("68455001", "SCT", "Iliopsoas muscle")
QUADRATUS_LUMBORUM = Code("47560002", "SCT", "Quadratus lumborum muscle")
RECTUS_ABDOMINIS = Code("77634003", "SCT", "Rectus abdominis muscle")
ABDOMINAL_WALL_MUSCLE = Code("1142228004", "SCT", "Abdominal wall muscle")
GLUTEUS_MAXIMUS = Code("181674001", "SCT", "Gluteus maximus muscle")
GLUTEUS_MEDIUS = Code("78333006", "SCT", "Gluteus medius muscle")
GLUTEUS_MINIMUS = Code("75297007", "SCT", "Gluteus minimus muscle")
QUADRICEPS = Code("21989003", "SCT", "Quadriceps femoris muscle")
POSTERIOR_THIGH = Code("128511007", "SCT", "Posterior thigh muscles")
MEDIAL_THIGH = Code("1179657002", "SCT", "Medial thigh muscles")
SKELETAL_MUSCLE = Code("127954009", "SCT", "Skeletal muscle")
MUSCLE_TISSUE = Code("91727004", "SCT", "Muscle")

# Private concepts: no verified SNOMED CT code (codes.md explains each case).
PSOAS_MAJOR = private_code("PSOAS", "Psoas major muscle")  # 64038003 is a lymph node in CID 7600
MULTIFIDUS = private_code("MULTIFIDUS", "Multifidus muscle")
LATERAL_ABDOMINALS = private_code(
    "LATABD", "Lateral abdominal muscles (obliques and transversus abdominis)"
)
ANTERIOR_THIGH = private_code("ANTTHIGH", "Anterior thigh compartment muscles")
THIGH_MUSCLES = private_code("THIGH", "Thigh muscles")
MUSCLE_DENSITY_TISSUE_CODE = private_code(
    "MUSCLEDENSITY", "Tissue of skeletal muscle attenuation (-29 to 150 HU)"
)


def _sided(key: str, name: str, concept: Code) -> tuple[Structure, Structure]:
    return (
        Structure(f"{key}_left", f"Left {name}", ANATOMICAL_STRUCTURE, concept, LEFT),
        Structure(f"{key}_right", f"Right {name}", ANATOMICAL_STRUCTURE, concept, RIGHT),
    )


PSOAS = _sided("psoas", "psoas major", PSOAS_MAJOR)
QUADRATUS = _sided("quadratus_lumborum", "quadratus lumborum", QUADRATUS_LUMBORUM)
ERECTOR = _sided("erector_spinae", "erector spinae", ERECTOR_SPINAE)
GLUTEUS_MED = _sided("gluteus_medius", "gluteus medius", GLUTEUS_MEDIUS)
RECTUS = _sided("rectus_abdominis", "rectus abdominis", RECTUS_ABDOMINIS)
LATERAL_ABD = _sided("lateral_abdominals", "lateral abdominals", LATERAL_ABDOMINALS)
GLUTEUS_MAX = _sided("gluteus_maximus", "gluteus maximus", GLUTEUS_MAXIMUS)
GLUTEUS_MIN = _sided("gluteus_minimus", "gluteus minimus", GLUTEUS_MINIMUS)
AUTOCHTHON = _sided("deep_back_muscles", "deep back muscles", DEEP_BACK_MUSCLES)
ILIOPSOAS_SIDES = _sided("iliopsoas", "iliopsoas", ILIOPSOAS)
MULTIFIDUS_SIDES = _sided("multifidus", "multifidus", MULTIFIDUS)
THIGH = _sided("thigh_muscles", "thigh muscles", THIGH_MUSCLES)
THIGH_ANTERIOR = _sided("thigh_anterior", "anterior thigh compartment", ANTERIOR_THIGH)
THIGH_MEDIAL = _sided("thigh_medial", "medial thigh compartment", MEDIAL_THIGH)
THIGH_POSTERIOR = _sided("thigh_posterior", "posterior thigh compartment", POSTERIOR_THIGH)

# The 12 seed 000 groups, in the paper's order, left before right.
SEED000_GROUPS: tuple[Structure, ...] = (
    *PSOAS,
    *QUADRATUS,
    *ERECTOR,
    *GLUTEUS_MED,
    *RECTUS,
    *LATERAL_ABD,
)
TOTAL_SKELETAL_MUSCLE = Structure(
    "skeletal_muscle", "Skeletal muscle (all)", TISSUE, SKELETAL_MUSCLE
)
MUSCLE_DENSITY_TISSUE = Structure(
    key="muscle_density_tissue",
    name="Muscle-density tissue (-29 to 150 HU)",
    category=TISSUE,
    property_type=MUSCLE_DENSITY_TISSUE_CODE,
    muscle=False,
)
# Skeletal muscle outside every named group (latissimus, intercostals, arms, ...; on CT
# also the partial-volume border of the named groups): total skeletal muscle is the
# union of the named groups and this remainder.
OTHER_SKELETAL_MUSCLE = Structure(
    "other_skeletal_muscle", "Other skeletal muscle", TISSUE, SKELETAL_MUSCLE
)

STRUCTURES: dict[str, Structure] = {
    s.key: s
    for s in (
        *SEED000_GROUPS,
        *GLUTEUS_MAX,
        *GLUTEUS_MIN,
        *AUTOCHTHON,
        *ILIOPSOAS_SIDES,
        *MULTIFIDUS_SIDES,
        *THIGH,
        *THIGH_ANTERIOR,
        *THIGH_MEDIAL,
        *THIGH_POSTERIOR,
        TOTAL_SKELETAL_MUSCLE,
        MUSCLE_DENSITY_TISSUE,
        OTHER_SKELETAL_MUSCLE,
    )
}


def private_codes() -> list[Code]:
    """Every private concept in use, for the README's code table."""
    seen: dict[str, Code] = {}
    for structure in STRUCTURES.values():
        if structure.property_type.scheme_designator == PRIVATE_SCHEME:
            seen[structure.property_type.value] = structure.property_type
    return list(seen.values())
