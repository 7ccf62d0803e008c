"""Durable files: what the node acknowledges must survive a crash or a power cut.

A write goes to a temporary file in the target directory, is fsynced, renamed over the final
name, and the directory is fsynced so the rename itself is on disk (POSIX gives no durability
for a rename otherwise).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from myonode.store.repository import JobRecord

_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class OutOfSpace(OSError):
    """The disk is full or below the configured reserve."""


def safe_component(uid: str) -> str:
    """A file-name-safe form of a UID.

    Conformant UIDs (digits and dots, at most 64 characters) are used as they are; anything
    else (letters, slashes, over-long) is replaced by its SHA-1 so a hostile or broken UID can
    never escape the storage tree.
    """
    if len(uid) <= 64 and _UID_PATTERN.match(uid):
        return uid
    return "x" + hashlib.sha1(uid.encode("utf-8", "surrogateescape")).hexdigest()


def results_dir_for(results_root: Path, job: JobRecord) -> Path:
    """Where a job writes its outputs: a path that depends only on its inputs and pipeline,
    so a re-run (or a redelivered job) replaces its earlier outputs."""
    return (
        results_root / safe_component(job.study_uid) / safe_component(job.series_uid) / job.pipeline
    )


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_free_space(directory: Path, needed_bytes: int, reserve_bytes: int) -> None:
    """Raise OutOfSpace when writing `needed_bytes` would leave less than `reserve_bytes`."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free - needed_bytes < reserve_bytes:
        raise OutOfSpace(
            errno.ENOSPC,
            f"{free // 2**20} MiB free on {probe}, {reserve_bytes // 2**20} MiB reserve "
            f"and {needed_bytes} bytes needed",
        )


def write_durably(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably (temp file, fsync, rename, dir fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".incoming-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutOfSpace(exc.errno, f"disk full writing {path}: {exc.strerror}") from exc
        raise
    fsync_directory(path.parent)


def remove_stale_partials(root: Path) -> int:
    """Delete temporary files left by a crash mid-write; they were never acknowledged."""
    removed = 0
    if root.exists():
        for stale in root.rglob(".incoming-*.part"):
            stale.unlink(missing_ok=True)
            removed += 1
    return removed
