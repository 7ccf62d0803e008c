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
