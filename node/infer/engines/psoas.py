"""The psoas major along the column: followed from caudal slices upward, oval in section.

The psoas arises from the sides of the vertebral bodies T12-L4 and their transverse
processes and grows caudally as fibres join it, so going up its cross-section lies within
the one below, a little smaller. Whatever a slice adds outside the slice below is
something else: the diaphragmatic crura beside T12-L2 (thin, curved, in front of or
lateral to the body), the arcuate ligaments and the quadratus lumborum behind it. Its
section is a convex oval; thin tags on it (vessels, the crus, the edge of a disc) are cut.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from myonode.infer.engines.morphology import disk


def oval_section(mask: np.ndarray, spacing_ji: tuple[float, float]) -> np.ndarray:
    """One slice's psoas without tags thinner than half its own width."""
    if not mask.any():
        return mask
    inscribed = float(ndimage.distance_transform_edt(mask, sampling=spacing_ji).max())
    element = disk(0.5 * inscribed, spacing_ji)
    opened = ndimage.binary_opening(mask, element)
    return opened if opened.any() else mask


def follow_upward(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The psoas of every slice kept within the psoas of the slices below, dilated by how
    far its border moves between slices. The slices up to 8 mm below count together, so
    one slice that found too little does not cut off the rest; above the slice where the
    psoas ends nothing is psoas."""
    sj, si = float(spacing[1]), float(spacing[2])
    margin = max(sj, si, 2.0 + 0.5 * float(spacing[0]))
    element = disk(margin, (sj, si))
    reach = max(1, int(8.0 / float(spacing[0])))
    out = np.zeros_like(mask)
    present = np.nonzero(mask.any(axis=(1, 2)))[0]
    if not len(present):
        return out
    start = int(present[0])
    out[start] = mask[start]
    for k in range(start + 1, mask.shape[0]):
        below = out[max(start, k - reach) : k].any(axis=0)
        if not below.any():
            break
        out[k] = mask[k] & ndimage.binary_dilation(below, element)
    return out


def psoas_along_z(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """One side's psoas (canonical slices, k superior): oval sections followed upward."""
    sj, si = float(spacing[1]), float(spacing[2])
    sections = np.stack([oval_section(m, (sj, si)) for m in mask])
    return follow_upward(sections, spacing)


def _parts_touching(candidates: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The connected parts of `candidates` (one slice) that overlap `seeds`."""
    labelled, _count = ndimage.label(candidates)
    keep = np.unique(labelled[seeds & candidates])
    return np.isin(labelled, keep[keep != 0])


def track_psoas(
    raw: np.ndarray,
    candidates: np.ndarray,
    spacing: np.ndarray,
    lowest: int = 0,
    highest: int | None = None,
) -> np.ndarray:
    """One side's psoas on CT (canonical slices, k superior, from `lowest` to `highest`),
    followed through the slices where the per-slice search (`raw`) missed it.

    It starts on the lowest slice where the search found at least half of its largest
    section (the psoas is thickest low in the lumbar spine; a smaller find below that is
    something else, or a sliver). Upward, as `follow_upward` (the psoas narrows towards
    its origins), except that a slice whose search kept less than half of the section
    below while the search finds it again within 9 mm above (a fat streak, a vessel
    across it, a disc where the muscle range is tight) takes the muscle-attenuation
    tissue (`candidates`) overlapping the section below, within the border movement.
    Downward the psoas widens towards the pelvic brim
    and lies ever further from the vertebral body, where the search does not reach: a
    slice whose search kept less than half of the section above takes the tissue that
    overlaps that section, within the same border movement. Thin tags are cut
    (`oval_section`).
    """
    sj, si = float(spacing[1]), float(spacing[2])
    margin = max(sj, si, 2.0 + 0.5 * float(spacing[0]))
    element = disk(margin, (sj, si))
    reach = max(1, int(8.0 / float(spacing[0])))
    bridge = max(reach, int(9.0 / float(spacing[0])))
    top = raw.shape[0] - 1 if highest is None else highest
    sections = np.stack([oval_section(m, (sj, si)) for m in raw])
    sections[:lowest] = False
    sections[top + 1 :] = False
    out = np.zeros_like(raw)
    areas = sections.sum(axis=(1, 2))
    if not areas.any():
        return out
    start = int(np.nonzero(areas >= 0.5 * areas.max())[0][0])
    out[start] = sections[start]
    for k in range(start + 1, top + 1):
        below = out[max(start, k - reach) : k].any(axis=0)
        if not below.any():
            break
        near = ndimage.binary_dilation(below, element)
        out[k] = sections[k] & near
        bridged = sections[k + 1 : k + 1 + bridge].any(axis=0) & near
        if out[k].sum() < 0.5 * out[k - 1].sum() and bridged.any():
            grown = _parts_touching(candidates[k] & near, below) | out[k]
            out[k] = oval_section(grown, (sj, si))
    for k in range(start - 1, lowest - 1, -1):
        above = out[k + 1]
        if not above.any():
            break
        near = ndimage.binary_dilation(above, element)
        out[k] = sections[k] & near
        if out[k].sum() < 0.5 * above.sum():
            grown = _parts_touching((candidates[k] | sections[k]) & near, above)
            out[k] = oval_section(grown, (sj, si))
    return out
