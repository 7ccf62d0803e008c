"""Enhanced and Legacy Converted Enhanced images: assembled from their functional groups,
routed and measured like single-frame series, with the SEG and SR referencing source frames.

Sources: a Legacy Converted Enhanced CT built by highdicom from the node's synthetic CT (so
the single-frame series is the reference it must agree with), and pydicom-data's real Enhanced
CT (eCT_Supplemental.dcm)."""

import copy
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import LegacyConvertedEnhancedCTImageStorage, MRImageStorage
from pynetdicom import AE
from test_outputs import dciodvfy_errors

from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.core.volume import VolumeError, load_series, volume_from_multiframe
from myonode.dicom.headers import routing_tags
from myonode.dicom.uids import derived_uid
from myonode.route.series import describe
from myonode.worker.runner import Runner

from support import require_tool, sql, wait_until


@pytest.fixture
def legacy_ct(tmp_path):
    """(single-frame paths, the Legacy Converted Enhanced CT's path) of one synthetic CT."""
    array, geometry = abdomen_phantom(shape=(8, 64, 64), pixel_mm=5.0, slice_mm=5.0)
    paths = write_ct_series(array, geometry, tmp_path / "ct", seed=f"enhanced-{tmp_path.name}")
    legacy = hd.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(p) for p in reversed(paths)],  # frames head to feet: order matters
        series_instance_uid=derived_uid("enhanced", tmp_path.name, "series"),
        series_number=301,
        sop_instance_uid=derived_uid("enhanced", tmp_path.name, "instance"),
        instance_number=1,
    )
    path = tmp_path / "enhanced" / "legacy.dcm"
    path.parent.mkdir()
    legacy.save_as(path)
    return paths, path


def test_legacy_converted_ct_assembles_as_its_single_frame_series(legacy_ct):
    paths, path = legacy_ct
    single = load_series(paths)
    enhanced = load_series([path])
    assert enhanced.shape == single.shape
    assert np.array_equal(enhanced.array, single.array)
    assert np.allclose(enhanced.geometry.affine, single.geometry.affine)
    assert enhanced.slices_are_sources and enhanced.frame_numbers == list(range(8, 0, -1))


def test_legacy_converted_ct_outputs_reference_source_frames(legacy_ct, tmp_path):
    _, path = legacy_ct
    source = pydicom.dcmread(path)
    output = Runner().run("ct_muscle", [path], tmp_path / "out", ["test: legacy converted"])
    files = {f.path.name: f.path for f in output.files}
    assert sorted(files) == ["report.dcm", "seg.dcm", "sr.dcm"]
    for name, file in files.items():
        assert dciodvfy_errors(file) == [], name
    seg = pydicom.dcmread(files["seg.dcm"])
    positions = {
        n: np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float)
        for n, f in enumerate(source.PerFrameFunctionalGroupsSequence, start=1)
    }
    assert len(seg.PerFrameFunctionalGroupsSequence) > 0
    for frame in seg.PerFrameFunctionalGroupsSequence:
        [reference] = frame.DerivationImageSequence[0].SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        number = int(reference.ReferencedFrameNumber)
        position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        assert np.allclose(position, positions[number], atol=1e-3)
    sr = pydicom.dcmread(files["sr.dcm"])
    referenced = [
        item
        for item in hd.sr.utils.find_content_items(sr, recursive=True)
        if item.ValueType == "IMAGE" or "ReferencedSOPSequence" in item
    ]
    frames = [
        int(ref.ReferencedFrameNumber)
        for item in referenced
        for ref in item.get("ReferencedSOPSequence", [])
        if "ReferencedFrameNumber" in ref
    ]
    assert frames and all(1 <= f <= 8 for f in frames)


def test_real_enhanced_ct_routes_and_assembles():
    path = get_testdata_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    tags = routing_tags(ds)
    info = describe(
        [
            {
                "sop_uid": str(ds.SOPInstanceUID),
                "series_uid": str(ds.SeriesInstanceUID),
                "study_uid": str(ds.StudyInstanceUID),
                "sop_class_uid": str(ds.SOPClassUID),
                "tags": tags,
                "path": path,
            }
        ]
    )
    assert info.multiframe and info.instance_count == 2
    assert info.pixel_spacing_mm == pytest.approx((0.388672, 0.388672))
    assert info.slice_spacing_mm == pytest.approx(10.0)
    assert not info.problems
    volume = load_series([path])
    assert volume.shape == (2, 512, 512)
    assert volume.geometry.spacing == pytest.approx([0.388672, 0.388672, 10.0])


def test_inconsistent_functional_groups_are_refused_with_a_reason():
    ds = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    no_position = copy.deepcopy(ds)
    del no_position.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence
    with pytest.raises(VolumeError, match="frame 2 has no Plane Position"):
        volume_from_multiframe(no_position)
    row = {
        "sop_uid": "1.2.3",
        "series_uid": "1.2.4",
        "study_uid": "1.2.5",
        "sop_class_uid": str(ds.SOPClassUID),
        "tags": routing_tags(no_position),
    }
    assert any("functional groups" in p for p in describe([row]).problems)
    wrong_count = copy.deepcopy(ds)
    wrong_count.NumberOfFrames = 3
    with pytest.raises(VolumeError, match="Number of Frames is 3"):
        volume_from_multiframe(wrong_count)
    tilted = copy.deepcopy(ds)
    own = pydicom.Dataset()  # frame 2's own orientation, overriding the shared one
    own.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    tilted.PerFrameFunctionalGroupsSequence[1].PlaneOrientationSequence = [own]
    with pytest.raises(VolumeError, match="frame 2 has a different orientation"):
        volume_from_multiframe(tilted)


def test_node_accepts_routes_and_measures_a_legacy_converted_ct(legacy_ct, settings, node_factory):
    _, path = legacy_ct
    require_tool("storescu")
    node = node_factory(settings)
    # dcmtk's storescu proposes Legacy Converted classes only when asked for the files' own
    sent = subprocess.run(
        [
            "storescu",
            "--required",
            "--call",
            settings.dicom.ae_title,
            "127.0.0.1",
            str(node.receiver.port),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stderr
    study_uid = str(pydicom.dcmread(path).StudyInstanceUID)
    [row] = node.index.study_instances(study_uid)
    assert row["sop_class_uid"] == LegacyConvertedEnhancedCTImageStorage

    def done() -> list:
        return sql(
            node.index, "SELECT * FROM jobs WHERE study_uid = ? AND state = 'done'", (study_uid,)
        )

    [job] = wait_until(done, timeout=120)
    assert job["pipeline"] == "ct_muscle"


def test_legacy_converted_mr_dixon_channel_is_read_from_frame_type(tmp_path):
    """A Dixon water series converted to one Legacy Converted Enhanced MR: routing finds the
    channel in the frames' Frame Type, and the volume is the single-frame series'."""
    array, geometry = abdomen_phantom(shape=(6, 64, 64), pixel_mm=5.0, slice_mm=5.0)
    paths = write_ct_series(array, geometry, tmp_path / "mr", seed="enhanced-mr")
    series = []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.Modality = "MR"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "W", "DIXON"]
        ds.SeriesDescription = "t1 vibe tra"
        for keyword in ("KVP", "ConvolutionKernel", "RescaleIntercept", "RescaleSlope"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR", "SP", ""
        ds.MRAcquisitionType, ds.EchoTime, ds.RepetitionTime = "3D", 2.4, 5.2
        ds.MagneticFieldStrength, ds.EchoTrainLength, ds.ImagingFrequency = 3, 1, 123.2
        series.append(ds)
    legacy = hd.legacy.LegacyConvertedEnhancedMRImage(
        series,
        series_instance_uid=derived_uid("enhanced-mr", "series"),
        series_number=401,
        sop_instance_uid=derived_uid("enhanced-mr", "instance"),
        instance_number=1,
    )
    legacy.ImageType = ["ORIGINAL", "PRIMARY", "MIXED", "NONE"]  # only the frames tell
    path = tmp_path / "legacy-mr.dcm"
    legacy.save_as(path)
    ds = pydicom.dcmread(path)
    info = describe(
        [
            {
                "sop_uid": str(ds.SOPInstanceUID),
                "series_uid": str(ds.SeriesInstanceUID),
                "study_uid": str(ds.StudyInstanceUID),
                "sop_class_uid": str(ds.SOPClassUID),
                "tags": routing_tags(ds),
            }
        ]
    )
    assert info.instance_count == 6 and not info.problems
    assert info.dixon_channel == "water", info.dixon_evidence
    assert any("ImageType value 'W'" in e for e in info.dixon_evidence)
    volume = load_series([path])
    reference = np.stack([s.pixel_array for s in series]).astype(np.float32)
    assert np.array_equal(volume.array, reference)


def test_legacy_converted_from_the_shared_real_ct(real_series_with_uids, tmp_path):
    """The shared real CT (20 JPEG 2000 slices) converted by highdicom: the same volume as
    its single-frame series, and a routing unit without problems."""
    datasets = [pydicom.dcmread(p) for p in real_series_with_uids]
    legacy = hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets,
        series_instance_uid=derived_uid("enhanced-real", "series"),
        series_number=501,
        sop_instance_uid=derived_uid("enhanced-real", "instance"),
        instance_number=1,
    )
    path = tmp_path / "legacy-real.dcm"
    legacy.save_as(path)
    single = load_series(real_series_with_uids)
    enhanced = load_series([path])
    assert np.array_equal(enhanced.array, single.array)
    assert np.allclose(enhanced.geometry.affine, single.geometry.affine, atol=1e-4)
    ds = pydicom.dcmread(path)
    row = {
        "sop_uid": str(ds.SOPInstanceUID),
        "series_uid": str(ds.SeriesInstanceUID),
        "study_uid": str(ds.StudyInstanceUID),
        "sop_class_uid": str(ds.SOPClassUID),
        "tags": routing_tags(ds),
    }
    info = describe([row])
    assert info.instance_count == len(datasets) and not info.problems, info.problems


def test_multiframe_without_functional_groups_gets_a_routing_reason():
    """pydicom-data's emri_small: an Enhanced MR with 10 frames and no functional groups."""
    path = get_testdata_file("emri_small.dcm")
    ds = pydicom.dcmread(path)
    row = {
        "sop_uid": str(ds.SOPInstanceUID),
        "series_uid": str(ds.SeriesInstanceUID),
        "study_uid": str(ds.StudyInstanceUID),
        "sop_class_uid": str(ds.SOPClassUID),
        "tags": routing_tags(ds),
    }
    info = describe([row])
    assert any("functional groups do not give every frame" in p for p in info.problems)
    with pytest.raises(VolumeError):
        load_series([path])


def test_frame_count_beyond_the_pixel_data_is_refused_at_c_store(settings, node_factory):
    ds = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    ds.NumberOfFrames = 3  # the pixel data holds 2
    node = node_factory(settings)
    ae = AE(ae_title="CT-SCANNER")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.receiver.port, ae_title=settings.dicom.ae_title)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status.Status == 0xA900
    assert "3 frames" in str(status.ErrorComment)
    assert node.index.study_instances(str(ds.StudyInstanceUID)) == []
