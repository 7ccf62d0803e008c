"""Is a CT series unenhanced or contrast-enhanced? Header evidence, image evidence, and both.

Seed 000 classifies each series as unenhanced or contrast and prefers unenhanced ones, because
iodine raises the attenuation of perfused muscle and organs. Two independent sources:

*Header*: ContrastBolusAgent / Route / Volume / StartTime / Ingredient, and keywords in
SeriesDescription and ProtocolName in several languages and vendor styles ("non-contrast",
"w/o", "plain", "nativ", "sans injection", "sin contraste", "senza mdc", "单纯/平扫" …
against "with contrast", "KM", "C+", "portal venous", "arteriell", "Spätphase", "tardif",
"con mdc", "造影/增强" …). Negations are matched first and removed before positive keywords,
so "without contrast" never counts as "contrast".

*Image*: on a few axial slices, the vertebral body is found (bone > 250 HU closed over 4 mm,
holding cortical voxels > 600 HU, within 40 mm of the midline, the most anterior such component
behind the body's centre) and the aorta (or iliac arteries) as a round, homogeneous blob of
110–500 HU, 7–40 mm across, within 60 mm in front of it. Unenhanced blood is 30–50 HU, so such
a blob means iodine in the blood pool. Spine found but no such blob → consistent with
unenhanced; no spine (e.g. a thigh or head CT) → inconclusive. Oral contrast in a bowel loop
beside the aorta can mimic it; that is why both sources are recorded and a disagreement is
reported as ``conflicting``, never resolved silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

_B = r"(?<![a-z0-9])"  # a word boundary that treats "_" and "-" as separators
_E = r"(?![a-z0-9])"
UNENHANCED_PATTERNS = (
    r"non[\s_-]?contrast",
    r"non[\s_-]?con" + _E,
    r"w/?o[\s_/-]*(iv[\s_-]*)?(contrast|kontrast|km|con|iv)" + _E,
    r"without[\s_-]*(iv[\s_-]*)?contrast",
    _B + r"no[\s_-]*(iv[\s_-]*)?contrast",
    r"un[\s_-]?enhanced",
    r"non[\s_-]?enhanced",
    r"pre[\s_-]?(contrast|con|km)" + _E,
    _B + r"(nect|ncct)" + _E,
    _B + r"plain" + _E,
    _B + r"(native?|nativ|natif|nativo|nativa)" + _E,
    r"ohne[\s_-]*(km|kontrast\w*)",
    r"sans[\s_-]*(injection|contraste|iv)" + _E,
    r"sin[\s_-]*(contraste|civ)" + _E,
    r"senza[\s_-]*(contrasto|mdc)" + _E,
    r"sem[\s_-]*contraste",
    r"zonder[\s_-]*contrast",
    r"(utan|uden|uten)[\s_-]*kontrast",
    r"bez[\s_-]*kontrast\w*",
    r"(tac|tc)[\s_-]+simples?" + _E,
    r"fase[\s_-]+basal",
    r"单纯|平扫|単純",
)
CONTRAST_PATTERNS = (
    r"with[\s_-]*(iv[\s_-]*)?contrast",
    _B + r"w/[\s_-]*(iv[\s_-]*)?contrast",
    _B + r"(contrast|kontrast\w*|contraste|contrasto)" + _E,
    _B + r"(mit[\s_-]*)?km" + _E,
    r"\+[\s_-]?c" + _E,
    _B + r"c\+",
    _B + r"(cect|cta|angio\w*)" + _E,
    _B + r"(arterial|arteriell\w*|art[eé]rielle|arteriale|arteriosa)" + _E,
    _B + r"portal\w*",
    _B + r"pv" + _E,
    _B + r"(venous|ven[oö]s|venoes|venosa|veineuse|venosus)" + _E,
    _B + r"nephro\w*",
    _B + r"delayed" + _E,
    r"sp(ä|ae|a)t(phase)?" + _E,
    _B + r"(tardif|tardive|tardia|tardio)" + _E,
    r"late[\s_-]*phase",
    r"post[\s_-]*(contrast|kontrast|km|iv)" + _E,
    _B + r"enhanced" + _E,
    r"avec[\s_-]*(injection|contraste)",
    _B + r"(injected|injection|inj)" + _E,
    _B + r"(con|com)[\s_-]*(contraste|mdc|civ)" + _E,
    _B + r"mdc" + _E,
    r"造影|增强|増強",
)
_NEGATIONS = {"NONE", "NO", "N/A", "NA", "NIL", "0", "WITHOUT", "KEIN", "KEINE", "NON", "NEIN"}
_ORAL = ("ORAL", "GASTROGRAFIN", "BARIUM", "PER OS", "P.O.")
_IV_ROUTES = ("IV", "I.V.", "INTRAVENOUS", "INTRA-VENOUS", "INTRAVENOES", "INTRAVENÖS")

# Image evidence thresholds (HU, mm).
BONE_HU = 250.0
CORTEX_HU = 600.0
CLOSING_MM = 4.0
VESSEL_HU = (110.0, 500.0)
VESSEL_DIAMETER_MM = (7.0, 40.0)
VESSEL_MAX_SD_HU = 60.0
VESSEL_MIN_ROUNDNESS = 0.55
VESSEL_FRACTION_FOR_CONTRAST = 0.3
SPINE_SLICES_FOR_UNENHANCED = 3


@dataclass(frozen=True)
class Evidence:
    """One observation: where it came from, what it read, and what it indicates."""

    source: str
    value: str
    indicates: str  # contrast / unenhanced / oral / none


@dataclass(frozen=True)
class ImageEvidence:
    verdict: str  # contrast / unenhanced / inconclusive / not assessed
    detail: str
    slices: int = 0
    slices_with_spine: int = 0
    slices_with_vessel: int = 0
    vessel_hu: float | None = None


@dataclass(frozen=True)
class ContrastStatus:
    status: str  # unenhanced / contrast / conflicting / unknown
    header: str
    image: ImageEvidence
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line for reasons and tables."""
        parts = [f"header: {self.header}"]
        cues = [f"{e.source} {e.value!r}" for e in self.evidence if e.indicates != "none"]
        if cues:
            parts[0] += f" ({'; '.join(cues)})"
        parts.append(f"image: {self.image.verdict} ({self.image.detail})")
        text = f"{self.status}; {'; '.join(parts)}"
        if self.status == "conflicting":
            text += "; header and image disagree, review before trusting attenuation values"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "header": self.header,
            "image": asdict(self.image),
            "evidence": [asdict(e) for e in self.evidence],
        }


def keyword_evidence(source: str, text: str) -> list[Evidence]:
    """Keyword matches in one free-text field; negations consume their span first."""
    lowered = text.lower()
    found = []
    for pattern in UNENHANCED_PATTERNS:
        for match in re.finditer(pattern, lowered):
            found.append(Evidence(source, text[match.start() : match.end()], "unenhanced"))
            lowered = lowered[: match.start()] + " " * len(match.group()) + lowered[match.end() :]
    for pattern in CONTRAST_PATTERNS:
        for match in re.finditer(pattern, lowered):
            found.append(Evidence(source, text[match.start() : match.end()], "contrast"))
    return found


def _tag_text(tags: Mapping[str, Any], keyword: str) -> str:
    value = tags.get(keyword)
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value).strip()


def header_evidence(tags: Mapping[str, Any]) -> list[Evidence]:
    """Everything the header says about contrast, including what says nothing."""
    evidence = []
    agent = _tag_text(tags, "ContrastBolusAgent")
    route = _tag_text(tags, "ContrastBolusRoute").upper()
    oral = any(word in agent.upper() for word in _ORAL) or "ORAL" in route
    iv_route = any(route.startswith(r) for r in _IV_ROUTES)
    if agent:
        if agent.upper() in _NEGATIONS:
            evidence.append(Evidence("ContrastBolusAgent", agent, "unenhanced"))
        elif oral and not iv_route:
            evidence.append(Evidence("ContrastBolusAgent", agent, "oral"))
        else:
            evidence.append(Evidence("ContrastBolusAgent", agent, "contrast"))
    if route:
        indicates = "contrast" if iv_route else "oral" if "ORAL" in route else "none"
        evidence.append(Evidence("ContrastBolusRoute", route, indicates))
    volume = _tag_text(tags, "ContrastBolusVolume")
    if volume:
        try:
            amount = float(volume)
        except ValueError:
            amount = 0.0
        # Some scanners write 0 whatever was injected; zero is not taken as evidence.
        evidence.append(
            Evidence(
                "ContrastBolusVolume", volume, "contrast" if amount > 0 and not oral else "none"
            )
        )
    start = _tag_text(tags, "ContrastBolusStartTime")
    if start:
        evidence.append(
            Evidence(
                "ContrastBolusStartTime", start, "oral" if oral and not iv_route else "contrast"
            )
        )
    ingredient = _tag_text(tags, "ContrastBolusIngredient")
    if ingredient:
        evidence.append(
            Evidence(
                "ContrastBolusIngredient",
                ingredient,
                "oral" if oral and not iv_route else "contrast",
            )
        )
    for keyword in ("SeriesDescription", "ProtocolName"):
        evidence += keyword_evidence(keyword, _tag_text(tags, keyword))
    return evidence


def header_verdict(evidence: Sequence[Evidence]) -> str:
    says = {e.indicates for e in evidence} & {"contrast", "unenhanced"}
    if says == {"contrast", "unenhanced"}:
        return "conflicting"
    if says:
        return says.pop()
    if any(e.indicates == "oral" for e in evidence):
        return "unenhanced"  # oral contrast only: no iodine in the blood pool
    return "unknown"


def _spine(hu: np.ndarray, body: np.ndarray, spacing: tuple[float, float]) -> np.ndarray | None:
    """The vertebral body (or sacrum) of one slice, or None.

    Bone (> BONE_HU, closed and filled so a thin cortex encloses its marrow) in components
    that hold cortical voxels (> CORTEX_HU), lie within 40 mm of the body's midline and behind
    the body's centre; the most anterior of them is the vertebral body, the ones behind it are
    posterior elements or the table. A sternum lies in front of the centre and is never taken.
    """
    row_mm, col_mm = spacing
    body_j, body_i = ndimage.center_of_mass(body)
    closing = max(1, round(CLOSING_MM / min(row_mm, col_mm)))
    bone = ndimage.binary_fill_holes(ndimage.binary_closing(hu > BONE_HU, iterations=closing))
    labels, count = ndimage.label(bone & body)
    best, best_j = None, np.inf
    for index in range(1, count + 1):
        component = labels == index
        if component.sum() * row_mm * col_mm < 150.0 or (hu[component] > CORTEX_HU).sum() < 2:
            continue
        cj, ci = ndimage.center_of_mass(component)
        if abs(ci - body_i) * col_mm > 40.0 or (cj - body_j) * row_mm < -10.0:
            continue
        if cj < best_j:
            best, best_j = component, cj
    return best


def _slice_vessel(hu: np.ndarray, spacing: tuple[float, float]) -> tuple[bool, float | None]:
    """(spine found, mean HU of an enhanced vessel beside it or None) for one LPS slice."""
    row_mm, col_mm = spacing
    pixel_area = row_mm * col_mm
    body = ndimage.binary_fill_holes(hu > -500)
    if not body.any():
        return False, None
    spine = _spine(hu, body, spacing)
    if spine is None:
        return False, None
    _, spine_i = ndimage.center_of_mass(spine)
    rows, columns = np.nonzero(spine)
    near_midline = np.abs(columns - spine_i) * col_mm < 15.0
    if not near_midline.any():
        return False, None
    anterior_edge = float(rows[near_midline].min())
    excluded = ndimage.binary_dilation(spine, iterations=2)
    candidates = (hu >= VESSEL_HU[0]) & (hu <= VESSEL_HU[1]) & body & ~excluded
    labels, count = ndimage.label(candidates)
    best: tuple[float, float] | None = None
    for index in range(1, count + 1):
        component = labels == index
        area = component.sum() * pixel_area
        diameter = 2.0 * np.sqrt(area / np.pi)
        if not VESSEL_DIAMETER_MM[0] <= diameter <= VESSEL_DIAMETER_MM[1]:
            continue
        cj, ci = ndimage.center_of_mass(component)
        if abs(ci - spine_i) * col_mm > 60.0:
            continue
        if not (anterior_edge - 60.0 / row_mm) <= cj <= anterior_edge + 5.0 / row_mm:
            continue
        js, is_ = np.nonzero(component)
        radius = np.sqrt(
            (((js - cj) * row_mm) ** 2 + ((is_ - ci) * col_mm) ** 2).max()
        ) + 0.5 * max(row_mm, col_mm)
        if area / (np.pi * radius**2) < VESSEL_MIN_ROUNDNESS:
            continue
        values = hu[component]
        if values.std() > VESSEL_MAX_SD_HU:
            continue
        distance = float(np.hypot((cj - anterior_edge) * row_mm, (ci - spine_i) * col_mm))
        if best is None or distance < best[0]:
            best = (distance, float(values.mean()))
    return True, None if best is None else best[1]


def image_evidence(slices_hu: np.ndarray, pixel_spacing: tuple[float, float]) -> ImageEvidence:
    """Look for an iodine-enhanced aorta beside the spine on axial slices.

    `slices_hu` is [k, j, i] in Hounsfield units with j towards posterior and i towards the
    patient's left (LPS order); `pixel_spacing` is (row, column) spacing in mm.
    """
    spine_slices, vessel_values = 0, []
    for hu in slices_hu:
        spine, vessel = _slice_vessel(np.asarray(hu, dtype=float), pixel_spacing)
        spine_slices += spine
        if vessel is not None:
            vessel_values.append(vessel)
    n = len(slices_hu)
    counts = {
        "slices": n,
        "slices_with_spine": spine_slices,
        "slices_with_vessel": len(vessel_values),
    }
    if vessel_values and len(vessel_values) >= VESSEL_FRACTION_FOR_CONTRAST * max(spine_slices, 1):
        median = float(np.median(vessel_values))
        return ImageEvidence(
            "contrast",
            f"enhanced vessel beside the spine, median {median:.0f} HU, on "
            f"{len(vessel_values)} of {spine_slices} slices with spine",
            vessel_hu=round(median, 1),
            **counts,
        )
    if spine_slices >= SPINE_SLICES_FOR_UNENHANCED and not vessel_values:
        return ImageEvidence(
            "unenhanced",
            f"no vessel of {VESSEL_HU[0]:.0f}-{VESSEL_HU[1]:.0f} HU beside the spine on "
            f"{spine_slices} of {n} sampled slices",
            **counts,
        )
    if spine_slices < SPINE_SLICES_FOR_UNENHANCED:
        detail = f"spine found on {spine_slices} of {n} sampled slices; too few to judge"
    else:
        detail = f"enhanced vessel on only {len(vessel_values)} of {spine_slices} slices with spine"
    return ImageEvidence("inconclusive", detail, **counts)


def combine(evidence: list[Evidence], image: ImageEvidence) -> ContrastStatus:
    """One status from both sources; a disagreement is `conflicting`, never resolved quietly."""
    header = header_verdict(evidence)
    definite = ("contrast", "unenhanced")
    if header == "conflicting":
        status = "conflicting"
    elif header in definite and image.verdict in definite and header != image.verdict:
        status = "conflicting"
    elif header in definite:
        status = header
    elif image.verdict in definite:
        status = image.verdict
    else:
        status = "unknown"
    return ContrastStatus(status, header, image, evidence)


def sample_hu(paths: Sequence[Path], max_slices: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Up to `max_slices` evenly spaced slices of an axial series, in HU and LPS order.

    The I/O edge of image evidence: reads only the sampled files.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    normal = np.cross(
        np.asarray(headers[0].ImageOrientationPatient[:3], float),
        np.asarray(headers[0].ImageOrientationPatient[3:], float),
    )
    order = np.argsort([np.dot(np.asarray(h.ImagePositionPatient, float), normal) for h in headers])
    picks = order[
        np.unique(np.linspace(0, len(order) - 1, min(max_slices, len(order))).round().astype(int))
    ]
    slices = []
    for index in picks:
        ds = pydicom.dcmread(paths[index])
        hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        row, col = (
            np.asarray(ds.ImageOrientationPatient[:3], float),
            np.asarray(ds.ImageOrientationPatient[3:], float),
        )
        if row[0] < 0:  # columns run to the patient's right: mirror to LPS order
            hu = hu[:, ::-1]
        if col[1] < 0:  # rows run anteriorly
            hu = hu[::-1, :]
        slices.append(hu)
    spacing = tuple(float(v) for v in headers[0].PixelSpacing)
    return np.stack(slices), (spacing[0], spacing[1])
