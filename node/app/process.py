"""`myonode process`: the service's stages run on a folder, without the network.

The folder's files go through the same `Ingestor` checks (indexed in place, not copied), the
same assembler and router, and the same job runner; results land in `out_dir` with an index
(`index.sqlite3`) that `myonode status`/`results` can read. This is how a research team
reprocesses a cohort.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from myonode.assemble.study import assemble_stable_studies
from myonode.core.config import Settings, load_settings
from myonode.pipelines import pipeline_versions
from myonode.queue.local import LocalQueue
from myonode.receive.ingest import Ingestor
from myonode.route.profiles import configured_pipelines, load_profiles, profile_dirs
from myonode.store.index import Index
from myonode.worker.loop import run_next_job
from myonode.worker.runner import Runner

log = logging.getLogger(__name__)


@dataclass
class ProcessReport:
    files: int = 0
    stored: int = 0
    refused: Counter = field(default_factory=Counter)
    jobs_done: int = 0
    jobs_failed: int = 0


def offline_settings(out_dir: Path, base: Settings | None = None) -> Settings:
    """Settings for an offline run: everything under `out_dir`, no destinations."""
    settings = base or load_settings()
    return settings.model_copy(
        update={
            "storage": settings.storage.model_copy(update={"data_dir": out_dir, "min_free_mb": 0}),
            "dispatch": settings.dispatch.model_copy(update={"destinations": []}),
        }
    )


def process_folder(
    source: Path, out_dir: Path, settings: Settings | None = None, runner: Runner | None = None
) -> tuple[ProcessReport, Index]:
    settings = offline_settings(out_dir, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = Index(settings.index_path)
    ingestor = Ingestor(settings, index)
    profiles = load_profiles(profile_dirs(settings.routing.profiles_dir))
    runner = runner or Runner(pipelines=configured_pipelines(profiles))
    report = ProcessReport()
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        report.files += 1
        outcome = ingestor.ingest(path.read_bytes(), in_place=path.resolve())
        if outcome.ok:
            report.stored += 1
        else:
            report.refused[f"0x{outcome.status:04X} {outcome.reason}"] += 1
    assemble_stable_studies(
        index, pipeline_versions(runner.pipelines), quiet_seconds=0, profiles=profiles
    )
    queue = LocalQueue(index)
    while run_next_job(settings, index, queue, runner):
        pass
    counts = index.counts()["jobs"]
    report.jobs_done, report.jobs_failed = counts.get("done", 0), counts.get("failed", 0)
    return report, index
