"""The `myonode` command as a user runs it (subprocesses, real files)."""

import json
import shutil
import subprocess
import sys

import pydicom
import yaml

from support import (
    RESULT_MODALITIES,
    Storescp,
    free_port,
    myonode,
    received_modalities,
    wait_for_port,
    wait_until,
)


def test_config_show_prints_effective_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("MYONODE_DICOM__AE_TITLE", "FROMENV")
    completed = myonode("config", "show")
    assert completed.returncode == 0, completed.stderr
    shown = yaml.safe_load(completed.stdout)
    assert shown["dicom"]["ae_title"] == "FROMENV"
    assert shown["dispatch"]["destinations"] == ["calling"]


def test_bad_config_is_a_clear_error(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("dicom:\n  port: nope\n")
    completed = myonode("--config", config, "config", "show")
    assert completed.returncode == 2
    assert "dicom.port" in completed.stderr


def test_process_folder_writes_seg_and_sr(tmp_path, ct_series):
    folder = ct_series[0].parent
    (folder / "README.txt").write_text("not DICOM")
    out = tmp_path / "out"
    completed = myonode("process", folder, "--out", out)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "0xC000" in completed.stderr  # the text file was refused, with its status
    outputs = sorted(out.rglob("*.dcm"))
    assert sorted(p.name for p in outputs) == ["report.dcm", "seg.dcm", "sr.dcm"]
    assert sorted(pydicom.dcmread(p).Modality for p in outputs) == RESULT_MODALITIES
    assert "erector_spinae_left" in completed.stdout
    status = myonode(
        "status", "--json", env={"MYONODE_STORAGE__DATA_DIR": str(out), "PATH": "/usr/bin:/bin"}
    )
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["counts"]["jobs"] == {"done": 1}
    [decision] = next(iter(report["decisions"].values()))
    assert decision["selected"] == 1 and "axial CT" in decision["reason"]


def test_process_reports_refused_real_series(tmp_path, shared_data):
    out = tmp_path / "out"
    completed = myonode("process", shared_data / "ct" / "totalseg_dicom_series", "--out", out)
    assert completed.returncode == 1
    assert "refused 20 file(s): 0xA900" in completed.stderr.replace("\n", " ")


def test_send_serve_status(tmp_path, ct_series):
    port = free_port()
    archive = Storescp(tmp_path / "archive").start()
    config = tmp_path / "node.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dicom": {"port": port, "bind": "127.0.0.1"},
                "http": {"port": 0},
                "storage": {"data_dir": str(tmp_path / "data"), "min_free_mb": 0},
                "assemble": {"quiet_seconds": 0.5, "poll_seconds": 0.2},
                "peers": {"STORESCP": {"host": "127.0.0.1", "port": archive.port}},
                "dispatch": {"poll_seconds": 0.2},
            }
        )
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "myonode.app.cli", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        sent = myonode(
            "send", ct_series[0].parent, "--to", f"MYONODE@127.0.0.1:{port}", "--aet", "STORESCP"
        )
        assert sent.returncode == 0, sent.stderr
        assert f"sent {len(ct_series)} of {len(ct_series)}" in sent.stdout

        wait_until(lambda: received_modalities(archive) == RESULT_MODALITIES, timeout=120)
        status = myonode("--config", config, "status")
        assert status.returncode == 0
        assert "done" in status.stdout and "sent" in status.stdout
        bad = myonode("send", ct_series[0], "--to", "nonsense")
        assert bad.returncode == 2 and "AET@HOST:PORT" in bad.stderr
    finally:
        server.terminate()
        server.wait(30)
        archive.stop()


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    completed = myonode("demo", "--out", out, timeout=900)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "SEG, SR and PDF report delivered" in completed.stdout
    assert "mass" in completed.stdout
    received = sorted((out / "peer").glob("*.dcm"))
    assert sorted(pydicom.dcmread(p).Modality for p in received) == RESULT_MODALITIES
    shutil.rmtree(out)
