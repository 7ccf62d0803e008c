"""Pure measurement functions: label map + geometry (+ intensities) -> numbers.

No I/O here, so every formula is unit-testable against hand-computed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .anatomy import Structure
from .volume import Geometry

MUSCLE_DENSITY_G_PER_CM3 = 1.06  # skeletal muscle density used by seed 000


@dataclass(frozen=True)
class StructureMeasurements:
    """Volume, mass and intensity statistics of one labelled structure."""

    structure: Structure
    label: int
    voxel_count: int
    volume_cm3: float
    mass_g: float
    mean_intensity: float | None
    sd_intensity: float | None


def volume_cm3(voxel_count: int, voxel_volume_mm3: float) -> float:
    return voxel_count * voxel_volume_mm3 / 1000.0


def mass_g(volume: float, density_g_per_cm3: float = MUSCLE_DENSITY_G_PER_CM3) -> float:
    return volume * density_g_per_cm3


def measure_structures(
    labels: np.ndarray,
    structures: Mapping[int, Structure],
    geometry: Geometry,
    intensities: np.ndarray | None = None,
) -> list[StructureMeasurements]:
    """Measure every structure in `structures` (empty ones included, with zero volume)."""
    voxel_volume = geometry.voxel_volume_mm3
    measured = []
    for label, structure in structures.items():
        mask = labels == label
        count = int(np.count_nonzero(mask))
        mean = sd = None
        if intensities is not None and count:
            values = intensities[mask].astype(np.float64)
            mean, sd = float(values.mean()), float(values.std(ddof=1)) if count > 1 else 0.0
        vol = volume_cm3(count, voxel_volume)
        measured.append(
            StructureMeasurements(
                structure=structure,
                label=label,
                voxel_count=count,
                volume_cm3=vol,
                mass_g=mass_g(vol),
                mean_intensity=mean,
                sd_intensity=sd,
            )
        )
    return measured
