"""SEG, SR and PDF: conformance (dciodvfy, dsrdump), re-read with highdicom, geometry."""

import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from myonode.app.demo.synthetic import Patient, abdomen_phantom, write_ct_series
from myonode.core.types import LabelMap
from myonode.core.volume import Geometry, load_nifti, load_series, with_positive_axes
from myonode.dicom.anatomy import STRUCTURES
from myonode.dicom.codes import QC_VALUES, QC_VERDICT
from myonode.encode import conform_copied_attributes
from myonode.encode.seg import segment_numbers
from myonode.infer.engines.threshold import ThresholdMuscleEngine
from myonode.measure.results import result_rows, rows_from_sr
from myonode.worker.runner import Runner

from support import require_tool, sr_texts


def dciodvfy_errors(path) -> list[str]:
    require_tool("dciodvfy")
    completed = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [
        line
        for line in (completed.stdout + completed.stderr).splitlines()
        if line.startswith("Error")
    ]


@pytest.fixture(scope="module")
def real_ct_outputs(tmp_path_factory):
    from myonode.app.demo.shared_data import shared_data_dir

    shared = shared_data_dir()
    if shared is None:
        pytest.skip("shared real data not found (set MYONODE_TEST_DATA to ../shared/data)")
    directory = tmp_path_factory.mktemp("real-ct")
    volume = with_positive_axes(load_nifti(shared / "ct" / "upper_abdomen_ct.nii.gz"))
    paths = write_ct_series(
        volume.array,
        volume.geometry,
        directory / "ct",
        Patient(sex="M", age_years=58, height_m=1.78, weight_kg=82.0),
        seed="outputs-real-ct",
    )
    output = Runner().run("ct_muscle", paths, directory / "out", ["test: real CT"])
    return paths, output


def test_real_ct_outputs_pass_dciodvfy_and_dsrdump(real_ct_outputs):
    _, output = real_ct_outputs
    names = sorted(f.path.name for f in output.files)
    assert names == ["report.dcm", "seg.dcm", "sr.dcm"]
    for file in output.files:
        assert dciodvfy_errors(file.path) == [], file.path.name
    require_tool("dsrdump")
    sr_path = next(f.path for f in output.files if f.path.name == "sr.dcm")
    rendered = subprocess.run(["dsrdump", str(sr_path)], capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    assert "Imaging Measurement Report" in rendered.stdout and "Volume" in rendered.stdout


def test_sr_numbers_equal_seg_voxels_times_voxel_volume(real_ct_outputs):
    paths, output = real_ct_outputs
    files = {f.path.name: f.path for f in output.files}
    seg = hd.seg.segread(files["seg.dcm"])
    sr = hd.sr.srread(files["sr.dcm"])
    source_volume = load_series(paths)
    voxel_mm3, sources = source_volume.geometry.voxel_volume_mm3, source_volume.datasets
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert groups
    measured = 0
    for group in groups:
        [number] = group.referenced_segment.referenced_segment_numbers
        [verdict] = group.get_qualitative_evaluations(name=QC_VERDICT)
        if verdict.value == QC_VALUES["fail"]:  # failed QC: kept in the SEG, not measured
            assert group.get_measurements(name=codes.SCT.Volume) == []
            continue
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in sources],
            segment_numbers=[number],
        )
        voxels = int(np.count_nonzero(pixels))
        [volume] = group.get_measurements(name=codes.SCT.Volume)
        assert volume.value == pytest.approx(voxels * voxel_mm3 / 1000, rel=1e-12)
        measured += 1
    assert measured


def test_every_number_reads_back_from_the_sr(real_ct_outputs):
    _, output = real_ct_outputs
    sr = pydicom.dcmread(next(f.path for f in output.files if f.path.name == "sr.dcm"))
    expected = result_rows(output.assessment)
    recovered = rows_from_sr(sr)
    assert [(r.structure, r.quantity, r.unit, r.text) for r in recovered] == [
        (r.structure, r.quantity, r.unit, r.text) for r in expected
    ]
    for got, want in zip(recovered, expected, strict=True):
        if want.value is None:
            assert got.value is None
        else:
            assert got.value == pytest.approx(want.value, rel=1e-9, abs=1e-9)
    quantities = {r.quantity for r in recovered}
    assert {"height", "bmi", "age", "sarcopenia_ewgsop2"} <= quantities


def test_pdf_report_is_in_the_same_study(real_ct_outputs):
    paths, output = real_ct_outputs
    pdf = pydicom.dcmread(next(f.path for f in output.files if f.path.name == "report.dcm"))
    source = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert pdf.StudyInstanceUID == source.StudyInstanceUID
    assert pdf.PatientID == source.PatientID
    assert pdf.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert bytes(pdf.EncapsulatedDocument[:5]) == b"%PDF-"
    assert len(pdf.EncapsulatedDocument) >= pdf.EncapsulatedDocumentLength


def test_generated_study_outputs_conform(tmp_path):
    """The same checks without shared data: a generated phantom."""
    array, geometry = abdomen_phantom(shape=(10, 96, 96), pixel_mm=3.0)
    paths = write_ct_series(array, geometry, tmp_path / "ct", seed="outputs-phantom")
    output = Runner().run("ct_muscle", paths, tmp_path / "out")
    for file in output.files:
        assert dciodvfy_errors(file.path) == [], file.path.name
    # Every segment has the colour the PDF draws it in (viewers warn when it is missing).
    seg = hd.seg.segread(tmp_path / "out" / "seg.dcm")
    assert all("RecommendedDisplayCIELabValue" in item for item in seg.SegmentSequence)
    # Each maximum CSA is a planar ROI outlined on the image it was measured on (what OHIF
    # draws), and these come first, so OHIF's SR viewport opens on one of them.
    sr = hd.sr.srread(tmp_path / "out" / "sr.dcm")
    found = [s for s in output.assessment.structures if s.voxel_count and s.max_area]
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == len(found) > 0
    ordered = sorted(paths, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for group, structure in zip(groups, found, strict=True):
        area = structure.max_area
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        assert region.value.shape == area.outline.shape
        image = pydicom.dcmread(ordered[area.slice_index])
        [selected_from] = region.ContentSequence
        reference = selected_from.ReferencedSOPSequence[0]
        assert reference.ReferencedSOPInstanceUID == image.SOPInstanceUID
        [measurement] = group.get_measurements()
        assert measurement.value == pytest.approx(area.area_cm2)
    [report] = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"]
    first = report.ContentSequence[0].ContentSequence
    assert any(item.ValueType == "SCOORD" for item in first)


def rotation(axis: int, degrees: float) -> np.ndarray:
    angle = np.radians(degrees)
    c, s = np.cos(angle), np.sin(angle)
    a, b = [i for i in range(3) if i != axis]
    matrix = np.eye(3)
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = c, -s, s, c
    return matrix


CORONAL = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float).T
SAGITTAL = np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]], float).T


@pytest.mark.parametrize(
    "directions",
    [np.eye(3), rotation(0, 25), CORONAL, SAGITTAL],
    ids=["axial", "oblique", "coronal", "sagittal"],
)
def test_seg_frames_sit_on_their_source_slices(tmp_path, directions):
    from myonode.encode import Device, OutputIdentity
    from myonode.encode.seg import build_segmentation

    array, _ = abdomen_phantom(shape=(6, 48, 48), pixel_mm=6.0)
    geometry = Geometry(np.array([-100.0, 50.0, 20.0]), directions, np.array([6.0, 6.0, 5.0]))
    paths = write_ct_series(array, geometry, tmp_path / "ct", seed="geometry")
    volume = load_series(paths)
    assert np.allclose(volume.geometry.directions, directions, atol=1e-5)
    label_map = ThresholdMuscleEngine().segment(volume)
    seg = build_segmentation(
        volume,
        label_map,
        ThresholdMuscleEngine.algorithm,
        OutputIdentity(str(volume.datasets[0].SeriesInstanceUID), "t", "1", 9100),
        Device(),
    )
    seg.save_as(tmp_path / "seg.dcm")
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    for k, source in enumerate(volume.datasets):
        frames = [
            f
            for f in seg.PerFrameFunctionalGroupsSequence
            if f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            == source.SOPInstanceUID
        ]
        if not label_map.labels[k].any():
            assert frames == []
            continue
        [frame] = frames
        position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        assert np.allclose(position, np.asarray(source.ImagePositionPatient, float), atol=1e-3)
        index = seg.PerFrameFunctionalGroupsSequence.index(frame)
        assert np.array_equal(seg.pixel_array[index].astype(bool), label_map.labels[k] == 1)
    orientation = np.asarray(
        seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient,
        float,
    )
    assert np.allclose(
        orientation, np.asarray(volume.datasets[0].ImageOrientationPatient, float), atol=1e-5
    )


def test_non_latin_text_survives_in_utf8(tmp_path):
    array, geometry = abdomen_phantom(shape=(6, 64, 64), pixel_mm=5.0)
    paths = write_ct_series(
        array,
        geometry,
        tmp_path / "ct",
        Patient(name="山田^太郎"),
        seed="utf8",
        extra={"SpecificCharacterSet": "ISO_IR 192", "SeriesDescription": "腹部 単純 3.0"},
    )
    output = Runner().run("ct_muscle", paths, tmp_path / "out", ["selected: 腹部 単純 3.0"])
    for file in output.files:
        ds = pydicom.dcmread(file.path)
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == "山田^太郎"
        assert dciodvfy_errors(file.path) == [], file.path.name
    sr = pydicom.dcmread(next(f.path for f in output.files if f.path.name == "sr.dcm"))
    assert "Series selection: selected: 腹部 単純 3.0" in sr_texts(sr)


def test_copied_attributes_invalid_for_their_vr_are_left_out(caplog):
    """A sender's PatientAge "62" (PS3.5 wants "062Y") or a StudyDate with dashes must not be
    copied into the outputs, and must not be guessed either."""
    ds = pydicom.Dataset()
    with pytest.warns(UserWarning):
        ds.PatientAge = "62"
        ds.StudyDate = "2020-01-31"
    ds.PatientWeight = "70.5"
    ds.PatientSex = "F"
    conform_copied_attributes([ds])
    assert "PatientAge" not in ds
    assert ds.StudyDate == ""
    assert ds.PatientWeight == 70.5 and ds.PatientSex == "F"
    assert ds.PatientID == "" and ds.AccessionNumber == ""  # absent Type 2: present, empty
    assert "PatientAge '62'" in caplog.text and "StudyDate '2020-01-31'" in caplog.text


def test_segments_are_numbered_for_the_labels_present_in_order():
    # Labels counted slice by slice, as np.unique finds them; absent ones get no segment.
    labels = np.zeros((4, 6, 6), dtype=np.uint8)
    labels[0, 1, 1], labels[3, 5, 5], labels[2, 0, 3] = 9, 4, 9
    keys = ("psoas_left", "psoas_right", "erector_spinae_left")
    structures = {n: STRUCTURES[key] for n, key in zip((2, 4, 9), keys, strict=True)}
    label_map = LabelMap(labels, structures)
    assert label_map.present() == set(np.unique(labels).tolist()) == {0, 4, 9}
    assert segment_numbers(label_map) == {4: 1, 9: 2}
    for values in ([4], [9, 0], [2, 300]):
        assert np.array_equal(label_map.mask_of(values), np.isin(labels, values))
    assert LabelMap(labels[:, :0], structures).present() == set()
