"""Pipelines are data, and routing never loads a model.

A new pipeline is a profile in a site's profile folder (plus, here, a bundle copied under a new
name): no Python changes. `myonode explain` and routing run in a Python where `import torch`
fails, because a pipeline's version and availability come from its profile and its bundle's
manifest and checksums, never from a loaded engine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.app.process import process_folder
from myonode.core.config import load_settings
from myonode.models import BUNDLES_DIR
from myonode.route.profiles import (
    ProfileError,
    builtin_profiles_dir,
    configured_pipelines,
    load_profiles,
)

DEMO_BUNDLE = BUNDLES_DIR / "ct-abdominal-muscles-seed000-demo"

# Runs the command line with torch (and the packages that need it) made unimportable.
WITHOUT_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "monai", "nnunetv2", "totalsegmentator"}:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, NoTorch())
if sys.argv[1:] == ["--import-torch"]:
    import torch  # noqa: F401
from myonode.app.cli import main

status = main(sys.argv[1:])
assert "torch" not in sys.modules, "routing imported torch"
sys.exit(status)
"""


def without_torch(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def site_bundle(tmp_path: Path, name: str) -> Path:
    """The demo CT bundle copied to a new folder, renamed in its manifest."""
    bundle = tmp_path / name
    shutil.copytree(DEMO_BUNDLE, bundle)
    metadata_path = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["name"] = metadata["myonode"]["name"] = name
    metadata_path.write_text(json.dumps(metadata, indent=2))
    return bundle


def site_profile(folder: Path, pipeline: str, engine: str, series_number_base: int) -> Path:
    """A new profile: the built-in CT rules, feeding a new pipeline that it defines."""
    folder.mkdir(parents=True, exist_ok=True)
    rules = (builtin_profiles_dir() / "ct_abdominal_muscle.yaml").read_text()
    rules = rules[rules.index("kind:") : rules.index("output:")]
    path = folder / f"{pipeline}.yaml"
    path.write_text(
        f"name: {pipeline}_input\npipeline: {pipeline}\n{rules}"
        "output:\n"
        f"  title: Site CT muscle model\n  engine: {engine}\n"
        "  procedure: {value: 25045-6, scheme: LN, meaning: CT unspecified body region}\n"
        f"  series_number_base: {series_number_base}\n"
    )
    return path


@pytest.fixture
def ct_study(tmp_path: Path) -> Path:
    array, geometry = abdomen_phantom(shape=(10, 96, 96), pixel_mm=4.0, slice_mm=5.0)
    write_ct_series(array, geometry, tmp_path / "study", seed="pipelines-as-data")
    return tmp_path / "study"


def test_the_blocker_really_blocks_torch():
    blocked = without_torch("--import-torch")
    assert blocked.returncode != 0 and "blocked by the test" in blocked.stderr


def test_explain_routes_a_ct_folder_with_torch_unimportable(ct_study, tmp_path):
    env = {"MYONODE_STORAGE__DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    shown = without_torch("explain", ct_study, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    [study] = json.loads(shown.stdout)
    [job] = study["jobs"]
    assert job["pipeline"] == "ct_muscle" and job["pipeline_version"].startswith(
        "myonode-classical-ct-"
    )


def test_a_bundle_pipeline_is_identified_from_its_manifest_without_torch(ct_study, tmp_path):
    bundle = site_bundle(tmp_path, "site-ct-muscle")
    profiles = tmp_path / "profiles"
    site_profile(profiles, "ct_site_model", f"bundle:{bundle}", 9600)
    config = tmp_path / "node.yaml"
    config.write_text(f"routing:\n  profiles_dir: {profiles}\n")
    shown = without_torch("--config", config, "explain", ct_study, "--json")
    assert shown.returncode == 0, shown.stderr
    [study] = json.loads(shown.stdout)
    versions = {job["pipeline"]: job["pipeline_version"] for job in study["jobs"]}
    assert versions["ct_site_model"] == "site-ct-muscle-0.1.0"

    (bundle / "models" / "model.pt").write_bytes(b"not the weights the manifest describes")
    shown = without_torch("--config", config, "explain", ct_study, "--json")
    assert shown.returncode == 0, shown.stderr
    [study] = json.loads(shown.stdout)
    assert "ct_site_model" not in {job["pipeline"] for job in study["jobs"]}
    assert "checksum mismatch" in json.dumps(study)


def test_a_new_pipeline_needs_only_a_profile_and_a_bundle(ct_study, tmp_path):
    bundle = site_bundle(tmp_path, "site-ct-muscle")
    profiles = tmp_path / "profiles"
    site_profile(profiles, "ct_site_model", f"bundle:{bundle}", 9600)
    settings = load_settings(environ={"MYONODE_ROUTING__PROFILES_DIR": str(profiles)})

    report, _index = process_folder(ct_study, tmp_path / "out", settings)

    assert report.jobs_failed == 0 and report.jobs_done == 2  # ct_muscle and the new one
    [seg_path] = (tmp_path / "out").rglob("ct_site_model/seg.dcm")
    [sr_path] = (tmp_path / "out").rglob("ct_site_model/sr.dcm")
    seg = hd.seg.segread(seg_path)
    assert "ct_site_model" in seg.SeriesDescription and seg.SeriesNumber >= 9600
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "site-ct-muscle"
    sr = pydicom.dcmread(sr_path)
    assert sr.SeriesDescription.split()[:2] == ["myonode", "ct_site_model"]


def test_a_pipeline_no_profile_defines_fully_is_refused_with_where(tmp_path):
    profiles = tmp_path / "profiles"
    path = site_profile(profiles, "ct_half_defined", "classical-ct", 9700)
    path.write_text(path.read_text().replace("  title: Site CT muscle model\n", ""))
    with pytest.raises(ProfileError, match=r"pipeline ct_half_defined: .*output\.title"):
        configured_pipelines(load_profiles([profiles]))
