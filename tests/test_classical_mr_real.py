"""`classical-mr` on the real MR series beyond the labelled lumbar cases.

CHAOS upper-abdominal MR (T1 in/opposed phase, T2-SPIR) is unlabelled: the engine must not
take kidneys, liver or bowel for muscle. The check is independent of the engine: whatever it
labels must lie in the posterior third of the body on its slice (the back muscles, psoas and
quadratus lumborum lie there; liver, bowel and most of each kidney in front of it) and, on a
fat-suppressed series, it must label nothing. On the Dixon volunteer the landmarks it emits
for quality control must be where its own labels say. Skipped when the shared data is absent.
"""

from pathlib import Path

import numpy as np
import pytest

from myonode.core.volume import Volume, load_nifti
from myonode.infer.engines import create
from myonode.infer.engines.orientation import canonical

CHAOS = ("chaos11_t1_inphase", "chaos11_t1_outphase", "chaos11_t2spir")


@pytest.fixture(scope="module")
def mr_dir() -> Path:
    from myonode.app.demo.shared_data import shared_data_dir

    data = shared_data_dir()
    if data is None or not (data / "mr").is_dir():
        pytest.skip("shared real data not found (set MYONODE_TEST_DATA to ../shared/data)")
    return data / "mr"


@pytest.fixture(scope="module")
def engine():
    return create("classical-mr")


def _posterior_fraction(volume: Volume, labels: np.ndarray) -> np.ndarray:
    """Per labelled voxel, its position from the front (0) to the back (1) of the body on
    its slice (canonical view; the body is every voxel above a tenth of the median)."""
    view = canonical(volume.geometry)
    image, labelled = view.view(volume.array.astype(np.float32)), view.view(labels) > 0
    body = image > 0.1 * np.median(image[image > 0])
    out = []
    for k in np.nonzero(labelled.any(axis=(1, 2)))[0]:
        rows = np.nonzero(body[k].any(axis=1))[0]
        front, back = rows.min(), rows.max()
        out.append((np.nonzero(labelled[k])[0] - front) / max(back - front, 1))
    return np.concatenate(out) if out else np.zeros(0)


@pytest.mark.parametrize("series", CHAOS)
def test_chaos_labels_nothing_in_front_of_the_back(mr_dir, engine, series):
    volume = load_nifti(mr_dir / f"{series}.nii.gz")
    label_map = engine.segment(volume)
    where = _posterior_fraction(volume, label_map.labels)
    assert (where >= 2 / 3).all(), (
        f"{series}: {int((where < 2 / 3).sum())} labelled voxels in front of the posterior "
        f"third of the body; notes {label_map.notes}"
    )
    if not label_map.structures:
        assert len(label_map.notes) >= 2, "an empty result must say why"


@pytest.mark.parametrize("series", CHAOS[1:2])
def test_chaos_rolled_on_the_table_labels_nothing_in_front(mr_dir, engine, series):
    # The engine turns a rolled patient straight before its search (and the labels back):
    # on the rolled series it must still keep to the back of the body.
    from scipy import ndimage

    volume = load_nifti(mr_dir / f"{series}.nii.gz")
    view = canonical(volume.geometry)
    turned = ndimage.rotate(view.view(volume.array), 10.0, axes=(1, 2), reshape=False, order=1)
    rolled = Volume(np.ascontiguousarray(view.restore(turned)), volume.geometry)
    label_map = engine.segment(rolled)
    where = _posterior_fraction(rolled, label_map.labels)
    assert (where >= 2 / 3).all(), (series, int((where < 2 / 3).sum()), label_map.notes)
    assert any("rolled by" in note for note in label_map.notes), label_map.notes


def test_fat_suppressed_series_is_refused_with_a_note(mr_dir, engine):
    label_map = engine.segment(load_nifti(mr_dir / "chaos11_t2spir.nii.gz"))
    assert not label_map.labels.any() and not label_map.structures
    assert any("not bright" in note for note in label_map.notes), label_map.notes


def test_dixon_water_image_alone_is_refused(mr_dir, engine):
    # A NIfTI water image carries no header to say it is one: the image itself must.
    label_map = engine.segment(load_nifti(mr_dir / "dixon_lumbar_tum01_water.nii.gz"))
    assert not label_map.labels.any()
    assert any("not bright" in note for note in label_map.notes), label_map.notes


def test_dixon_landmarks_match_the_labels(mr_dir, engine):
    volume = load_nifti(mr_dir / "dixon_lumbar_tum01_water.nii.gz")
    volume.channels["fat"] = load_nifti(mr_dir / "dixon_lumbar_tum01_fat.nii.gz").array
    label_map = engine.segment(volume)
    marks = label_map.landmarks
    bottom, top = marks["column_bottom_slice"], marks["column_top_slice"]
    assert marks["psoas_top_slice"] <= top
    # L2-L5 on 29 slices of 4 mm: the column spans most of them.
    assert top - bottom + 1 >= 0.8 * volume.shape[0]
    values = {s.key: v for v, s in label_map.structures.items()}
    # This NIfTI is stored LPS-aligned: array rows run towards the back, columns to the left.
    for s in range(bottom, top + 1):
        row = marks[f"vertebral_body_{s}_row"]
        column = marks[f"vertebral_body_{s}_column"]
        radius_px = marks[f"vertebral_body_{s}_radius_mm"] / volume.geometry.spacing[1]
        for side, sign in (("left", 1), ("right", -1)):
            for key in (f"erector_spinae_{side}", f"multifidus_{side}"):
                rows, columns = np.nonzero(label_map.labels[s] == values[key])
                if not len(rows):
                    continue
                assert rows.min() >= row + radius_px, (s, key, rows.min(), row, radius_px)
                assert (np.sign(columns - column) == sign).all(), (s, key)
