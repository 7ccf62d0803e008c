"""Which Dixon channel an MR series holds, read from its header.

*Channels* (``water``, ``fat``, ``in``, ``opp``, ``ff`` = fat fraction) are read from
ImageType first (Siemens ``DERIVED\\PRIMARY\\DIXON\\WATER``, GE ``…\\WATER``/``…\\FAT``,
Philips ``…\\W``/``…\\F``/``…\\IP``/``…\\OP``), then from SeriesDescription/ProtocolName:
GE prefixes (``WATER: Ax LAVA-Flex``, ``InPhase:``, ``FatFrac: IDEAL IQ``), Siemens/UK Biobank
suffixes (``t1_vibe_dixon_tra_W``, ``_F``, ``_in``, ``_opp``) and Philips names (``mDIXON W``,
``mDIXON-Quant_FF``). Suffixes and bare words count only in a Dixon context (``dixon``,
``ideal``, ``flex``, ``vibe``, ``quant`` or DIXON in ImageType), so ``T2 fat sat`` or
``water excitation`` are never taken for Dixon channels. If ImageType and the description
disagree, the channel is ``conflicting`` and the series is not used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

CHANNELS = ("water", "fat", "in", "opp", "ff")
_TYPE_TOKENS = {
    "water": {"WATER", "W", "WATER IMAGE"},
    "fat": {"FAT", "F", "FAT IMAGE"},
    "in": {"IN_PHASE", "IN PHASE", "INPHASE", "IP", "IN"},
    "opp": {"OPP_PHASE", "OUT_PHASE", "OUT PHASE", "OPPOSED_PHASE", "OPPOSED PHASE", "OP", "OPP"},
    "ff": {"FF", "FAT_FRACTION", "FATFRACTION", "FAT FRACTION", "PDFF", "FP"},
}
_GE_PREFIX = {
    "water": r"^water\s*:",
    "fat": r"^fat\s*:",
    "in": r"^in[\s_-]?phase\s*:",
    "opp": r"^out[\s_-]?phase\s*:",
    "ff": r"^(fat[\s_-]?frac\w*|fatfrac)\s*:",
}
_B, _E = r"(?<![a-z0-9])", r"(?![a-z0-9])"
_WORDS = {
    "ff": _B + r"(fat[\s_-]*frac\w*|fatfrac|pdff|ff|fat[\s_-]*percent\w*)" + _E,
    "water": _B + r"(water|wasser)" + _E + r"(?![\s_-]*exc)",
    "fat": _B + r"(fat|fett)" + _E + r"(?![\s_-]*(sat|supp|frac|percent))",
    "in": _B + r"(in[\s_-]?phase|inphase|ip)" + _E,
    "opp": _B + r"(opp(osed)?([\s_-]?phase)?|out[\s_-]?(of[\s_-]?)?phase|outphase|op)" + _E,
}
_SUFFIX = {
    "water": r"[\s_-]w$",
    "fat": r"[\s_-]f$",
    "in": r"[\s_-](in|ip)$",
    "opp": r"[\s_-](opp|out|op)$",
    "ff": r"[\s_-](ff|fp)$",
}
_CONTEXT = re.compile(r"dixon|ideal|flex|vibe|quant|2pt|3pt|two[\s_-]?point|e[\s_-]?thrive")
_NOT_DIXON = re.compile(r"fat[\s_-]*(sat|supp)|fatsat|\bfs\b|spair|stir")


def channel(
    image_type: Sequence[str], description: str, protocol: str, tags: Mapping[str, Any]
) -> tuple[str | None, list[str]]:
    """(channel or None or "conflicting", evidence) for one MR series."""
    evidence: list[str] = []
    from_type = None
    for value in image_type[2:]:
        for name, tokens in _TYPE_TOKENS.items():
            if value in tokens:
                from_type = from_type or name
                evidence.append(f"ImageType value {value!r} → {name}")
    from_text = None
    is_dixon_type = "DIXON" in image_type or from_type is not None
    for source, text in (("SeriesDescription", description), ("ProtocolName", protocol)):
        lowered = text.lower().strip()
        if not lowered:
            continue
        found = None
        for name, pattern in _GE_PREFIX.items():
            if re.search(pattern, lowered):
                found, how = name, "GE prefix"
                break
        if found is None and (is_dixon_type or _CONTEXT.search(lowered)):
            if _NOT_DIXON.search(lowered):
                evidence.append(f"{source} {text!r} names fat suppression, not a Dixon channel")
                continue
            for name, pattern in _SUFFIX.items():
                if re.search(pattern, lowered):
                    found, how = name, "suffix (Siemens/UK Biobank style)"
                    break
            if found is None:
                for name, pattern in _WORDS.items():
                    if re.search(pattern, lowered):
                        found, how = name, "keyword"
                        break
        if found:
            evidence.append(f"{source} {text!r}: {how} → {found}")
            from_text = from_text or found
    if from_type and from_text and from_type != from_text:
        evidence.append(f"ImageType says {from_type}, the description says {from_text}")
        return "conflicting", evidence
    return from_type or from_text, evidence
