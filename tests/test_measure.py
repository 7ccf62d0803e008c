"""Measurement formulas against hand-computed and analytic values."""

import math

import numpy as np
import pytest

from myonode.core.volume import Geometry
from myonode.dicom.anatomy import PSOAS, STRUCTURES
from myonode.measure.structures import (
    fat_fraction_percent,
    mass_g,
    maximum_area,
    measure_structures,
    outline,
    volume_cm3,
)


def grid(spacing=(1.0, 1.0, 1.0), directions=None) -> Geometry:
    directions = np.eye(3) if directions is None else np.asarray(directions, float)
    return Geometry(np.zeros(3), directions, np.asarray(spacing, float))


def test_volume_and_mass_hand_computed():
    assert volume_cm3(1000, 8.0) == pytest.approx(8.0)
    assert mass_g(10.0) == pytest.approx(10.6)


def test_ellipsoid_volume_within_one_percent():
    a, b, c = 40.0, 30.0, 20.0  # semi-axes, mm
    spacing = np.array([0.8, 0.7, 1.5])  # i, j, k
    k, j, i = np.mgrid[-16:17, -50:51, -60:61]
    x, y, z = i * spacing[0], j * spacing[1], k * spacing[2]
    labels = ((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2 <= 1).astype(np.uint8)
    [measured] = measure_structures(labels, {1: PSOAS[0]}, grid(spacing))
    analytic = 4 / 3 * math.pi * a * b * c / 1000
    assert measured.volume_cm3 == pytest.approx(analytic, rel=0.01)
    assert measured.mass_g == pytest.approx(measured.volume_cm3 * 1.06)
    # Largest axial cross-section of the ellipsoid is pi*a*b at z = 0.
    assert measured.max_area.area_cm2 == pytest.approx(math.pi * a * b / 100, rel=0.01)
    assert measured.max_area.slice_index == 16
    assert measured.max_area.z_mm == pytest.approx(16 * 1.5)


def test_attenuation_and_fat_fraction_statistics():
    labels = np.zeros((1, 2, 3), np.uint8)
    labels[0, 0, :] = 1
    hu = np.array([[[10, 20, 30], [999, 999, 999]]], float)
    [m] = measure_structures(labels, {1: STRUCTURES["erector_spinae_left"]}, grid(), attenuation=hu)
    assert m.attenuation.mean == pytest.approx(20.0)
    assert m.attenuation.sd == pytest.approx(10.0)  # sample SD of 10, 20, 30
    water = np.array([[[80, 50, 100], [1, 1, 1]]], float)
    fat = np.array([[[20, 50, 0], [1, 1, 1]]], float)
    assert fat_fraction_percent(water, fat)[0, 0].tolist() == [20.0, 50.0, 0.0]
    [m] = measure_structures(labels, {1: PSOAS[0]}, grid(), water=water, fat=fat)
    assert m.fat_fraction.mean == pytest.approx(70 / 3)


def test_l3_area_and_non_axial_series_have_no_csa():
    labels = np.zeros((3, 10, 10), np.uint8)
    labels[1, :5, :4] = 1  # 20 voxels on slice 1
    [m] = measure_structures(labels, {1: PSOAS[0]}, grid((0.5, 2.0, 3.0)), l3_slice=1)
    assert m.area_at_l3_cm2 == pytest.approx(20 * 0.5 * 2.0 / 100)
    sagittal = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float).T  # slices along x
    assert maximum_area(labels == 1, grid(directions=sagittal)) is None


def test_empty_structure_is_measured_as_zero():
    [m] = measure_structures(np.zeros((2, 2, 2), np.uint8), {1: PSOAS[1]}, grid())
    assert m.voxel_count == 0 and m.volume_cm3 == 0 and m.max_area is None


def shoelace(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_each_structure_measured_in_its_box_as_on_the_whole_volume():
    # Structures in separate corners, one split in two parts, one absent, one label absent
    # from `structures`: every figure equals the whole-volume computation.
    rng = np.random.default_rng(3)
    labels = np.zeros((9, 30, 40), np.uint8)
    labels[1:4, 2:9, 3:12] = 1
    labels[5:8, 20:28, 25:38] = 2
    labels[2, 20:23, 2:5] = 2
    labels[6:9, 1:6, 30:33] = 4
    labels[rng.random(labels.shape) < 0.05] = 0
    hu = rng.normal(40.0, 20.0, labels.shape)
    water, fat = rng.random(labels.shape) * 100, rng.random(labels.shape) * 30
    keys = ["erector_spinae_left", "erector_spinae_right", "psoas_left"]
    structures = {label: STRUCTURES[key] for label, key in zip((1, 2, 3), keys, strict=True)}
    geometry = grid((0.7, 0.8, 2.0))
    measured = measure_structures(
        labels, structures, geometry, attenuation=hu, water=water, fat=fat, l3_slice=6
    )
    fractions = fat_fraction_percent(water, fat)
    for m in measured:
        mask = labels == m.label
        assert m.voxel_count == mask.sum()
        assert m.area_at_l3_cm2 == mask[6].sum() * (0.7 * 0.8) / 100
        if not mask.any():
            assert m.voxel_count == 0 and m.attenuation is None and m.max_area is None
            continue
        assert m.attenuation.mean == hu[mask].mean()
        assert m.attenuation.sd == hu[mask].std(ddof=1)
        assert m.fat_fraction.mean == fractions[mask].mean()
        areas = mask.sum(axis=(1, 2))
        assert m.max_area.slice_index == int(np.argmax(areas))
        assert m.max_area.area_cm2 == areas.max() * (0.7 * 0.8) / 100
        assert np.array_equal(m.max_area.outline, outline(mask[m.max_area.slice_index]))
    assert [m.voxel_count > 0 for m in measured] == [True, True, False]


@pytest.mark.parametrize("shape", ["ring", "two parts", "at the border", "single pixel"])
def test_outline_encloses_the_region_with_its_holes_and_parts(shape):
    j, i = np.mgrid[0:60, 0:60]
    r2 = (j - 30) ** 2 + (i - 30) ** 2
    mask = {
        "ring": (r2 <= 25**2) & (r2 > 12**2),
        "two parts": ((j - 12) ** 2 + (i - 12) ** 2 <= 64) | ((j - 45) ** 2 + (i - 40) ** 2 <= 100),
        "at the border": j < 7,
        "single pixel": (j == 3) & (i == 4),
    }[shape]
    line = outline(mask)
    assert np.array_equal(line[0], line[-1])  # closed
    # The polygon's area is the pixel count (each convex corner is cut by half a pixel²/4).
    assert shoelace(line) == pytest.approx(mask.sum(), abs=0.5 + 0.01 * mask.sum())
    # (column, row) with (0, 0) at the top left corner of the top left pixel.
    rows, columns = np.nonzero(mask)
    assert line[:, 0].min() == pytest.approx(columns.min(), abs=0.5)
    assert line[:, 1].max() == pytest.approx(rows.max() + 1, abs=0.5)


def test_maximum_area_carries_the_outline_of_its_slice():
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[2, 1:5, 2:7] = 1
    area = maximum_area(labels == 1, grid())
    assert area.slice_index == 2 and area.outline is not None
    assert shoelace(area.outline) == pytest.approx(20, abs=0.5)


def test_outline_bridges_are_the_shortest_links_between_parts():
    mask = np.zeros((20, 80), bool)
    for left in (2, 30, 58):  # three parts in a row, 18 pixels apart
        mask[5:15, left : left + 10] = True
    line = outline(mask)
    segments = np.hypot(*np.diff(line, axis=0).T)
    assert segments.max() <= 18 + 1  # neighbour to neighbour, never first to last
    assert shoelace(line) == pytest.approx(3 * 100, abs=3 * 0.5)
