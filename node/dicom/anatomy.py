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


# Seed 002 (Kim et al.): the 27 pelvic-thigh structures its UNETR segments, unsided, in the
# paper's order. Codes.md verifies only the gluteal, iliopsoas and rectus abdominis concepts;
# every other one is private rather than guessed.
def _unsided(key: str, name: str, concept: Code, muscle: bool = True) -> Structure:
    return Structure(key, name, ANATOMICAL_STRUCTURE, concept, muscle=muscle)


SEED002_STRUCTURES: tuple[Structure, ...] = (
    _unsided("sartorius", "Sartorius", private_code("SARTORIUS", "Sartorius muscle")),
    _unsided("rectus_femoris", "Rectus femoris", private_code("RECTFEM", "Rectus femoris muscle")),
    _unsided(
        "vastus_lateralis", "Vastus lateralis", private_code("VASTLAT", "Vastus lateralis muscle")
    ),
    _unsided(
        "vastus_medialis", "Vastus medialis", private_code("VASTMED", "Vastus medialis muscle")
    ),
    _unsided(
        "vastus_intermedius",
        "Vastus intermedius",
        private_code("VASTINT", "Vastus intermedius muscle"),
    ),
    _unsided("gluteus_maximus", "Gluteus maximus", GLUTEUS_MAXIMUS),
    _unsided("gluteus_medius", "Gluteus medius", GLUTEUS_MEDIUS),
    _unsided("gluteus_minimus", "Gluteus minimus", GLUTEUS_MINIMUS),
    _unsided("piriformis", "Piriformis", private_code("PIRIFORMIS", "Piriformis muscle")),
    _unsided(
        "obturator_internus",
        "Obturator internus",
        private_code("OBTINT", "Obturator internus muscle"),
    ),
    _unsided(
        "obturator_externus",
        "Obturator externus",
        private_code("OBTEXT", "Obturator externus muscle"),
    ),
    _unsided("pectineus", "Pectineus", private_code("PECTINEUS", "Pectineus muscle")),
    _unsided(
        "tensor_fasciae_latae",
        "Tensor fasciae latae",
        private_code("TFL", "Tensor fasciae latae muscle"),
    ),
    _unsided(
        "adductor_magnus", "Adductor magnus", private_code("ADDMAG", "Adductor magnus muscle")
    ),
    _unsided(
        "adductor_longus", "Adductor longus", private_code("ADDLONG", "Adductor longus muscle")
    ),
    _unsided(
        "adductor_brevis", "Adductor brevis", private_code("ADDBREV", "Adductor brevis muscle")
    ),
    _unsided("gracilis", "Gracilis", private_code("GRACILIS", "Gracilis muscle")),
    _unsided(
        "quadratus_femoris",
        "Quadratus femoris",
        private_code("QUADFEM", "Quadratus femoris muscle"),
    ),
    _unsided(
        "semimembranosus",
        "Semimembranosus",
        private_code("SEMIMEMB", "Semimembranosus muscle"),
    ),
    _unsided("semitendinosus", "Semitendinosus", private_code("SEMITEND", "Semitendinosus muscle")),
    _unsided(
        "biceps_femoris", "Biceps femoris", private_code("BICEPSFEM", "Biceps femoris muscle")
    ),
    _unsided("multifidus", "Multifidus", MULTIFIDUS),
    _unsided("iliopsoas", "Iliopsoas", ILIOPSOAS),
    _unsided(
        "abdominal_oblique",
        "Abdominal oblique",
        private_code("ABDOBLIQUE", "Abdominal oblique muscles"),
    ),
    _unsided("rectus_abdominis", "Rectus abdominis", RECTUS_ABDOMINIS),
    _unsided("iliac_bone", "Iliac bone", private_code("ILIUM", "Iliac bone"), muscle=False),
    _unsided("femur", "Femur", private_code("FEMUR", "Femur"), muscle=False),
)

# TotalSegmentator's abdominal_muscles task (external/internal oblique and transversospinalis
# codes are the Slicer/TotalSegmentator maps' ones, codes.md).
EXTERNAL_OBLIQUE = _sided(
    "external_oblique", "external oblique", Code("44530005", "SCT", "External oblique muscle")
)
INTERNAL_OBLIQUE = _sided(
    "internal_oblique", "internal oblique", Code("33147005", "SCT", "Internal oblique muscle")
)
TRANSVERSOSPINALIS = _sided(
    "transversospinalis",
    "transversospinalis",
    Code("49975005", "SCT", "Transversospinalis muscle"),
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
        *SEED002_STRUCTURES,
        *EXTERNAL_OBLIQUE,
        *INTERNAL_OBLIQUE,
        *TRANSVERSOSPINALIS,
    )
}


def private_codes() -> list[Code]:
    """Every private concept in use, for the README's code table."""
    seen: dict[str, Code] = {}
    for structure in STRUCTURES.values():
        if structure.property_type.scheme_designator == PRIVATE_SCHEME:
            seen[structure.property_type.value] = structure.property_type
    return list(seen.values())
