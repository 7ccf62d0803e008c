"""CT reconstruction kernel classes from vendor kernel names.

Three classes: ``soft`` (smooth/standard body kernels), ``medium`` (mildly edge-enhancing)
and ``sharp`` (high-pass: bone, lung, edge, high-resolution). Seed 000 excludes high-pass
kernels because their noise corrupts muscle attenuation and boundaries. Vendors name kernels
differently, so the manufacturer picks the table first; an unknown manufacturer tries all.

- Siemens: letter(s) + number (+ letter): ``B30f``, ``Br38f``, ``I70f``, ``Bl57``, ``Hr40``.
  The number orders sharpness: < 45 soft, 45–59 medium, ≥ 60 sharp; ``Bl`` (lung) and ``U``
  (ultra-high resolution) families are sharp whatever the number.
- GE: ``SOFT``/``SMOOTH``/``STANDARD`` soft, ``DETAIL`` medium, ``LUNG``/``BONE``/``BONEPLUS``/
  ``EDGE``/``CHEST``/``ULTRA`` sharp (optionally prefixed ``HD``).
- Philips: single letters ``A``/``B`` soft, ``C`` medium, ``D``/``E``/``L`` and the ``Y*``
  family sharp; IMR names ``Soft Tissue``/``Routine`` soft, ``Sharp``/``SharpPlus`` sharp.
- Canon/Toshiba: ``FCnn``: FC01–FC29 soft, FC30 and above (bone, lung, high-resolution) sharp;
  AiCE/AIDR names ``Body``/``Body Sharp``/``Lung``/``Bone``.
"""

from __future__ import annotations

import re

_SHARP_WORDS = ("BONE", "LUNG", "EDGE", "SHARP", "ULTRA", "HIGH", "HR ", "CHEST", "DETAIL+")
_SOFT_WORDS = ("SOFT", "SMOOTH", "STANDARD", "STND", "STD", "BODY", "ROUTINE", "ABDOMEN", "BRAIN")


def _siemens(kernel: str) -> tuple[str, str] | None:
    match = re.fullmatch(r"([A-Z][a-z]?)(\d{2})([a-z]?)", kernel)
    if not match:
        return None
    family, number = match.group(1), int(match.group(2))
    if family in ("Bl", "U", "Ur", "Ul"):
        return "sharp", f"Siemens {family} family (lung/ultra-high resolution)"
    if number >= 60:
        return "sharp", f"Siemens sharpness {number} ≥ 60"
    if number >= 45:
        return "medium", f"Siemens sharpness {number} in 45–59"
    return "soft", f"Siemens sharpness {number} < 45"


def _ge(kernel: str) -> tuple[str, str] | None:
    name = kernel.upper().replace("HD ", "").replace("_", " ").strip()
    if name in ("SOFT", "SMOOTH", "STANDARD", "STND"):
        return "soft", f"GE {name}"
    if name == "DETAIL":
        return "medium", "GE DETAIL (mild edge enhancement)"
    if name in ("LUNG", "BONE", "BONEPLUS", "BONE PLUS", "EDGE", "CHEST", "ULTRA"):
        return "sharp", f"GE {name} (high-pass)"
    return None


def _philips(kernel: str) -> tuple[str, str] | None:
    name = kernel.upper().strip()
    if name in ("A", "B", "UA", "UB", "SOFT TISSUE", "ROUTINE"):
        return "soft", f"Philips {name}"
    if name in ("C", "UC", "CB"):
        return "medium", f"Philips {name}"
    if name in ("D", "E", "L", "UD", "EB", "SHARP", "SHARPPLUS", "SHARP PLUS") or re.fullmatch(
        r"Y[A-H]", name
    ):
        return "sharp", f"Philips {name} (high-pass)"
    return None


def _canon(kernel: str) -> tuple[str, str] | None:
    match = re.fullmatch(r"FC\s*(\d{1,2})", kernel.upper().strip())
    if match:
        number = int(match.group(1))
        if number >= 30:
            return "sharp", f"Canon FC{number:02d} ≥ FC30 (bone/lung/high resolution)"
        return "soft", f"Canon FC{number:02d} < FC30 (body)"
    name = kernel.upper().strip()
    if name in ("BODY", "BODY STANDARD"):
        return "soft", f"Canon {name}"
    if name in ("BODY SHARP", "LUNG", "BONE"):
        return "sharp", f"Canon {name}"
    return None


_VENDORS = (
    ("SIEMENS", _siemens),
    ("GE", _ge),
    ("PHILIPS", _philips),
    ("CANON", _canon),
    ("TOSHIBA", _canon),
)


def classify(kernel: str, manufacturer: str = "") -> tuple[str, str]:
    """(class, why) for a ConvolutionKernel value; class is soft/medium/sharp/unknown."""
    kernel = kernel.strip()
    if not kernel:
        return "unknown", "no ConvolutionKernel"
    maker = manufacturer.upper()
    ordered = sorted(_VENDORS, key=lambda vendor: vendor[0] not in maker)
    for _, rule in ordered:
        found = rule(kernel)
        if found:
            return found
    upper = f"{kernel.upper()} "
    for word in _SHARP_WORDS:
        if word in upper:
            return "sharp", f"kernel name contains {word.strip()!r}"
    for word in _SOFT_WORDS:
        if word in upper:
            return "soft", f"kernel name contains {word!r}"
    return "unknown", f"kernel {kernel!r} not in the vendor tables"
