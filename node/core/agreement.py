"""Agreement between a segmentation and a reference: Dice and volume error (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Agreement:
    """How one predicted structure compares with its reference."""

    dice: float
    predicted_cm3: float
    reference_cm3: float

    @property
    def volume_error_cm3(self) -> float:
        return self.predicted_cm3 - self.reference_cm3

    @property
    def volume_error_percent(self) -> float | None:
        if self.reference_cm3 == 0:
            return None
        return 100.0 * self.volume_error_cm3 / self.reference_cm3


def dice(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Sørensen–Dice coefficient of two boolean masks; 1.0 when both are empty."""
    predicted, reference = predicted.astype(bool), reference.astype(bool)
    total = int(predicted.sum()) + int(reference.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(predicted, reference).sum()) / total


def agreement(predicted: np.ndarray, reference: np.ndarray, voxel_volume_mm3: float) -> Agreement:
    return Agreement(
        dice=dice(predicted, reference),
        predicted_cm3=int(predicted.astype(bool).sum()) * voxel_volume_mm3 / 1000.0,
        reference_cm3=int(reference.astype(bool).sum()) * voxel_volume_mm3 / 1000.0,
    )
