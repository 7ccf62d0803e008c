"""`myonode explain`, stored decisions, job inputs, profile validation and site profiles."""

import json
import sqlite3

import pytest

from myonode.app.demo.synthetic import write_mixed_ct_study
from myonode.app.process import process_folder
from myonode.core.config import load_settings
from myonode.route.profiles import (
    ProfileError,
    builtin_pipelines,
    configured_pipelines,
    load_profiles,
    parse_profile,
)
from myonode.store.index import Index

from support import myonode, sql


def test_explain_folder_table_and_json(tmp_path):
    write_mixed_ct_study(tmp_path / "study")
    shown = myonode("explain", tmp_path / "study")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "Profile ct_abdominal_muscle → pipeline ct_muscle (queued)" in text
    assert "SELECTED" in text and "✗ B70f (sharp)" in text and "✗ coronal" in text
    assert "Contrast evidence:" in text and "median 190 HU" in text
    assert "#4 Abdomen nativ 3.0 B30f: → ct_muscle" in text

    as_json = myonode("explain", tmp_path / "study", "--json")
    [study] = json.loads(as_json.stdout)
    selected = [d for d in study["decisions"] if d["selected"]]
    assert [d["pipeline"] for d in selected] == ["ct_muscle"]
    assert len(study["series"]) == 5
    ct = next(p for p in study["pipelines"] if p["profile"] == "ct_abdominal_muscle")
    assert ct["state"] == "queued" and len(ct["eligible"]) == 2


def test_decisions_are_stored_shown_by_status_and_explained_from_the_index(tmp_path):
    write_mixed_ct_study(tmp_path / "study")
    out = tmp_path / "out"
    report, index = process_folder(tmp_path / "study", out, load_settings(environ={}))
    assert report.jobs_done == 1 and report.jobs_failed == 0
    [job] = sql(index, "SELECT * FROM jobs")
    assert json.loads(job["inputs"]) == {"image": [job["series_uid"]]}
    assert "ct_abdominal_muscle -> ct_muscle" in json.loads(job["reasons"])[0]
    [study_uid] = [r["study_uid"] for r in sql(index, "SELECT study_uid FROM studies")]
    rows = index.decisions(study_uid)
    assert len(rows) == 5 and sum(r["selected"] for r in rows) == 1
    details = json.loads(next(r for r in rows if r["selected"])["details"])
    assert details["contrast"]["status"] == "unenhanced"

    env = {"MYONODE_STORAGE__DATA_DIR": str(out), "PATH": "/usr/bin:/bin"}
    status = myonode("status", "--json", env=env)
    decisions = json.loads(status.stdout)["decisions"][study_uid]
    assert {d["details"]["unit"]["description"] for d in decisions} >= {"Topogram 0.6 T20f"}
    assert "LOCALIZER" in myonode("status", env=env).stdout

    explained = myonode("explain", study_uid, env=env)
    assert explained.returncode == 0, explained.stderr
    assert "unchanged since last run" in explained.stdout
    missing = myonode("explain", "1.2.3.4.5", env=env)
    assert missing.returncode == 1 and "not in the index" in missing.stderr


def test_old_index_gets_the_inputs_column(tmp_path):
    path = tmp_path / "index.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(
        """CREATE TABLE jobs (id INTEGER PRIMARY KEY, study_uid TEXT NOT NULL,
           series_uid TEXT NOT NULL, pipeline TEXT NOT NULL, pipeline_version TEXT NOT NULL,
           input_digest TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
           reasons TEXT, error TEXT, created_at REAL NOT NULL, started_at REAL,
           finished_at REAL)"""
    )
    conn.execute(
        """INSERT INTO jobs (study_uid, series_uid, pipeline, pipeline_version, input_digest,
           state, created_at) VALUES ('1', '2', 'ct_muscle', 'v', 'd', 'done', 0)"""
    )
    conn.commit()
    conn.close()
    index = Index(path)
    [row] = sql(index, "SELECT * FROM jobs")
    assert row["inputs"] is None  # old jobs keep loading their one series
    Index(path).close()  # opening again is a no-op
    index.close()


def test_invalid_profile_names_file_line_and_key(tmp_path):
    text = """name: bad
pipeline: ct_muscle
rules:
  modality: [CT]
  slice_thickness_mm: {min: 5, max: 2}
  orientation: {allowed: [axial, diagonal]}
  kernal: {allowed: [soft]}
prefer: [thinnest, cheapest]
"""
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, "site/bad.yaml")
    message = str(caught.value)
    assert "site/bad.yaml:5: rules.slice_thickness_mm" in message and "greater than max" in message
    assert "site/bad.yaml:6: rules.orientation.allowed.1" in message
    assert "site/bad.yaml:7: rules.kernal: Extra inputs are not permitted" in message
    assert "site/bad.yaml:8: prefer.1" in message

    (tmp_path / "bad.yaml").write_text(text)
    config = tmp_path / "node.yaml"
    config.write_text(f"routing:\n  profiles_dir: {tmp_path}\n")
    shown = myonode("--config", config, "explain", tmp_path)
    assert shown.returncode == 2 and "bad.yaml:7" in shown.stderr


def test_site_profiles_replace_builtin_ones_and_set_outputs(tmp_path):
    (tmp_path / "ct.yaml").write_text(
        """name: ct_abdominal_muscle
pipeline: ct_muscle
rules:
  modality: [CT]
  slice_thickness_mm: {min: 4}
output:
  series_number_base: 7700
"""
    )
    (tmp_path / "cxr.yaml").write_text(
        "name: cxr_sarcopenia\npipeline: cxr_sarcopenia\nenabled: false\nrules: {}\n"
    )
    profiles = load_profiles([tmp_path])
    names = [p.name for p in profiles]
    assert "cxr_sarcopenia" not in names and "mr_dixon_thigh" in names
    ct = next(p for p in profiles if p.name == "ct_abdominal_muscle")
    assert ct.rules.slice_thickness_mm.min == 4 and ct.rules.kernel is None
    pipelines = configured_pipelines(profiles)
    assert pipelines["ct_muscle"].series_number_base == 7700
    assert builtin_pipelines()["ct_muscle"].series_number_base == 9100  # built-ins untouched
