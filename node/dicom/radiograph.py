"""Chest radiographs: view position and pixel spacing, read from the header.

The SARC-CXR model (seed 004) reads frontal chest radiographs; a lateral view must never reach
it. The view is read from ViewPosition, then the coded View Code Sequence, then keywords in
SeriesDescription/ProtocolName/ImageComments, then PatientOrientation (a frontal image has
L/R along its rows, a lateral one A/P). When sources disagree the view is ``conflicting``.

Spacing: PixelSpacing (calibrated to the patient) if present and non-zero, else
ImagerPixelSpacing (at the detector) divided by EstimatedRadiographicMagnificationFactor when
given, else none — recorded either way, because a spacing of 0 or a detector-plane spacing
silently taken for a patient-plane one would corrupt any physical size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

SPACING_TAGS = ("PixelSpacing", "ImagerPixelSpacing", "EstimatedRadiographicMagnificationFactor")

# SNOMED CT and legacy SNOMED-RT codes of CID 4010 (Projection Radiography Views).
_VIEW_CODES = {
    "399348003": "PA",
    "R-10214": "PA",
    "272479007": "AP",
    "R-10206": "AP",
    "399173006": "LATERAL",
    "R-10236": "LATERAL",
    "399198007": "LATERAL",
    "R-10232": "LATERAL",
}
_VIEW_POSITIONS = {
    "PA": "PA",
    "AP": "AP",
    "LL": "LATERAL",
    "RL": "LATERAL",
    "LAT": "LATERAL",
    "LATERAL": "LATERAL",
    "LLD": "decubitus",
    "RLD": "decubitus",
}
_B, _E = r"(?<![a-z0-9])", r"(?![a-z0-9])"
_KEYWORDS = (
    ("LATERAL", _B + r"(lat|lateral|latéral|seitlich|seitl|profil|perfil|laterale|ll|rl)" + _E),
    ("PA", _B + r"(pa|p\.a\.?|p-a|posteroanterior|postero-anterior|dorsoventral|d\.v\.)" + _E),
    ("AP", _B + r"(ap|a\.p\.?|a-p|anteroposterior|antero-posterior|ventrodorsal|liegend)" + _E),
)


def _text(tags: Mapping[str, Any], keyword: str) -> str:
    value = tags.get(keyword)
    if isinstance(value, list):
        return "\\".join(str(v) for v in value if not isinstance(v, dict))
    return "" if value is None or isinstance(value, dict) else str(value).strip()


def view_position(tags: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(PA / AP / LATERAL / frontal / decubitus / conflicting / unknown, evidence)."""
    found: list[tuple[str, str]] = []
    position = _text(tags, "ViewPosition").upper()
    if position in _VIEW_POSITIONS:
        found.append((_VIEW_POSITIONS[position], f"ViewPosition {position!r}"))
    for item in tags.get("ViewCodeSequence") or []:
        if not isinstance(item, dict):
            continue
        code = str(item.get("CodeValue", ""))
        meaning = str(item.get("CodeMeaning", "")).lower()
        view = _VIEW_CODES.get(code) or (
            "LATERAL"
            if "lateral" in meaning
            else "PA"
            if "postero-anterior" in meaning or "posteroanterior" in meaning
            else "AP"
            if "antero-posterior" in meaning or "anteroposterior" in meaning
            else None
        )
        if view:
            found.append((view, f"ViewCodeSequence {code} {item.get('CodeMeaning', '')!r}"))
    for keyword in ("SeriesDescription", "ProtocolName", "ImageComments"):
        text = _text(tags, keyword)
        for view, pattern in _KEYWORDS:
            match = re.search(pattern, text.lower())
            if match:
                found.append((view, f"{keyword} {text!r}"))
                break
    orientation = tags.get("PatientOrientation")
    if isinstance(orientation, list) and len(orientation) == 2:
        across = str(orientation[0]).upper()
        if across[:1] in ("A", "P"):
            found.append(("LATERAL", f"PatientOrientation {'/'.join(orientation)}"))
        elif across[:1] in ("L", "R"):
            found.append(("frontal", f"PatientOrientation {'/'.join(orientation)} (frontal)"))
    evidence = [why for _, why in found]
    views = {view for view, _ in found}
    specific = views - {"frontal"}
    if len(specific) > 1 or ("frontal" in views and specific & {"LATERAL", "decubitus"}):
        return "conflicting", evidence
    if specific:
        return specific.pop(), evidence
    return ("frontal" if views else "unknown"), evidence


def _pair(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, list) or len(value) != 2:
        return None
    try:
        pair = (float(value[0]), float(value[1]))
    except (TypeError, ValueError):
        return None
    return pair if all(np.isfinite(pair)) else None


def pixel_spacing(tags: Mapping[str, Any]) -> tuple[tuple[float, float] | None, str]:
    """((row, column) spacing in mm or None, where it came from)."""
    notes = []
    spacing = _pair(tags.get("PixelSpacing"))
    if spacing is not None and min(spacing) > 0:
        return spacing, "PixelSpacing"
    if spacing is not None:
        notes.append(f"PixelSpacing {spacing[0]:g}\\{spacing[1]:g} ignored (not positive)")
    imager = _pair(tags.get("ImagerPixelSpacing"))
    if imager is not None and min(imager) > 0:
        try:
            magnification = float(tags.get("EstimatedRadiographicMagnificationFactor") or 0)
        except (TypeError, ValueError):
            magnification = 0.0
        if magnification > 0:
            corrected = (imager[0] / magnification, imager[1] / magnification)
            return corrected, "; ".join(
                [*notes, f"ImagerPixelSpacing / magnification {magnification:g}"]
            )
        return imager, "; ".join([*notes, "ImagerPixelSpacing (detector plane, uncorrected)"])
    return None, "; ".join([*notes, "none: sizes in pixels only"])
