"""The whole flow on loopback: receive, assemble, route, segment, encode, dispatch."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import yaml
from pydicom.sr.codedict import codes

from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.core.volume import load_series
from myonode.dispatch.scu import describe, send_files

from conftest import make_settings
from support import (
    RESULT_MODALITIES,
    Storescp,
    free_port,
    received_modalities,
    sql,
    sr_texts,
    wait_for_port,
    wait_until,
)


@pytest.fixture
def storescp(tmp_path):
    peer = Storescp(tmp_path / "archive").start()
    yield peer
    peer.stop()


def test_seg_and_sr_come_back_and_agree(tmp_path, node_factory, ct_series, storescp):
    node = node_factory(make_settings(tmp_path), peers={storescp.ae_title: storescp.port})
    results = send_files(
        [describe(p) for p in ct_series], storescp.ae_title, "MYONODE", "127.0.0.1", node.port
    )
    assert all(r.ok for r in results)
    wait_until(lambda: received_modalities(storescp) == RESULT_MODALITIES, timeout=120)

    by_modality = {pydicom.dcmread(p).Modality: p for p in storescp.files()}
    seg = hd.seg.segread(by_modality["SEG"])
    sr = hd.sr.srread(by_modality["SR"])
    source = load_series(ct_series)
    assert seg.SegmentationType == "BINARY"
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.datasets[0].SeriesInstanceUID
    voxels = int(np.count_nonzero(seg.pixel_array))
    assert voxels > 0

    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(seg.SegmentSequence)
    total_cm3 = 0.0
    for group in groups:
        [volume] = group.get_measurements(name=codes.SCT.Volume)
        assert str(volume.unit.value) == "cm3"
        assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        mass = next(m for m in group.get_measurements() if m.name.value == "118538004")
        assert mass.value == pytest.approx(volume.value * 1.06, rel=1e-12)
        total_cm3 += volume.value
    # Labels are exclusive, so the segments' volumes add up to every SEG voxel.
    assert total_cm3 == pytest.approx(voxels * source.geometry.voxel_volume_mm3 / 1000, rel=1e-9)
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "myonode-classical-ct"
    text = " ".join(sr_texts(sr))
    assert "classical" in text and "Intended use: research" in text


def test_outputs_are_deterministic_per_series_and_version(tmp_path, ct_series):
    from myonode.worker.runner import Runner

    runner = Runner()
    first = runner.run("ct_muscle", ct_series, tmp_path / "a")
    second = runner.run("ct_muscle", ct_series, tmp_path / "b")
    assert [f.sop_uid for f in first.files] == [f.sop_uid for f in second.files]
    assert runner.engine_loads == 1


def test_destination_down_then_up_delivers_everything(tmp_path, node_factory, ct_series):
    port = free_port()
    node = node_factory(make_settings(tmp_path), peers={"PACS": port})
    assert all(
        r.ok
        for r in send_files(
            [describe(p) for p in ct_series], "PACS", "MYONODE", "127.0.0.1", node.port
        )
    )

    def failing_attempts():
        rows = sql(node.index, "SELECT * FROM outbox")
        return len(rows) == 3 and all(r["attempts"] >= 2 and r["state"] == "pending" for r in rows)

    wait_until(failing_attempts, timeout=60)
    assert "rejected or failed" in sql(node.index, "SELECT last_error FROM outbox")[0][0]
    peer = Storescp(tmp_path / "late-archive", ae_title="PACS", port=port).start()
    try:
        wait_until(lambda: received_modalities(peer) == RESULT_MODALITIES, timeout=60)
        wait_until(lambda: node.index.counts()["outbox"] == {"sent": 3}, timeout=10)
    finally:
        peer.stop()


def test_unknown_calling_ae_keeps_results_pending_with_reason(tmp_path, node_factory, ct_series):
    node = node_factory(make_settings(tmp_path))
    send_files([describe(p) for p in ct_series], "NOBODY", "MYONODE", "127.0.0.1", node.port)
    wait_until(
        lambda: sql(node.index, "SELECT last_error FROM outbox WHERE last_error IS NOT NULL"),
        timeout=60,
    )
    error = sql(node.index, "SELECT last_error FROM outbox")[0][0]
    assert "NOBODY" in error and "peers" in error
    assert node.index.counts()["outbox"] == {"pending": 3}


def test_late_arrival_reopens_study(tmp_path, node_factory, ct_series, storescp):
    node = node_factory(make_settings(tmp_path), peers={storescp.ae_title: storescp.port})
    first, late = ct_series[:-1], ct_series[-1:]
    send_files([describe(p) for p in first], storescp.ae_title, "MYONODE", "127.0.0.1", node.port)
    wait_until(lambda: node.index.counts()["jobs"].get("done") == 1, timeout=60)
    send_files([describe(p) for p in late], storescp.ae_title, "MYONODE", "127.0.0.1", node.port)
    wait_until(lambda: node.index.counts()["jobs"].get("done") == 2, timeout=60)
    inputs = sql(node.index, "SELECT input_digest FROM jobs ORDER BY id")
    assert inputs[0][0] != inputs[1][0]
    # Sending the same instances again changes nothing and routes nothing new.
    send_files(
        [describe(p) for p in ct_series], storescp.ae_title, "MYONODE", "127.0.0.1", node.port
    )
    time.sleep(1.5)
    assert node.index.counts()["jobs"] == {"done": 2}


def _start_node_process(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "myonode.app.cli", "--config", str(config), "serve"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
def test_kill_9_mid_transfer_loses_nothing_and_delivers_once(tmp_path, storescp):
    array, geometry = abdomen_phantom(shape=(60, 96, 96), pixel_mm=4.0)
    series = write_ct_series(array, geometry, tmp_path / "ct", seed="kill-9")
    port = free_port()
    data_dir = tmp_path / "node"
    config = tmp_path / "node.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dicom": {"port": port, "bind": "127.0.0.1"},
                "http": {"port": 0},
                "storage": {"data_dir": str(data_dir), "min_free_mb": 0},
                "assemble": {"quiet_seconds": 4, "poll_seconds": 0.2},
                "peers": {storescp.ae_title: {"host": "127.0.0.1", "port": storescp.port}},
                "dispatch": {
                    "poll_seconds": 0.2,
                    "retry": {"initial_seconds": 0.5, "max_seconds": 2},
                },
            }
        )
    )
    log = tmp_path / "node.log"
    process = _start_node_process(config, log)
    wait_for_port(port)
    acknowledged: list[str] = []

    def sender():
        try:
            send_files(
                [describe(p) for p in series],
                storescp.ae_title,
                "MYONODE",
                "127.0.0.1",
                port,
                on_result=lambda r: r.ok and acknowledged.append(str(r.path)),
                timeout_s=5,
            )
        except Exception:
            pass  # the association dies with the node

    thread = threading.Thread(target=sender)
    thread.start()
    wait_until(lambda: len(acknowledged) >= 20, timeout=60, interval=0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    thread.join(30)
    assert 20 <= len(acknowledged) < len(series), "the kill must land mid-transfer"

    process = _start_node_process(config, log)
    try:
        wait_for_port(port)
        import sqlite3

        with sqlite3.connect(data_dir / "index.sqlite3") as db:
            stored = {row[0]: row[1] for row in db.execute("SELECT sop_uid, path FROM instances")}
        for path in acknowledged:
            sop_uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
            assert sop_uid in stored, f"acknowledged instance {sop_uid} lost"
            assert pydicom.dcmread(stored[sop_uid]).SOPInstanceUID == sop_uid
        # The sender retries the whole series, as a modality would.
        assert all(
            r.ok
            for r in send_files(
                [describe(p) for p in series], storescp.ae_title, "MYONODE", "127.0.0.1", port
            )
        )
        wait_until(lambda: received_modalities(storescp) == RESULT_MODALITIES, timeout=120)
        time.sleep(6)  # longer than the quiet period: a second processing would show up
        assert received_modalities(storescp) == RESULT_MODALITIES
        with sqlite3.connect(data_dir / "index.sqlite3") as db:
            assert db.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == len(series)
            assert db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall() == [
                ("done", 1)
            ]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
