import numpy as np
import pytest

from myonode.core.agreement import agreement, dice


def test_dice_hand_computed():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 voxels
    b[1:3] = True  # 8 voxels, 4 shared
    assert dice(a, b) == pytest.approx(2 * 4 / 16)
    assert dice(np.zeros(3), np.zeros(3)) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0


def test_volume_error():
    a = np.ones((10, 10, 10), bool)
    b = np.zeros_like(a)
    b[:5] = True
    result = agreement(a, b, voxel_volume_mm3=8.0)
    assert result.predicted_cm3 == pytest.approx(8.0)
    assert result.reference_cm3 == pytest.approx(4.0)
    assert result.volume_error_percent == pytest.approx(100.0)
