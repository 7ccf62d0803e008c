"""The structures the node segments and the coded concepts that name them in SEG and SR.

Codes follow `shared/brief/codes.md`: segment category SCT 123037004 for anatomical
structures (85756007 for tissue classes), laterality as a modifier (left 7771000,
right 24028007). Concepts with no verified SNOMED CT code use the private scheme ``99MYO``
and are listed in the README; no code is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.coding import Code

ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
TISSUE = Code("85756007", "SCT", "Tissue")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")
PRIVATE_SCHEME = "99MYO"


@dataclass(frozen=True)
class Structure:
    """One segmentable structure: a stable key for results and its coded description."""

    key: str
    name: str
    category: Code
    property_type: Code
    laterality: Code | None = None


MUSCLE_DENSITY_TISSUE = Structure(
    key="muscle_density_tissue",
    name="Muscle-density tissue (-29 to 150 HU)",
    category=TISSUE,
    property_type=Code("91727004", "SCT", "Muscle"),
)
