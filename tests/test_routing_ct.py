"""CT series selection: seed 000 rules, vendor kernel names, contrast evidence, bad input."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from myonode.app.demo.synthetic import write_mixed_ct_study
from myonode.core.volume import load_nifti
from myonode.route import folder_studies, load_profiles, route_rows
from myonode.route.contrast import (
    combine,
    header_evidence,
    header_verdict,
    image_evidence,
    sample_hu,
)
from myonode.route.kernels import classify

from studies import STUDY, series_rows

PROFILES = load_profiles()
CT_ONLY = [p for p in PROFILES if p.pipeline == "ct_muscle"]


def installed(*names: str):
    return lambda pipeline: "test-1" if pipeline in names else None


def decision_for(routing, description: str):
    unit = next(u for u in routing.units if u.description == description)
    [decision] = [d for d in routing.decisions if d.series_uid == unit.series_uid]
    return decision


def test_mixed_study_selects_the_3mm_unenhanced_soft_series(tmp_path):
    write_mixed_ct_study(tmp_path)
    [(study_uid, rows)] = folder_studies(tmp_path).items()
    routing = route_rows(study_uid, rows, PROFILES, installed("ct_muscle"))

    chosen = decision_for(routing, "Abdomen nativ 3.0 B30f")
    assert chosen.selected and chosen.pipeline == "ct_muscle"
    assert "axial CT" in chosen.reason and "contrast unenhanced" in chosen.reason
    scout = decision_for(routing, "Topogram 0.6 T20f")
    assert not scout.selected and "LOCALIZER" in scout.reason and "coronal" in scout.reason
    thin = decision_for(routing, "Abdomen nativ 1.0 B30f")
    assert not thin.selected and "slice_thickness: 1 mm < 2 mm" in thin.reason
    sharp = decision_for(routing, "Abdomen nativ 3.0 B70f")
    assert not sharp.selected and "kernel: B70f (sharp)" in sharp.reason
    portal = decision_for(routing, "Abdomen PV 3.0 B30f")
    assert not portal.selected
    assert "preferred by unenhanced: unenhanced vs contrast" in portal.reason

    statuses = {u.description: routing.contrast.get(u.series_uid) for u in routing.units}
    assert statuses["Abdomen PV 3.0 B30f"].status == "contrast"
    assert statuses["Abdomen PV 3.0 B30f"].image.verdict == "contrast"
    assert statuses["Abdomen PV 3.0 B30f"].image.vessel_hu == pytest.approx(190, abs=5)
    assert statuses["Abdomen nativ 3.0 B30f"].image.verdict == "unenhanced"

    [job] = routing.jobs
    assert job.series_uid == decision_for(routing, "Abdomen nativ 3.0 B30f").series_uid
    assert job.inputs == {"image": [job.series_uid]}
    assert job.reasons[0].startswith("ct_abdominal_muscle -> ct_muscle: axial CT")
    assert any("not chosen: #5 Abdomen PV 3.0 B30f" in r for r in job.reasons)
    details = chosen.details
    assert details["contrast"]["status"] == "unenhanced"
    assert details["profiles"]["ct_abdominal_muscle"]["selected"] is True


@pytest.mark.parametrize(
    "kernel, manufacturer, expected",
    [
        ("B30f", "SIEMENS", "soft"),
        ("Br38f", "SIEMENS", "soft"),
        ("B46f", "SIEMENS", "medium"),
        ("B70f", "SIEMENS", "sharp"),
        ("I70f", "SIEMENS", "sharp"),
        ("Bl57", "SIEMENS", "sharp"),
        ("STANDARD", "GE MEDICAL SYSTEMS", "soft"),
        ("SOFT", "GE MEDICAL SYSTEMS", "soft"),
        ("DETAIL", "GE MEDICAL SYSTEMS", "medium"),
        ("BONEPLUS", "GE MEDICAL SYSTEMS", "sharp"),
        ("LUNG", "GE MEDICAL SYSTEMS", "sharp"),
        ("B", "Philips", "soft"),
        ("C", "Philips", "medium"),
        ("D", "Philips", "sharp"),
        ("YB", "Philips", "sharp"),
        ("L", "Philips", "sharp"),
        ("FC03", "TOSHIBA", "soft"),
        ("FC18", "CANON MEDICAL SYSTEMS", "soft"),
        ("FC30", "TOSHIBA", "sharp"),
        ("FC52", "CANON MEDICAL SYSTEMS", "sharp"),
        ("BONE", "", "sharp"),
        ("XYZ", "", "unknown"),
    ],
)
def test_vendor_kernel_classes(kernel, manufacturer, expected):
    assert classify(kernel, manufacturer)[0] == expected


@pytest.mark.parametrize(
    "manufacturer, soft, sharp, plain, enhanced",
    [
        ("SIEMENS", "B30f", "B70f", "Abdomen nativ 3.0 B30f", "Abdomen PV 3.0 B30f"),
        ("GE MEDICAL SYSTEMS", "STANDARD", "BONEPLUS", "WO CONTRAST 2.5mm", "PORTAL VENOUS 2.5mm"),
        ("Philips", "B", "YB", "Abdomen Plain 3mm", "Abdomen +C portal 3mm"),
        ("TOSHIBA", "FC03", "FC30", "ABD non-contrast 3.0", "ABD C+ venous 3.0"),
    ],
)
def test_vendor_naming_styles_select_the_soft_unenhanced_series(
    manufacturer, soft, sharp, plain, enhanced
):
    common = {"Manufacturer": manufacturer}
    rows = (
        series_rows(enhanced, ConvolutionKernel=soft, SeriesNumber=2, **common)
        + series_rows(plain, ConvolutionKernel=soft, SeriesNumber=3, **common)
        + series_rows(plain + " sharp", ConvolutionKernel=sharp, SeriesNumber=4, **common)
    )
    routing = route_rows(STUDY, rows, CT_ONLY, installed("ct_muscle"), sampler=None)
    assert decision_for(routing, plain).selected
    assert "contrast unenhanced" in decision_for(routing, plain).reason
    assert "unenhanced vs contrast" in decision_for(routing, enhanced).reason
    assert f"kernel: {sharp} (sharp)" in decision_for(routing, plain + " sharp").reason


@pytest.mark.parametrize(
    "description, expected",
    [
        ("CT Abdomen non-contrast", "unenhanced"),
        ("ABD W/O CONTRAST", "unenhanced"),
        ("Abdomen without contrast", "unenhanced"),
        ("Abdomen ohne KM", "unenhanced"),
        ("Abdomen nativ", "unenhanced"),
        ("Thorax sans injection", "unenhanced"),
        ("TC abdomen sin contraste", "unenhanced"),
        ("TC addome senza mdc", "unenhanced"),
        ("5/5mm Plain", "unenhanced"),
        ("腹部平扫", "unenhanced"),
        ("Abdomen with contrast", "contrast"),
        ("ABD W/ CONTRAST", "contrast"),
        ("Abdomen mit KM", "contrast"),
        ("Thorax arteriell", "contrast"),
        ("Abdomen Spätphase", "contrast"),
        ("Abdomen phase portale", "contrast"),
        ("Abdomen temps tardif", "contrast"),
        ("TC addome con mdc", "contrast"),
        ("Abdomen C+", "contrast"),
        ("腹部增强", "contrast"),
        ("Abdomen 3.0 B30f", "unknown"),
        ("Abdomen nativ + PV", "conflicting"),
    ],
)
def test_contrast_keywords_in_several_languages(description, expected):
    assert header_verdict(header_evidence({"SeriesDescription": description})) == expected


def test_contrast_tags():
    assert header_verdict(header_evidence({"ContrastBolusAgent": "NONE"})) == "unenhanced"
    oral = header_evidence({"ContrastBolusAgent": "Gastrografin", "ContrastBolusRoute": "ORAL"})
    assert header_verdict(oral) == "unenhanced"  # no iodine in the blood pool
    assert header_verdict(header_evidence({"ContrastBolusVolume": "0"})) == "unknown"
    iv = header_evidence({"ContrastBolusAgent": "APPLIED", "ContrastBolusStartTime": "140216"})
    assert header_verdict(iv) == "contrast"
    disagree = header_evidence({"ContrastBolusRoute": "IV", "SeriesDescription": "nativ"})
    assert header_verdict(disagree) == "conflicting"


def test_image_evidence_on_real_ct(shared_data):
    enhanced = sorted((shared_data / "ct" / "totalseg_dicom_series").iterdir())
    evidence = image_evidence(*sample_hu(enhanced, 12))
    # TotalSegmentator's aorta label on this series has a median of 151 HU (venous phase).
    assert evidence.verdict == "contrast"
    assert 130 < evidence.vessel_hu < 180

    plain = load_nifti(shared_data / "ct" / "upper_abdomen_ct.nii.gz")
    assert np.allclose(np.diag(plain.geometry.directions), [-1, -1, 1])
    lps = plain.array[:, ::-1, ::-1].astype(float)  # rows to posterior, columns to left
    # Its aorta label has a median of 43 HU: no iodine.
    assert image_evidence(lps[::3], (3.0, 3.0)).verdict == "unenhanced"

    header_says_plain = header_evidence({"SeriesDescription": "Abdomen nativ"})
    status = combine(header_says_plain, evidence)
    assert status.status == "conflicting"
    assert "disagree" in status.summary


def test_real_siemens_series_routed_with_agreeing_contrast_evidence(real_series_with_uids):
    [(study_uid, rows)] = folder_studies(real_series_with_uids[0].parent).items()
    routing = route_rows(study_uid, rows, PROFILES, installed("ct_muscle"))
    [decision] = routing.decisions
    assert decision.selected, decision.reason
    [unit] = routing.units
    assert unit.kernel == "Br38f" and unit.kernel_class == "soft"
    status = routing.contrast[unit.series_uid]
    assert status.status == "contrast" and status.header == "contrast"
    assert status.image.verdict == "contrast"
    assert "ProtocolName 'KM'" in status.summary


def test_real_series_with_empty_uids_is_not_routed(shared_data):
    studies = folder_studies(shared_data / "ct" / "totalseg_dicom_series")
    [(study_uid, rows)] = studies.items()
    assert study_uid == ""
    routing = route_rows(study_uid, rows, PROFILES, installed("ct_muscle"))
    [decision] = routing.decisions
    assert not decision.selected
    assert "empty SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID" in (
        decision.reason
    )
    assert not routing.jobs


def test_real_ge_thin_series_is_not_routed(shared_data):
    [(study_uid, rows)] = folder_studies(shared_data / "reference" / "dcmqi" / "ct-3slice").items()
    routing = route_rows(study_uid, rows, PROFILES, installed("ct_muscle"), sampler=None)
    [decision] = routing.decisions
    assert not decision.selected
    assert "slice_thickness: 1.25 mm < 2 mm" in decision.reason
    assert routing.units[0].kernel_class == "soft"  # GE STANDARD


def test_pydicom_data_ge_plain_ct_header():
    path = get_testdata_file("693_UNCI.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    [(study_uid, rows)] = folder_studies(Path(path)).items()
    routing = route_rows(study_uid, rows, PROFILES, installed("ct_muscle"), sampler=None)
    [unit] = routing.units
    assert unit.kernel_class == "soft" and unit.slice_thickness_mm == 5
    assert header_verdict(header_evidence(unit.tags)) == "unenhanced"  # "5/5mm Plain"
    [decision] = routing.decisions
    assert not decision.selected and "instances: 1 < 5" in decision.reason


def _vary(rows, index, **tags):
    rows[index]["tags"] = {**rows[index]["tags"], **tags}
    return rows


@pytest.mark.parametrize(
    "make, expected",
    [
        (
            lambda: [
                {**r, "tags": {**r["tags"], "ImageOrientationPatient": None}}
                for r in series_rows("a")
            ],
            "ImageOrientationPatient missing",
        ),
        (
            lambda: [{**r, "tags": {**r["tags"], "PixelSpacing": None}} for r in series_rows("a")],
            "PixelSpacing missing",
        ),
        (
            lambda: _vary(series_rows("a"), 7, ImagePositionPatient=[-200.0, -200.0, 22.0]),
            "non-uniform slice spacing",
        ),
        (
            lambda: _vary(series_rows("a"), 7, ImagePositionPatient=[-200.0, -200.0, 18.0]),
            "duplicated slice positions",
        ),
        (
            lambda: _vary(series_rows("a"), 3, ImageOrientationPatient=[1, 0, 0, 0, 0.98, 0.2]),
            "different ImageOrientationPatient",
        ),
        (lambda: _vary(series_rows("a"), 3, PixelSpacing=[0.7, 0.7]), "different PixelSpacing"),
        (lambda: _vary(series_rows("a"), 3, Modality="MR"), "different modalities"),
        (
            lambda: _vary(series_rows("a"), 3, FrameOfReferenceUID="9.9"),
            "different frames of reference",
        ),
        (
            lambda: [
                {**r, "study_uid": "1.2.3.99"} if i == 2 else r
                for i, r in enumerate(series_rows("a"))
            ],
            "more than one study",
        ),
        (
            lambda: [
                {**r, "tags": {**r["tags"], "ImagePositionPatient": [-200.0, -200.0 + k, 3.0 * k]}}
                for k, r in enumerate(series_rows("a"))
            ],
            "gantry tilt or shear",
        ),
    ],
)
def test_bad_input_is_not_routed_with_the_reason(make, expected):
    rows = make()
    routing = route_rows(STUDY, rows, CT_ONLY, installed("ct_muscle"), sampler=None)
    assert not routing.jobs
    assert all(not d.selected for d in routing.decisions)
    assert any(expected in d.reason for d in routing.decisions), routing.decisions[0].reason


def test_tie_break_prefers_thinnest_then_coverage_then_series_number():
    rows = (
        series_rows("five", spacing_mm=5.0, count=12, SeriesNumber=2)
        + series_rows("three", spacing_mm=3.0, count=20, SeriesNumber=3)
        + series_rows("three again", spacing_mm=3.0, count=20, SeriesNumber=4)
    )
    routing = route_rows(STUDY, rows, CT_ONLY, installed("ct_muscle"), sampler=None)
    assert decision_for(routing, "three").selected
    assert "preferred by thinnest: 3 mm vs 5 mm" in decision_for(routing, "five").reason
    assert "all preferences equal" in decision_for(routing, "three again").reason


def test_pipeline_not_installed_and_unchanged_inputs(tmp_path):
    rows = series_rows("only")
    routing = route_rows(STUDY, rows, CT_ONLY, installed(), sampler=None)
    [decision] = routing.decisions
    assert not decision.selected and "not installed" in decision.reason
    done = route_rows(STUDY, rows, CT_ONLY, installed("ct_muscle"), lambda *_: True, sampler=None)
    assert not done.jobs and "unchanged since last run" in done.decisions[0].reason


def test_non_ct_and_result_objects_get_reasons():
    rows = series_rows("seg", count=1, Modality="SEG")
    for row in rows:
        row["sop_class_uid"] = "1.2.840.10008.5.1.4.1.1.66.4"
    rows += series_rows("us", count=1, Modality="US", sop_class="1.2.840.10008.5.1.4.1.1.6.1")
    routing = route_rows(STUDY, rows, PROFILES, installed("ct_muscle"), sampler=None)
    reasons = {d.reason for d in routing.decisions}
    assert "derived result object (SEG); not measured" in reasons
    assert "no profile routes modality US" in reasons


def test_headers_from_pydicom_read_match_index_rows(real_series_with_uids):
    """`folder_studies` reads the same tags ingest stores: routing sees what the index has."""
    ds = pydicom.dcmread(real_series_with_uids[0], stop_before_pixels=True)
    [(_, rows)] = folder_studies(real_series_with_uids[0].parent).items()
    row = next(r for r in rows if r["sop_uid"] == ds.SOPInstanceUID)
    assert row["tags"]["ConvolutionKernel"] == ["Br38f", "3"]
    assert row["tags"]["ProtocolName"] == "FDG_TK_KM"
