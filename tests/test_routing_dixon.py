"""Dixon: channel recognition per vendor style, stations, and seed-002 fusion."""

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from myonode.core.volume import Geometry, Volume
from myonode.dicom.dixon_channel import channel
from myonode.dicom.uids import derived_uid
from myonode.infer.fusion import fuse_stations
from myonode.infer.inputs import load_inputs
from myonode.route import folder_studies, load_profiles, route_rows

from studies import write_mr_series
from support import sql

PROFILES = load_profiles()


@pytest.mark.parametrize(
    "image_type, description, expected",
    [
        (["DERIVED", "PRIMARY", "DIXON", "WATER"], "t1_vibe_dixon_tra_W", "water"),
        (["DERIVED", "PRIMARY", "DIXON", "FAT"], "t1_vibe_dixon_tra_F", "fat"),
        (["DERIVED", "PRIMARY", "DIXON", "IN_PHASE"], "t1_vibe_dixon_tra_in", "in"),
        (["DERIVED", "PRIMARY", "DIXON", "OPP_PHASE"], "t1_vibe_dixon_tra_opp", "opp"),
        (["ORIGINAL", "PRIMARY", "M", "ND"], "Dixon_BH_17s_W", "water"),  # UK Biobank
        (["ORIGINAL", "PRIMARY", "M", "ND"], "Dixon_BH_17s_opp", "opp"),
        (["DERIVED", "PRIMARY"], "WATER: Ax LAVA-Flex", "water"),  # GE
        (["DERIVED", "PRIMARY"], "FAT: Ax LAVA-Flex", "fat"),
        (["DERIVED", "PRIMARY"], "InPhase: Ax LAVA-Flex", "in"),
        (["DERIVED", "PRIMARY"], "OutPhase: Ax LAVA-Flex", "opp"),
        (["DERIVED", "PRIMARY"], "FatFrac: IDEAL IQ", "ff"),
        (["ORIGINAL", "PRIMARY", "W", "W"], "mDIXON", "water"),  # Philips
        (["ORIGINAL", "PRIMARY", "F", "F"], "mDIXON", "fat"),
        (["ORIGINAL", "PRIMARY", "M", "FFE"], "mDIXON W", "water"),
        (["ORIGINAL", "PRIMARY", "M", "FFE"], "sDIXON_ip", "in"),
        (["DERIVED", "PRIMARY"], "mDIXON-Quant_FF", "ff"),
        (["ORIGINAL", "PRIMARY", "M", "ND"], "t2_tse_tra_fs", None),
        (["ORIGINAL", "PRIMARY", "M", "ND"], "T1 fat sat", None),
        (["ORIGINAL", "PRIMARY", "M", "ND"], "T1 water excitation", None),
        (["ORIGINAL", "PRIMARY", "M", "ND"], "t2_haste_tra_W", None),  # no Dixon context
        (["DERIVED", "PRIMARY", "DIXON", "WATER"], "t1_vibe_dixon_tra_F", "conflicting"),
    ],
)
def test_dixon_channels_by_vendor_style(image_type, description, expected):
    found, evidence = channel(image_type, description, "", {})
    assert found == expected, evidence


# Four stations, each 40 slices of 4 mm (156 mm), 12 mm overlaps, 48 x 40 pixels of 5 mm.
# Station 3 has a repeat acquired later; the earlier one must be dropped.
STATION_SLICES, STATION_STEP_MM, Z_SPACING_MM = 40, 144.0, 4.0
ROWS, COLUMNS, PIXEL_MM = 40, 48, 5.0
ORIGIN = np.array([-120.0, -100.0, -600.0])
SEMI_AXES_MM = np.array([80.0, 60.0, 250.0])  # x, y, z of an ellipsoid spanning all stations
CENTRE = ORIGIN + np.array([117.5, 97.5, 300.0])


def ellipsoid(geometry: Geometry, shape: tuple[int, int, int], supersample: int = 4) -> np.ndarray:
    """Fraction of each voxel inside the ellipsoid (partial volume, by supersampling)."""
    nk, nj, ni = shape
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    inside = np.zeros(shape)
    for dk in offsets:
        for dj in offsets:
            for di in offsets:
                points = np.stack([(i + di).ravel(), (j + dj).ravel(), (k + dk).ravel()], axis=1)
                lps = geometry.index_to_lps(points)
                r = (((lps - CENTRE) / SEMI_AXES_MM) ** 2).sum(axis=1)
                inside += (r <= 1).reshape(shape)
    return inside / supersample**3


def station_geometry(n: int) -> Geometry:
    return Geometry(
        origin=ORIGIN + np.array([0.0, 0.0, n * STATION_STEP_MM]),
        directions=np.eye(3),
        spacing=np.array([PIXEL_MM, PIXEL_MM, Z_SPACING_MM]),
    )


@functools.cache
def station_water(n: int) -> np.ndarray:
    """Water image of station n: 1000 × the ellipsoid's partial volume per voxel."""
    return 1000.0 * ellipsoid(station_geometry(n), (STATION_SLICES, ROWS, COLUMNS))


def station_volumes() -> list[Volume]:
    volumes = []
    for n in range(4):
        geometry = station_geometry(n)
        water = station_water(n)
        fat = np.full(water.shape, 300.0)
        volumes.append(Volume(array=water, geometry=geometry, channels={"fat": fat}))
    return volumes


def test_four_station_fusion_grid_and_volume():
    fused = fuse_stations(station_volumes())
    # One grid over all stations: origin of station 1, z from -600 to -600 + 3*144 + 39*4.
    assert np.allclose(fused.geometry.origin, ORIGIN)
    assert np.allclose(fused.geometry.spacing, [PIXEL_MM, PIXEL_MM, Z_SPACING_MM])
    assert np.allclose(fused.geometry.directions, np.eye(3))
    extent_z = 3 * STATION_STEP_MM + (STATION_SLICES - 1) * Z_SPACING_MM
    assert fused.shape == (round(extent_z / Z_SPACING_MM) + 1, ROWS, COLUMNS)
    last = fused.geometry.index_to_lps(np.array(fused.shape[::-1]) - 1)[0]
    assert np.allclose(last, ORIGIN + np.array([(COLUMNS - 1) * 5.0, (ROWS - 1) * 5.0, extent_z]))

    voxel_ml = fused.geometry.voxel_volume_mm3 / 1000
    measured = float((fused.array >= 500).sum()) * voxel_ml
    expected = 4 / 3 * np.pi * np.prod(SEMI_AXES_MM) / 1000
    assert measured == pytest.approx(expected, rel=0.01)
    # Averaged overlaps: a constant channel stays constant, with no seam.
    assert np.allclose(fused.channels["fat"], 300.0)


def test_fusion_resamples_stations_off_the_global_lattice():
    volumes = station_volumes()
    shifted = volumes[2]
    geometry = Geometry(
        origin=shifted.geometry.origin + np.array([0.0, 0.0, 1.5]),
        directions=shifted.geometry.directions,
        spacing=shifted.geometry.spacing,
    )
    volumes[2] = Volume(
        array=1000.0 * ellipsoid(geometry, shifted.array.shape),
        geometry=geometry,
        channels=shifted.channels,
    )
    fused = fuse_stations(volumes)
    voxel_ml = fused.geometry.voxel_volume_mm3 / 1000
    measured = float((fused.array >= 500).sum()) * voxel_ml
    assert measured == pytest.approx(4 / 3 * np.pi * np.prod(SEMI_AXES_MM) / 1000, rel=0.01)


def write_dixon_study(root: Path) -> dict[str, list[Path]]:
    """The four stations as Siemens-style W/F/in/opp series, plus a later repeat of station 3."""
    study_uid = derived_uid("dixon-study")
    written = {}
    number = 1
    for n in range(4):
        geometry = station_geometry(n)
        water = station_water(n)
        times = [f"1{n}0000"] + ([f"1{n}3000"] if n == 2 else [])
        for repeat, time in enumerate(times):
            for suffix, image, kind in (
                ("W", water, "WATER"),
                ("F", np.full(water.shape, 300.0), "FAT"),
                ("in", water + 300.0, "IN_PHASE"),
                ("opp", np.abs(water - 300.0), "OPP_PHASE"),
            ):
                name = f"s{n + 1}{'r' * repeat}_{suffix}"
                written[name] = write_mr_series(
                    image,
                    geometry,
                    root / name,
                    name,
                    study_uid,
                    number,
                    f"Dixon_BH_17s_{suffix}",
                    ["DERIVED", "PRIMARY", "DIXON", kind],
                    time,
                )
                number += 1
    return written


def test_dixon_study_routes_one_job_with_stations_and_fuses(tmp_path):
    files = write_dixon_study(tmp_path / "study")
    [(study_uid, rows)] = folder_studies(tmp_path / "study").items()
    routing = route_rows(study_uid, rows, PROFILES, lambda p: "1" if p == "mr_muscle" else None)
    [job] = routing.jobs
    assert job.pipeline == "mr_muscle"
    uid = {
        name: folder_studies(paths[0])[study_uid][0]["series_uid"] for name, paths in files.items()
    }
    assert job.inputs == {
        "water": [uid["s1_W"], uid["s2_W"], uid["s3r_W"], uid["s4_W"]],
        "fat": [uid["s1_F"], uid["s2_F"], uid["s3r_F"], uid["s4_F"]],
    }
    assert job.series_uid == uid["s1_W"]
    assert "Dixon water+fat in 4 station(s)" in job.reasons[0]
    by_series = {d.series_uid: d for d in routing.decisions}
    assert "the later acquisition (SeriesTime 123000) is kept" in by_series[uid["s3_W"]].reason
    in_phase = by_series[uid["s1_in"]]
    assert not in_phase.selected
    [rule] = [r for r in in_phase.details["profiles"]["mr_dixon_thigh"]["rules"] if not r["ok"]]
    assert rule == {"rule": "dixon_channel", "ok": False, "detail": "in"}
    # mr_lumbar_psoas feeds the same pipeline; the Dixon profile came first.
    lumbar = next(o for o in routing.outcomes if o.profile.name == "mr_lumbar_psoas")
    assert lumbar.state == "already fed"

    by_uid = {uid[name]: paths for name, paths in files.items()}
    fused = load_inputs(job.inputs, lambda series: by_uid[series])
    assert np.allclose(fused.geometry.origin, ORIGIN)
    assert fused.shape == (148, ROWS, COLUMNS)
    assert np.allclose(fused.channels["fat"], 300.0)
    voxel_ml = fused.geometry.voxel_volume_mm3 / 1000
    measured = float((fused.array >= 500).sum()) * voxel_ml
    assert measured == pytest.approx(4 / 3 * np.pi * np.prod(SEMI_AXES_MM) / 1000, rel=0.01)


def test_station_without_water_and_distant_station(tmp_path):
    study_uid = derived_uid("dixon-gap")
    for n, (z, kinds) in enumerate(((0.0, ("WATER", "FAT")), (400.0, ("FAT",)))):
        geometry = Geometry(np.array([0.0, 0.0, z]), np.eye(3), np.array([5.0, 5.0, 4.0]))
        for kind in kinds:
            write_mr_series(
                np.full((12, 8, 8), 100.0),
                geometry,
                tmp_path / f"{n}{kind}",
                f"{n}{kind}",
                study_uid,
                n * 10 + len(kind),
                f"t1_vibe_dixon_tra_{kind[0]}",
                ["DERIVED", "PRIMARY", "DIXON", kind],
                "100000",
            )
    [(study_uid, rows)] = folder_studies(tmp_path).items()
    routing = route_rows(study_uid, rows, PROFILES, lambda p: "1")
    [job] = routing.jobs
    assert list(job.inputs) == ["water", "fat"] and len(job.inputs["water"]) == 1
    assert any("has no water series" in d.reason for d in routing.decisions)


def test_dixon_job_runs_with_water_and_fat_through_the_worker(tmp_path):
    """Plumbing: routed inputs → job row → fused volume handed to the runner (the engine here
    is a stand-in: the MR pipeline is another issue's)."""
    from dataclasses import replace

    from myonode.app.process import process_folder
    from myonode.core.config import load_settings
    from myonode.route.profiles import builtin_pipelines
    from myonode.worker.runner import Runner

    study_uid = derived_uid("dixon-worker")
    geometry = station_geometry(0)
    for suffix, image, kind in (
        ("W", station_water(0), "WATER"),
        ("F", np.full((STATION_SLICES, ROWS, COLUMNS), 300.0), "FAT"),
    ):
        write_mr_series(
            image,
            geometry,
            tmp_path / "study" / suffix,
            suffix,
            study_uid,
            1 if suffix == "W" else 2,
            f"t1_vibe_dixon_tra_{suffix}",
            ["DERIVED", "PRIMARY", "DIXON", kind],
            "100000",
        )
    seen = []

    class Recording(Runner):
        def run(self, pipeline_name, paths, out_dir, reasons=(), **options):
            seen.append((options.get("volume"), list(reasons)))
            return super().run(pipeline_name, paths, out_dir, reasons, **options)

    stand_in = replace(builtin_pipelines()["ct_muscle"], name="mr_muscle", series_number_base=9200)
    runner = Recording(pipelines={"mr_muscle": stand_in})
    report, index = process_folder(
        tmp_path / "study", tmp_path / "out", load_settings(environ={}), runner
    )
    assert report.jobs_done == 1, sql(index, "SELECT error FROM jobs")[0][0]
    [(volume, reasons)] = seen
    assert set(volume.channels) == {"fat"} and np.allclose(volume.channels["fat"], 300.0)
    assert np.allclose(volume.array, station_water(0), atol=0.5)
    assert reasons[0].startswith("mr_dixon_thigh -> mr_muscle: Dixon water+fat in 1 station(s)")
    [job] = sql(index, "SELECT inputs FROM jobs")
    assert list(json.loads(job["inputs"])) == ["water", "fat"]


def test_fused_stations_give_one_seg_on_the_fused_grid(tmp_path):
    """Four stations fused onto one grid: the SEG carries that grid, references every station,
    passes dciodvfy, and the SR volume is the SEG's voxels times the fused voxel volume."""
    import subprocess

    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from myonode.core.types import Algorithm, EngineIdentity, EngineKind, LabelMap
    from myonode.dicom.anatomy import THIGH
    from myonode.infer.engines import register
    from myonode.pipelines import Pipeline
    from myonode.worker.runner import Runner

    class WaterAbove500:  # stand-in engine: the ellipsoid, as the left thigh muscles
        algorithm = Algorithm(
            "test-water-threshold", "1", codes.cid7162.HistogramAnalysis, "classical", "demo"
        )

        def segment(self, volume: Volume) -> LabelMap:
            return LabelMap((volume.array >= 500).astype(np.uint8), {1: THIGH[0]})

    register(
        "test-water-threshold",
        EngineKind(
            create=lambda _argument: WaterAbove500(),
            identify=lambda _argument: EngineIdentity(WaterAbove500.algorithm, "segmentation"),
        ),
    )
    files = write_dixon_study(tmp_path / "study")
    [(study_uid, rows)] = folder_studies(tmp_path / "study").items()
    [job] = route_rows(study_uid, rows, PROFILES, lambda p: "1").jobs
    by_uid = {folder_studies(p[0])[study_uid][0]["series_uid"]: p for p in files.values()}
    fused = load_inputs(job.inputs, lambda series: by_uid[series])
    assert not fused.slices_are_sources
    pipeline = Pipeline(
        "mr_muscle",
        "MR muscle",
        "test-water-threshold",
        codes.cid100.MRIUnspecifiedBodyRegion,
        9200,
    )
    output = Runner(pipelines={"mr_muscle": pipeline}).run(
        "mr_muscle", by_uid[job.series_uid], tmp_path / "out", volume=fused
    )
    paths = {f.path.name: f.path for f in output.files}
    for path in paths.values():
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        assert not [x for x in report.stderr.splitlines() if x.startswith("Error")], path.name
    seg = hd.seg.segread(paths["seg.dcm"])
    referenced = {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence}
    assert set(job.inputs["water"]) <= referenced <= set(job.inputs["water"] + job.inputs["fat"])
    positions = sorted(
        float(f.PlanePositionSequence[0].ImagePositionPatient[2])
        for f in seg.PerFrameFunctionalGroupsSequence
    )
    fused_z = [
        fused.geometry.index_to_lps(np.array([0, 0, k]))[0][2] for k in range(fused.shape[0])
    ]
    assert set(np.round(positions, 3)) <= set(np.round(fused_z, 3))
    [segment] = seg.SegmentSequence
    type_code = segment.SegmentedPropertyTypeCodeSequence[0]
    assert type_code.CodeValue == THIGH[0].property_type.value
    assert type_code.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"  # left
    voxels = int(np.count_nonzero(seg.pixel_array))
    assert voxels == int((fused.array >= 500).sum())
    sr = hd.sr.srread(paths["sr.dcm"])
    [group] = sr.content.get_volumetric_roi_measurement_groups()
    [volume] = group.get_measurements(name=codes.SCT.Volume)
    assert volume.value == pytest.approx(voxels * fused.geometry.voxel_volume_mm3 / 1000, rel=1e-12)
    assert pydicom.dcmread(paths["sr.dcm"]).StudyInstanceUID == study_uid
