"""Retention: the node keeps patient images only as long as it needs them.

A study may go once it is settled: routed since its last instance, and its status is `done`
(measured, every output delivered) or `not routed` (nothing to measure). Studies still
receiving, processing, delivering or retrying, failed jobs, deliveries that ended failed
and withheld results are never touched: someone still needs them. Of a study that goes,
its received instances (only files under the node's own instances directory; `myonode
process` indexes folders in place, which are not the node's to delete) and its outputs are
deleted, and its instance rows dropped; the index keeps its routing, jobs and measurements.

Two triggers, either or both (`storage.retention`): age (last instance received more than
`keep_days` ago), and free space (while less than `free_mb` is free, oldest first).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from myonode.store.files import safe_component
from myonode.store.repository import Store

PRUNABLE_STATUSES = ("done", "not routed")


@dataclass
class PruneReport:
    """What was (or, in a dry run, would be) deleted."""

    dry_run: bool
    studies: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0


def _within(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def study_files(index: Store, study_uid: str, instances_dir: Path, results_dir: Path) -> list[Path]:
    """The study's files that retention may delete: its stored instances and its outputs."""
    files = [Path(row.path) for row in index.study_instances(study_uid)]
    files = [p for p in files if p.is_file() and _within(p, instances_dir)]
    outputs = results_dir / safe_component(study_uid)
    if outputs.is_dir():
        files += [p for p in outputs.rglob("*") if p.is_file()]
    return files


def _remove_empty_parents(path: Path, root: Path) -> None:
    """Remove the now empty directories between a deleted file and `root` (exclusive)."""
    for parent in path.parents:
        if parent == root or not _within(parent, root):
            return
        try:
            parent.rmdir()
        except OSError:  # not empty
            return


def prune(
    index: Store,
    instances_dir: Path,
    results_dir: Path,
    keep_days: float | None,
    free_mb: int | None,
    dry_run: bool = False,
    now: float | None = None,
) -> PruneReport:
    """Delete (or list, with `dry_run`) the settled studies due by age or free space."""
    now = time.time() if now is None else now
    report = PruneReport(dry_run)
    if keep_days is None and free_mb is None:
        return report
    free = shutil.disk_usage(_existing(instances_dir)).free
    for study in index.settled_studies():
        uid = study["study_uid"]
        old = keep_days is not None and (study["last_received_at"] or 0) < now - keep_days * 86400
        short = free_mb is not None and free + report.bytes < free_mb * 2**20
        if not (old or short) or index.study_status(uid) not in PRUNABLE_STATUSES:
            continue
        files = study_files(index, uid, instances_dir, results_dir)
        if not files:  # pruned before, or indexed in place
            continue
        report.studies.append(uid)
        report.files += len(files)
        report.bytes += sum(p.stat().st_size for p in files)
        if dry_run:
            continue
        for path in files:
            path.unlink(missing_ok=True)
            root = instances_dir if _within(path, instances_dir) else results_dir
            _remove_empty_parents(path, root)
        index.forget_instances(uid)
    return report


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path
