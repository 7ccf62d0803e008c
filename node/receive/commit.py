"""Group commit: concurrent associations share one directory fsync and one index commit.

Each C-STORE must be on disk and in the index before it is acknowledged. Done one by one,
every instance pays its own directory fsync and its own SQLite commit (a WAL fsync); with
several associations sending at once those fsyncs queue behind each other. Here the first
thread to arrive becomes the leader: it takes everything pending, fsyncs each directory once,
commits all index rows in one transaction and wakes the others; threads that arrive meanwhile
form the next group. Nobody returns before its own instance is durable, so the guarantee is
the one of a single commit; only the number of fsyncs changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from myonode.store.files import fsync_directory

T = TypeVar("T")


@dataclass
class _Waiter(Generic[T]):
    item: T
    directory: Path | None
    done: bool = False
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Make items durable in groups: fsync their directories, then `flush` them together."""

    def __init__(self, flush: Callable[[Sequence[T]], Any]) -> None:
        self._flush = flush
        self._cond = threading.Condition()
        self._pending: list[_Waiter[T]] = []
        self._busy = False

    def commit(self, item: T, directory: Path | None = None) -> None:
        """Return once `item` (and the rename into `directory`) is durable; raise if not."""
        waiter = _Waiter(item, directory)
        with self._cond:
            self._pending.append(waiter)
            while self._busy and not waiter.done:
                self._cond.wait()
            if waiter.done:
                if waiter.error is not None:
                    raise waiter.error
                return
            self._busy = True
            batch, self._pending = self._pending, []
        self._run(batch)
        with self._cond:
            for member in batch:
                member.done = True
            self._busy = False
            self._cond.notify_all()
        if waiter.error is not None:
            raise waiter.error

    def _run(self, batch: list[_Waiter[T]]) -> None:
        """Flush the group; if that fails, each item alone, so one bad item (a value the
        index cannot take) fails only its own C-STORE."""
        try:
            for directory in {w.directory for w in batch if w.directory is not None}:
                fsync_directory(directory)
            self._flush([w.item for w in batch])
            return
        except BaseException as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
        for member in batch:
            try:
                if member.directory is not None:
                    fsync_directory(member.directory)
                self._flush([member.item])
            except BaseException as exc:
                member.error = exc
