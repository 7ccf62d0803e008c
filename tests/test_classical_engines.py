"""The classical engines' behaviour: identification, orientation, partial views, refusals.

Accuracy on real patients is in test_engine_accuracy.py; here generated images check what
must hold for any input: labels land on the source pixels whatever the stored axis order,
missing anatomy leads to absent landmarks and a note, and nothing is invented.
"""

import numpy as np
import pytest
from pydicom.dataset import Dataset

from myonode.app.demo.synthetic import abdomen_phantom
from myonode.core.volume import Geometry, Volume
from myonode.infer.engines import create
from myonode.infer.engines.body_wall import ANGLES, inner_thickness
from myonode.infer.engines.landmarks_ct import name_vertebrae, patient_roll, track_column
from myonode.infer.engines.orientation import OrientationError, canonical
from myonode.infer.engines.thigh_mr import thigh_compartments
from myonode.infer.engines.working_grid import WorkingGrid

from support.reference_cases import labels_on_grid


@pytest.fixture(scope="module")
def phantom() -> Volume:
    array, geometry = abdomen_phantom(shape=(24, 160, 160), pixel_mm=2.0, slice_mm=3.0)
    return Volume(array=array, geometry=geometry)


def flipped(volume: Volume, axis: int) -> Volume:
    """The same patient stored with one array axis reversed (geometry adjusted)."""
    g = volume.geometry
    geometry_axis = 2 - axis  # array (k, j, i) -> geometry columns (i, j, k)
    n = volume.array.shape[axis]
    origin = g.origin + g.directions[:, geometry_axis] * g.spacing[geometry_axis] * (n - 1)
    directions = g.directions.copy()
    directions[:, geometry_axis] *= -1
    return Volume(
        array=np.flip(volume.array, axis=axis).copy(),
        geometry=Geometry(origin=origin, directions=directions, spacing=g.spacing),
    )


@pytest.mark.parametrize("spec", ["classical-ct", "classical-mr"])
def test_engines_say_they_are_classical_research_tools(spec):
    algorithm = create(spec).algorithm
    assert algorithm.kind == "classical"
    assert algorithm.intended_use == "research"
    assert algorithm.name.startswith("myonode-classical")


def test_canonical_view_round_trips_every_axis_order():
    rng = np.random.default_rng(1)
    array = rng.normal(size=(3, 4, 5))
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        directions = np.eye(3)[:, order] * np.array([1, -1, 1])
        view = canonical(Geometry(np.zeros(3), directions, np.array([1.0, 2.0, 3.0])))
        assert np.array_equal(view.restore(view.view(array)), array)


def test_canonical_refuses_strongly_oblique_volumes():
    angle = np.radians(45)
    rotation = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    with pytest.raises(OrientationError):
        canonical(Geometry(np.zeros(3), rotation, np.ones(3)))


def test_ct_labels_follow_the_patient_not_the_storage_order(phantom):
    engine = create("classical-ct")
    reference = engine.segment(phantom)
    assert reference.structures, "the phantom's wall and back muscles must be found"
    for axis in (1, 2):
        other = engine.segment(flipped(phantom, axis))
        assert np.array_equal(np.flip(other.labels, axis=axis), reference.labels)


def test_ct_left_and_right_are_the_patients(phantom):
    labels = create("classical-ct").segment(phantom)
    keys = {s.key: value for value, s in labels.structures.items()}
    # Geometry of the phantom is LPS-aligned: larger column index = patient's left.
    left = np.nonzero(labels.labels == keys["erector_spinae_left"])[2].mean()
    right = np.nonzero(labels.labels == keys["erector_spinae_right"])[2].mean()
    assert left > right


def test_ct_without_lungs_or_levels_has_no_region_and_says_why(phantom):
    labels = create("classical-ct").segment(phantom)
    assert "region_top_slice" not in labels.landmarks
    assert "l3_slice" not in labels.landmarks
    assert labels.landmarks["region_complete"] == 0
    text = " ".join(labels.notes)
    assert "Lung base not in view" in text and "L3 not identified" in text
    assert "research use only" in text


def test_ct_of_air_finds_nothing_and_says_so():
    geometry = Geometry(np.zeros(3), np.eye(3), np.array([2.0, 2.0, 3.0]))
    volume = Volume(array=np.full((6, 40, 40), -1000.0, np.float32), geometry=geometry)
    labels = create("classical-ct").segment(volume)
    assert not labels.structures and not labels.labels.any()
    assert any("Vertebral column not found" in note for note in labels.notes)


def test_ct_on_a_partial_field_of_view_keeps_what_it_sees(phantom):
    # Only the patient's left half: no midline, the column cut in half.
    half = Volume(array=phantom.array[:, :, 80:].copy(), geometry=phantom.geometry)
    labels = create("classical-ct").segment(half)
    assert labels.labels.shape == half.array.shape
    assert "l3_slice" not in labels.landmarks
    for structure in labels.structures.values():
        assert structure.side != "right" or structure.key.startswith("other")
    assert any("cuts the patient's right side" in note for note in labels.notes)


def test_mr_without_lumbar_or_thigh_anatomy_measures_nothing():
    rng = np.random.default_rng(0)
    geometry = Geometry(np.zeros(3), np.eye(3), np.array([1.0, 1.0, 4.0]))
    volume = Volume(array=rng.uniform(0, 100, (5, 64, 64)).astype(np.float32), geometry=geometry)
    labels = create("classical-mr").segment(volume)
    assert not labels.structures
    assert any("Neither a lumbar station" in note for note in labels.notes)


def test_mr_refuses_a_lone_dixon_water_image():
    geometry = Geometry(np.zeros(3), np.eye(3), np.array([1.0, 1.0, 4.0]))
    header = Dataset()
    header.ImageType = ["DERIVED", "PRIMARY", "DIXON", "WATER"]
    header.SeriesDescription = "t1_vibe_dixon_W"
    volume = Volume(
        array=np.ones((5, 32, 32), np.float32), geometry=geometry, datasets=[header] * 5
    )
    labels = create("classical-mr").segment(volume)
    assert not labels.structures
    assert any("water image without its fat image" in note for note in labels.notes)


def thigh_phantom() -> tuple[np.ndarray, np.ndarray]:
    """Two legs on a 1.5 mm grid: fat-bright skin fat, dark muscle, a femur with bright
    marrow and dark cortex, 10 slices. Canonical axes: j posterior, i patient left."""
    nj, ni = 160, 260
    jj, ii = np.mgrid[0:nj, 0:ni] * 1.5
    slice_ = np.zeros((nj, ni), np.float32)
    for centre_i in (100.0, 290.0):
        r = np.hypot(jj - 120.0, ii - centre_i)
        slice_[r <= 90] = 500.0  # subcutaneous fat
        slice_[r <= 75] = 40.0  # muscle
        femur = np.hypot(jj - 125.0, ii - centre_i)
        slice_[femur <= 16] = 30.0  # cortex
        slice_[femur <= 10] = 480.0  # marrow
    body = np.repeat((slice_ > 0)[np.newaxis], 10, axis=0)
    likeness = np.repeat((slice_ / 500.0)[np.newaxis], 10, axis=0)
    return likeness, body


def test_thigh_compartments_sit_around_their_femur():
    likeness, body = thigh_phantom()
    masks, measured = thigh_compartments(likeness, body, np.array([5.0, 1.5, 1.5]), 0.45)
    assert measured == 10
    for side, femur_i in (("right", 100.0 / 1.5), ("left", 290.0 / 1.5)):
        femur_j = 125.0 / 1.5
        anterior = np.nonzero(masks[f"anterior_{side}"])
        posterior = np.nonzero(masks[f"posterior_{side}"])
        medial = np.nonzero(masks[f"medial_{side}"])
        assert anterior[1].mean() < femur_j < posterior[1].mean()
        towards_midline = medial[2].mean() - femur_i
        assert towards_midline > 0 if side == "right" else towards_midline < 0


def test_levels_are_named_only_when_the_anchors_agree():
    present = np.ones(60, dtype=bool)
    boundaries = [5, 15, 25, 35, 45, 55]  # six levels, five whole vertebrae between them
    # 12th rib head above the top level (56..59): T12 there, L1..L5 the five below.
    named, _notes = name_vertebrae(boundaries, present, rib_head=57, sacrum_top=None)
    assert [v.name for v in named] == ["L1", "L2", "L3", "L4", "L5"]
    assert all(v.complete for v in named)
    assert (named[2].bottom, named[2].top) == (26, 34)
    # The sacrum right below the lowest level agrees: same names.
    agreed, notes = name_vertebrae(boundaries, present, rib_head=57, sacrum_top=3)
    assert agreed == named and "agree" in notes[0]
    # A sacrum one vertebra higher contradicts the rib: nothing named.
    refused, notes = name_vertebrae(boundaries, present, rib_head=57, sacrum_top=13)
    assert refused == [] and "disagree" in notes[0]
    # No anchor at all: nothing named, and the note says why.
    none, notes = name_vertebrae(boundaries, present, rib_head=None, sacrum_top=None)
    assert none == [] and "neither" in notes[0]


def test_wall_follows_fat_and_bridges_an_organ_against_it():
    depth_bins = 60
    profile = np.zeros((ANGLES, depth_bins))
    profile[:, 11:] = 1.0  # everywhere fat starts 11 mm below the outer wall surface
    profile[100:140, 11:] = 0.0  # ... except where an organ touches the wall
    profile[100:140, 40:] = 1.0  # and the fat only starts behind the organ
    thickness = inner_thickness(profile, 3.0, 30.0)
    assert np.all(np.abs(thickness[:90] - 10.0) <= 1.0)
    assert thickness[100:140].max() <= 16.0
    # Slices are solved together in one pass, each as if alone.
    deeper = np.roll(profile, 4, axis=1)
    both = inner_thickness(np.stack([profile, deeper]), 3.0, 30.0)
    assert np.array_equal(both[0], thickness)
    assert np.array_equal(both[1], inner_thickness(deeper, 3.0, 30.0))
    assert not np.array_equal(both[0], both[1])


def test_reference_labels_follow_geometry_across_flipped_grids():
    geometry = Geometry(np.zeros(3), np.eye(3), np.array([1.0, 2.0, 3.0]))
    labels = np.zeros((4, 5, 6), dtype=np.uint8)
    labels[1, 2, 3] = 7
    source = Volume(array=labels, geometry=geometry)
    stored = flipped(source, 1)
    assert np.array_equal(labels_on_grid(stored, geometry, labels.shape), labels)


def test_working_grid_bins_fine_axes_and_maps_labels_back_to_every_source_voxel():
    # 0.7 mm pixels and 1 mm slices: binned by about 2 in-plane and 3 through-plane.
    grid = WorkingGrid.for_source((9, 10, 10), np.array([1.0, 0.7, 0.7]))
    assert grid.shape == (3, 5, 5)
    assert np.allclose(grid.spacing, [3.0, 1.4, 1.4])
    source = np.arange(9 * 10 * 10, dtype=np.float32).reshape(9, 10, 10)
    assert grid.down(source)[0, 0, 0] == pytest.approx(source[:3, :2, :2].mean())
    labels = np.zeros(grid.shape, dtype=np.uint8)
    labels[:, 1:4, 1:4] = 5
    hu = np.full(source.shape, 40.0, np.float32)
    hu[:, 2, 2] = -100.0  # fat in a working voxel on the label's border: left out
    hu[:, 4, 4] = -100.0  # fat in the label's inner working voxel: kept (intramuscular)
    back = grid.up(labels, hu, -29.0)
    assert back.shape == source.shape
    assert back[0, 3, 3] == 5 and back[0, 2, 2] == 0 and back[0, 0, 0] == 0
    assert back[0, 4, 4] == 5
    # A 1 mm pixel series is not binned in-plane (less than two pixels per bin).
    assert WorkingGrid.for_source((20, 8, 8), np.array([2.0, 0.98, 0.98])).identity


def test_femoral_heads_below_the_sacrum_are_not_taken_for_the_column():
    # 3 mm slices, k superior: the column from k=38 up, slightly sloping; below it, runs of
    # detections on one femoral head and then the other (60 mm either side of the midline).
    nk = 80
    detections = np.full((nk, 2), np.nan)
    detections[38:, 0] = 60.0 + 0.1 * np.arange(nk - 38)
    detections[38:, 1] = 61.0
    detections[36:38] = np.nan  # the lower sacrum: too thin for a vertebral body
    detections[2:10] = (62.0, 41.0)
    detections[10:36] = (58.0, 84.0)
    spacing = np.array([3.0, 3.0, 3.0])
    spine = track_column(detections, np.full(nk, 18.0), spacing)
    assert spine.present[38:].all()
    assert not spine.present[:38].any()
    # The patient's roll beyond the column is that at its end, not a median of nothing.
    bone = np.zeros((nk, 101, 122), dtype=bool)
    bone[38:, 88:92, 59:64] = True  # spinous processes, 9 mm to the patient's left
    roll = patient_roll(bone, spine, spacing)
    assert np.isfinite(roll).all()
    assert roll[0] == pytest.approx(roll[38])


@pytest.mark.parametrize("slices", [1.1, 0.5, 0.3])
def test_working_grid_bins_slices_bit_for_bit_as_reduceat(slices):
    # Slices are summed one after another (fast) where that is reduceat's order: up to 8
    # per bin; the working grid is the same to the last bit, so the labels are too.
    rng = np.random.default_rng(5)
    source = rng.normal(40.0, 300.0, (40, 12, 14)).astype(np.float32)[::-1]
    grid = WorkingGrid.for_source(source.shape, np.array([slices, 0.7, 0.7]))
    expected = source
    for axis in range(3):
        index = grid._source_to_working(axis)
        starts = np.nonzero(np.r_[True, np.diff(index) > 0])[0]
        counts = np.diff(np.r_[starts, len(index)]).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = len(counts)
        summed = np.add.reduceat(expected, starts, axis=axis, dtype=np.float32)
        expected = summed / counts.reshape(shape)
    assert np.array_equal(grid.down(source), expected)
