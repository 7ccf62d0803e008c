"""Chest radiographs: CR/DX/Secondary Capture, view position, pixel spacing, MONOCHROME1."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from myonode.core.radiograph import load_radiograph
from myonode.core.volume import VolumeError
from myonode.dicom.radiograph import pixel_spacing, view_position
from myonode.infer.inputs import load_inputs
from myonode.route import folder_studies, load_profiles, route_rows

PROFILES = load_profiles()


def cxr_installed(pipeline: str) -> str | None:
    return "test-1" if pipeline == "cxr_sarcopenia" else None


def route_file(path: Path, version_of=cxr_installed):
    [(study_uid, rows)] = folder_studies(path).items()
    return route_rows(study_uid, rows, PROFILES, version_of, sampler=None)


def pydicom_data(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip("pydicom-data is not installed")
    return Path(path)


def test_real_cr_pa_in_secondary_capture_is_routed(shared_data):
    routing = route_file(shared_data / "cxr" / "cxr_pa_siim.dcm")
    [decision] = routing.decisions
    assert decision.selected and decision.pipeline == "cxr_sarcopenia"
    assert "CR PA radiograph" in decision.reason and "PixelSpacing" in decision.reason
    [job] = routing.jobs
    [unit] = routing.units
    assert job.inputs == {"radiograph": [unit.series_uid], "instances": [unit.sop_uids[0]]}
    not_installed = route_file(shared_data / "cxr" / "cxr_pa_siim.dcm", lambda _: None)
    assert "pipeline cxr_sarcopenia is not installed" in not_installed.decisions[0].reason


def test_real_dx_monochrome1_is_frontal_and_loaded_inverted(shared_data):
    path = shared_data / "cxr" / "dx_thorax_small.dcm"
    routing = route_file(path)
    [unit] = routing.units
    assert unit.view == "frontal" and "PatientOrientation L/F (frontal)" in unit.view_evidence
    assert routing.decisions[0].selected

    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.astype(np.float32)
    volume = load_radiograph(path)
    assert volume.shape == (1, ds.Rows, ds.Columns)
    top = 2 ** int(ds.BitsStored) - 1
    assert np.allclose(volume.array[0], top - raw)  # brighter now means more attenuation
    assert np.allclose(volume.geometry.spacing, [1.2011999999, 1.2, 1.0])
    files = {unit.series_uid: [path]}
    loaded = load_inputs(routing.jobs[0].inputs, lambda uid: files[uid])
    assert np.allclose(loaded.array, volume.array)


def test_inverse_presentation_lut_on_monochrome2_is_inverted_and_multiframe_refused(
    shared_data, tmp_path
):
    source = pydicom.dcmread(shared_data / "cxr" / "cxr_pa_siim.dcm")
    plain = load_radiograph(shared_data / "cxr" / "cxr_pa_siim.dcm").array
    source.PresentationLUTShape = "INVERSE"
    source.save_as(tmp_path / "inverse.dcm")
    assert np.allclose(load_radiograph(tmp_path / "inverse.dcm").array, 255 - plain)
    source.PresentationLUTShape = "IDENTITY"
    source.NumberOfFrames = 2
    source.save_as(tmp_path / "frames.dcm")
    with pytest.raises(VolumeError, match="must be one frame, it has 2"):
        load_radiograph(tmp_path / "frames.dcm")


def test_lateral_never_reaches_the_pa_model(shared_data, tmp_path):
    source = pydicom.dcmread(shared_data / "cxr" / "cxr_pa_siim.dcm")
    pa, lateral = tmp_path / "pa.dcm", tmp_path / "lat.dcm"
    source.InstanceNumber = 1
    source.save_as(pa)
    source.ViewPosition = "LL"
    source.SeriesDescription = "Thorax seitlich"
    source.SOPInstanceUID = source.SOPInstanceUID + ".2"
    source.file_meta.MediaStorageSOPInstanceUID = source.SOPInstanceUID
    source.InstanceNumber = 2
    source.save_as(lateral)
    routing = route_file(tmp_path)
    assert len(routing.units) == 2  # one series, routed image by image
    by_view = {u.view: u for u in routing.units}
    assert set(by_view) == {"PA", "LATERAL"}
    [job] = routing.jobs
    assert job.inputs["instances"] == by_view["PA"].sop_uids
    lateral_decision = next(
        d for d in routing.decisions if not d.selected and "view: LATERAL" in d.reason
    )
    assert lateral_decision.series_uid == by_view["LATERAL"].series_uid


@pytest.mark.parametrize(
    "tags, expected",
    [
        ({"ViewPosition": "PA"}, "PA"),
        ({"ViewPosition": "AP"}, "AP"),
        ({"ViewPosition": "RL"}, "LATERAL"),
        (
            {"ViewCodeSequence": [{"CodeValue": "399348003", "CodeMeaning": "postero-anterior"}]},
            "PA",
        ),
        (
            {"ViewCodeSequence": [{"CodeValue": "R-10236", "CodeMeaning": "left lateral"}]},
            "LATERAL",
        ),
        ({"SeriesDescription": "Thorax p.a."}, "PA"),
        ({"ProtocolName": "CHEST LAT"}, "LATERAL"),
        ({"PatientOrientation": ["A", "F"]}, "LATERAL"),
        ({"PatientOrientation": ["L", "F"]}, "frontal"),
        ({"ViewPosition": "PA", "SeriesDescription": "lateral"}, "conflicting"),
        ({}, "unknown"),
    ],
)
def test_view_position_sources(tags, expected):
    assert view_position(tags)[0] == expected


def test_pixel_spacing_sources():
    assert pixel_spacing({"PixelSpacing": [0.168, 0.168]}) == ((0.168, 0.168), "PixelSpacing")
    spacing, source = pixel_spacing(
        {"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 1.1}
    )
    assert spacing == pytest.approx((0.2 / 1.1, 0.2 / 1.1))
    assert "magnification 1.1" in source
    assert "detector plane" in pixel_spacing({"ImagerPixelSpacing": [0.15, 0.15]})[1]
    spacing, source = pixel_spacing({"PixelSpacing": [0.0, 0.0]})
    assert spacing is None and "ignored (not positive)" in source and "none" in source


def test_pydicom_data_cr_headers():
    chest = route_file(pydicom_data("RG1_UNCI.dcm"))
    [unit] = chest.units
    assert unit.view == "PA" and unit.pixel_spacing_mm is None  # PixelSpacing 0\0
    assert chest.decisions[0].selected
    assert "sizes in pixels only" in chest.decisions[0].reason
    volume = load_radiograph(pydicom_data("RG1_UNCI.dcm"))
    assert np.all(np.isnan(volume.geometry.spacing[:2]))  # never a made-up size

    extremity = route_file(pydicom_data("RG3_UNCI.dcm"))
    [decision] = extremity.decisions
    assert not decision.selected
    assert "body_part: EXTREMITY" in decision.reason and "view: AP" in decision.reason
