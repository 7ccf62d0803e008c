import errno

import pytest

from myonode.store.files import (
    OutOfSpace,
    ensure_free_space,
    remove_stale_partials,
    safe_component,
    write_durably,
)


def test_write_durably_replaces_atomically(tmp_path):
    target = tmp_path / "a" / "b.dcm"
    write_durably(target, b"first")
    write_durably(target, b"second")
    assert target.read_bytes() == b"second"
    assert list(target.parent.iterdir()) == [target]  # no temp file left behind


def test_safe_component_keeps_uids_and_neutralises_the_rest():
    assert safe_component("1.2.840.10008.1") == "1.2.840.10008.1"
    hostile = safe_component("../../etc/passwd")
    assert "/" not in hostile and hostile.startswith("x")
    assert safe_component("1." + "2" * 80).startswith("x")


def test_free_space_reserve(tmp_path):
    ensure_free_space(tmp_path, 10, 0)
    with pytest.raises(OutOfSpace) as caught:
        ensure_free_space(tmp_path, 10, 2**62)
    assert caught.value.errno == errno.ENOSPC


def test_stale_partials_are_removed(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / ".incoming-abc.part").write_bytes(b"x")
    (tmp_path / "s" / "kept.dcm").write_bytes(b"x")
    assert remove_stale_partials(tmp_path) == 1
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["kept.dcm"]
