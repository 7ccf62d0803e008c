"""Durable files: what the node acknowledges must survive a crash or a power cut.

A write goes to a temporary file in the target directory, is fsynced, renamed over the final
name, and the directory is fsynced so the rename itself is on disk (POSIX gives no durability
for a rename otherwise).

Everything under the data directory holds patient data, so it is the node's alone: files
0600 (mkstemp's mode, kept by the rename; the index made so before SQLite opens it) and
directories 0700, whatever the process umask.
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


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private_dirs(directory: Path) -> None:
    """Create `directory` and its missing parents 0700 (mkdir's mode skips parents)."""
    missing = []
    probe = Path(directory)
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue
        path.chmod(PRIVATE_DIR)  # mkdir's mode is masked by the umask


def make_private_file(path: Path) -> None:
    """Create `path` empty with 0600 if absent, or restrict an existing one (and SQLite's
    -wal and -shm beside it) to 0600."""
    make_private_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    os.close(fd)
    for companion in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if companion.exists():
            companion.chmod(PRIVATE_FILE)


def prepare_data_dir(data_dir: Path, index_path: Path | None) -> None:
    """The data directory 0700 (also when it existed before) and the SQLite index file 0600
    (`index_path` None: the store is PostgreSQL, no index file)."""
    make_private_dirs(data_dir)
    data_dir.chmod(PRIVATE_DIR)
    if index_path is not None:
        make_private_file(index_path)


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
    make_private_dirs(path.parent)
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
