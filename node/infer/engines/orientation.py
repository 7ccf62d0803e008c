"""Axial arrays in one patient orientation, so anatomy rules can say "posterior" or "left".

Engines reason about anatomy (the spine is posterior, the liver on the right). Scanners and
NIfTI files store axes in any order and sign, so an engine first views the array in the
canonical orientation, works there, and maps its labels back with `Canonical.restore`. Only
axis permutations and flips are applied (nearest patient axis): voxels are never resampled,
so labels land exactly on the source pixels.

Canonical array axes (k, j, i): k increases towards the head (superior), j towards the back
(posterior), i towards the patient's left. An axial slice `array[k]` then looks as a
radiologist reads it: anterior at the top, the patient's right on the image's left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from myonode.core.volume import Geometry

# LPS axis that each canonical array axis (k, j, i) follows: +S, +P, +L.
_CANONICAL_LPS_AXES = (2, 1, 0)


class OrientationError(ValueError):
    """The volume is not close enough to axial for the anatomy rules to hold."""


@dataclass(frozen=True)
class Canonical:
    """How a source array maps to the canonical orientation and back."""

    order: tuple[int, int, int]  # source array axis feeding canonical axis (k, j, i)
    flips: tuple[bool, bool, bool]  # whether canonical axis is reversed from that source axis
    spacing: np.ndarray  # (k, j, i) voxel size in mm, canonical axes
    obliquity_degrees: float

    def view(self, array: np.ndarray) -> np.ndarray:
        """The canonical view of a source-ordered array (same shape conventions)."""
        out = np.transpose(array, self.order)
        for axis, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis=axis)
        return out

    def restore(self, canonical: np.ndarray) -> np.ndarray:
        """Map a canonical array back to the source array's axes (inverse of `view`)."""
        out = canonical
        for axis, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis=axis)
        return np.ascontiguousarray(np.transpose(out, np.argsort(self.order)))


def canonical(geometry: Geometry, max_obliquity_degrees: float = 30.0) -> Canonical:
    """The permutation and flips that bring a volume of `geometry` to canonical axes.

    Array axis 0 is the geometry's k axis (directions[:, 2]), axis 1 its j, axis 2 its i.
    Refuses volumes whose slice axis is more than `max_obliquity_degrees` from head-feet.
    """
    axis_dirs = [geometry.directions[:, 2], geometry.directions[:, 1], geometry.directions[:, 0]]
    axis_spacing = [geometry.spacing[2], geometry.spacing[1], geometry.spacing[0]]
    order: list[int] = []
    flips: list[bool] = []
    worst = 0.0
    for lps_axis in _CANONICAL_LPS_AXES:
        weights = [abs(d[lps_axis]) if n not in order else -1.0 for n, d in enumerate(axis_dirs)]
        source = int(np.argmax(weights))
        cosine = float(axis_dirs[source][lps_axis])
        worst = max(worst, float(np.degrees(np.arccos(min(1.0, abs(cosine))))))
        order.append(source)
        flips.append(cosine < 0)
    if worst > max_obliquity_degrees:
        raise OrientationError(
            f"volume axes are up to {worst:.0f} degrees oblique; the engine needs axial images"
        )
    return Canonical(
        order=(order[0], order[1], order[2]),
        flips=(flips[0], flips[1], flips[2]),
        spacing=np.array([axis_spacing[n] for n in order], dtype=float),
        obliquity_degrees=worst,
    )
