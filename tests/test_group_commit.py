"""Group commit: concurrent commits share flushes, a bad item fails alone, nobody returns
before its own item is flushed."""

from __future__ import annotations

import threading
import time

import pytest

from myonode.receive.commit import GroupCommit


def test_concurrent_commits_are_grouped_and_each_waits_for_its_own(tmp_path):
    flushed: list[list[int]] = []

    def flush(items):
        time.sleep(0.05)  # a slow fsync: others arrive meanwhile
        flushed.append(list(items))

    group: GroupCommit[int] = GroupCommit(flush)
    returned: dict[int, bool] = {}

    def commit(item: int) -> None:
        group.commit(item, tmp_path)
        returned[item] = any(item in batch for batch in flushed)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(i for batch in flushed for i in batch) == list(range(20))
    assert len(flushed) < 20  # grouped: fewer flushes than items
    assert returned == {i: True for i in range(20)}  # each returned after its own flush


def test_a_bad_item_fails_alone(tmp_path):
    def flush(items):
        if 13 in items:
            raise ValueError("the index cannot take item 13")

    group: GroupCommit[int] = GroupCommit(flush)
    errors: dict[int, Exception] = {}
    barrier = threading.Barrier(8)

    def commit(item: int) -> None:
        barrier.wait()
        try:
            group.commit(item)
        except ValueError as exc:
            errors[item] = exc

    threads = [threading.Thread(target=commit, args=(i,)) for i in (1, 2, 3, 13, 4, 5, 6, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert set(errors) == {13}
    with pytest.raises(ValueError):
        group.commit(13)
