"""The DICOM listener over real loopback associations (pynetdicom and dcmtk peers)."""

import subprocess

import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless
from pynetdicom import AE

from myonode.dispatch.scu import describe, send_files

from support import metric, require_tool, sql, wait_until


def dataset_bytes(path) -> bytes:
    """The data set part of a Part 10 file (what crossed the network), without the meta."""
    raw = open(path, "rb").read()
    meta_length = int.from_bytes(raw[140:144], "little")  # (0002,0000) value, PS3.10 7.1
    return raw[144 + meta_length :]


@pytest.fixture
def node(settings, node_factory):
    return node_factory(settings)


def test_echo(node):
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title="MYONODE")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_store_and_read_back(node, ct_series):
    results = send_files(
        [describe(p) for p in ct_series], "SCANNER", "MYONODE", "127.0.0.1", node.port
    )
    assert all(r.ok for r in results)
    rows = sql(node.index, "SELECT * FROM instances ORDER BY path")
    assert len(rows) == len(ct_series)
    stored = {pydicom.dcmread(r["path"]).SOPInstanceUID: r["path"] for r in rows}
    for path in ct_series:
        original = pydicom.dcmread(path)
        assert dataset_bytes(stored[original.SOPInstanceUID]) == dataset_bytes(path)
    assert {r["calling_aet"] for r in rows} == {"SCANNER"}


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_transfer_syntax_stored_byte_identical(node, ct_series, tmp_path, syntax):
    ds = pydicom.dcmread(ct_series[0])
    ds.compress(syntax)
    path = tmp_path / "compressed.dcm"
    ds.save_as(path)
    [result] = send_files([describe(path)], "SCANNER", "MYONODE", "127.0.0.1", node.port)
    assert result.ok
    row = sql(node.index, "SELECT * FROM instances")[0]
    assert row["transfer_syntax"] == syntax
    assert dataset_bytes(row["path"]) == dataset_bytes(path)


def test_duplicate_store_is_idempotent(node, ct_series):
    for _ in range(2):
        assert all(
            r.ok
            for r in send_files([describe(ct_series[0])], "A", "MYONODE", "127.0.0.1", node.port)
        )
    assert len(sql(node.index, "SELECT * FROM instances")) == 1
    assert sql(node.index, "SELECT change_seq FROM studies")[0][0] == 1
    assert metric(node, "myonode_instances_total", outcome="stored", status="0x0000") == 1
    assert metric(node, "myonode_instances_total", outcome="duplicate", status="0x0000") == 1


def test_disallowed_calling_ae_is_rejected(tmp_path, node_factory, ct_series):
    from conftest import make_settings

    node = node_factory(make_settings(tmp_path, **{"dicom.allowed_calling_aets": ["PACS"]}))
    from myonode.dispatch.scu import SendError

    with pytest.raises(SendError):
        send_files([describe(ct_series[0])], "STRANGER", "MYONODE", "127.0.0.1", node.port)
    assert all(
        r.ok
        for r in send_files([describe(ct_series[0])], "PACS", "MYONODE", "127.0.0.1", node.port)
    )


def test_free_space_reserve_gives_a700(tmp_path, node_factory, ct_series):
    from conftest import make_settings

    node = node_factory(make_settings(tmp_path, **{"storage.min_free_mb": 2**40}))
    [result] = send_files([describe(ct_series[0])], "A", "MYONODE", "127.0.0.1", node.port)
    assert result.status == 0xA700
    assert not sql(node.index, "SELECT * FROM instances")
    assert metric(node, "myonode_instances_total", outcome="refused", status="0xA700") == 1


def test_real_disk_full_gives_a700(tmp_path, node_factory):
    """A real, small tmpfs fills up: ENOSPC must become 0xA700, never a false success."""
    from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series

    from conftest import make_settings

    array, geometry = abdomen_phantom(shape=(12, 256, 256))
    ct_series = write_ct_series(array, geometry, tmp_path / "big", seed="disk-full")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        settings = make_settings(tmp_path, **{"storage.data_dir": str(mount_point)})
        node = node_factory(settings)
        results = send_files(
            [describe(p) for p in ct_series], "A", "MYONODE", "127.0.0.1", node.port
        )
        statuses = [r.status for r in results]
        assert 0xA700 in statuses, statuses
        assert set(statuses) <= {0x0000, 0xA700}
        stored = {r["sop_uid"] for r in sql(node.index, "SELECT sop_uid FROM instances")}
        acknowledged = {pydicom.dcmread(r.path).SOPInstanceUID for r in results if r.ok}
        assert stored == acknowledged
        node.stop()
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)  # still open: detach


def test_storescu_sends_the_real_series(node, real_series_with_uids):
    """dcmtk storescu as the sender, with the real JPEG 2000 series (UIDs filled in)."""
    require_tool("storescu")
    completed = subprocess.run(
        [
            "storescu",
            "-xv",
            "-aec",
            "MYONODE",
            "-aet",
            "DCMTK",
            "127.0.0.1",
            str(node.port),
            *map(str, real_series_with_uids),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    rows = sql(node.index, "SELECT * FROM instances")
    assert len(rows) == 20
    assert {r["transfer_syntax"] for r in rows} == {JPEG2000Lossless}


def test_real_series_with_empty_uids_gets_the_documented_decision(node, shared_data, caplog):
    """Refused, never stored with invented UIDs: dcmtk cannot even negotiate it (empty SOP
    class); pynetdicom, which sends from the file meta, gets 0xA900 and the log says why."""
    require_tool("storescu")
    files = sorted((shared_data / "ct" / "totalseg_dicom_series").iterdir())
    completed = subprocess.run(
        ["storescu", "-aec", "MYONODE", "127.0.0.1", str(node.port), str(files[0])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode != 0
    assert "presentation context" in (completed.stdout + completed.stderr).lower()
    results = send_files([describe(p) for p in files], "PACS", "MYONODE", "127.0.0.1", node.port)
    assert {r.status for r in results} == {0xA900}
    assert "StudyInstanceUID" in results[0].comment
    assert "empty or missing" in caplog.text
    assert not sql(node.index, "SELECT * FROM instances")


def test_unparseable_dataset_gets_failure_not_crash(node, ct_series):
    ae = AE(ae_title="FUZZ")
    ae.add_requested_context(pydicom.uid.CTImageStorage, pydicom.uid.ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="MYONODE")
    ds = pydicom.dcmread(ct_series[0])
    ds.PixelData = b""
    ds.Rows = 0
    status = assoc.send_c_store(ds)
    assert status.Status == 0xA900
    assoc.release()
    assert all(
        r.ok for r in send_files([describe(ct_series[1])], "A", "MYONODE", "127.0.0.1", node.port)
    )


def test_max_associations_rejects_the_extra_one(tmp_path, node_factory):
    from conftest import make_settings

    node = node_factory(make_settings(tmp_path, **{"dicom.max_associations": 1}))
    ae = AE(ae_title="FIRST")
    ae.add_requested_context("1.2.840.10008.1.1")
    first = ae.associate("127.0.0.1", node.port, ae_title="MYONODE")
    assert first.is_established
    second = ae.associate("127.0.0.1", node.port, ae_title="MYONODE")
    assert second.is_rejected
    first.release()

    def accepted_again():  # the server frees the slot once the first association's thread ends
        third = ae.associate("127.0.0.1", node.port, ae_title="MYONODE")
        if third.is_established:
            third.release()
            return True
        return False

    wait_until(accepted_again, timeout=20, interval=0.2)
