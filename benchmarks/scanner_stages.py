"""Where the time of one scanner-resolution CT job goes: wall and CPU seconds per stage.

    .venv/bin/python benchmarks/scanner_stages.py [--data DIR] [--slices 300] [--workdir DIR]

Builds the series of `scanner_cost.py` (512 x 512, 0.7 mm pixels, 1.1 mm slices) and runs
the stages of `Runner.run` on it in this process, in its order, each timed: read and
assemble the slices, classical-ct (its parts timed inside: landmarks, body wall, posterior
groups with the psoas, glutei and iliacus, wall groups, the working grid's resampling and
map-back), QC, measure, SEG, SR, PDF, key image, writing the files. The job's ingest and
routing (in `scanner_cost.py`'s figure) are not here. CPU seconds are the figure to compare
on a machine busy with other work. Exit status 2 without the shared data.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scanner_cost import build_series

import myonode.infer.engines.classical_ct as classical_ct
from myonode.app.demo.shared_data import shared_data_dir
from myonode.core.patient import patient_facts
from myonode.core.volume import load_series
from myonode.encode import conform_copied_attributes
from myonode.encode.pdf import render_key_image
from myonode.encode.seg import build_segmentation, segment_numbers
from myonode.encode.sr import build_report
from myonode.infer.engines.working_grid import WorkingGrid
from myonode.measure.assessment import assess
from myonode.qc.checks import quality_control
from myonode.worker.runner import Runner, _write, output_identity

# The engine's parts as `segment_canonical` calls them (names in `classical_ct`); psoas
# tracking runs inside the posterior groups and is counted in both.
ENGINE_PARTS = (
    "ct_landmarks",
    "wall_band",
    "posterior_groups",
    "track_psoas",
    "iliacus",
    "gluteal_groups",
    "wall_groups",
)


class Clock:
    """Wall and CPU seconds per named stage, in the order first seen."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def run(self, name: str, work: Callable, *args, **kwargs):
        self.wall.setdefault(name, 0.0)
        self.cpu.setdefault(name, 0.0)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return work(*args, **kwargs)
        finally:
            self.wall[name] += time.perf_counter() - wall
            self.cpu[name] += time.process_time() - cpu

    def timed(self, name: str, work: Callable) -> Callable:
        return lambda *args, **kwargs: self.run(name, work, *args, **kwargs)


def job_stages(series: Path, out: Path, clock: Clock) -> None:
    """One classical-ct job on `series`, as `Runner.run` does it, every stage timed."""
    for name in ENGINE_PARTS:
        setattr(classical_ct, name, clock.timed(f"  {name}", getattr(classical_ct, name)))
    for name in ("down", "up"):
        setattr(
            WorkingGrid, name, clock.timed(f"  working grid {name}", getattr(WorkingGrid, name))
        )
    volume = clock.run("read + assemble", load_series, sorted(series.iterdir()))
    clock.run("read + assemble", conform_copied_attributes, volume.datasets)
    runner = Runner()
    pipeline, engine = runner.pipelines["ct_muscle"], runner.engine("ct_muscle")
    label_map = clock.run("engine (classical-ct)", engine.segment, volume)
    source = volume.datasets[0]
    modality, facts = str(source.get("Modality", "")), patient_facts(source)
    quality = clock.run("QC", quality_control, volume, label_map, modality, facts)
    assessment = clock.run("measure", assess, volume, label_map, modality, facts, quality=quality)
    identity, numbers = output_identity(pipeline, source, engine), segment_numbers(label_map)
    seg = clock.run(
        "SEG (highdicom)",
        build_segmentation,
        volume,
        label_map,
        engine.algorithm,
        identity,
        runner.device,
        quality,
    )
    sr = clock.run(
        "SR",
        build_report,
        volume.datasets,
        seg,
        numbers,
        assessment,
        engine.algorithm,
        identity,
        runner.device,
        pipeline.procedure,
        [],
        slices_are_sources=volume.slices_are_sources,
        frame_numbers=volume.frame_numbers,
    )
    pdf = clock.run(
        "PDF", runner._pdf, "report", volume, label_map, assessment, engine, identity, sr
    )
    clock.run("key image", render_key_image, volume, label_map)
    clock.run("write SEG, SR, PDF", _write, out, seg=seg, sr=sr, report=pdf)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data directory")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    data = args.data or shared_data_dir()
    if data is None or not data.is_dir():
        print("shared data not found: pass --data or set MYONODE_TEST_DATA", file=sys.stderr)
        return 2
    clock = Clock()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        series, out = Path(tmp) / "series", Path(tmp) / "out"
        count = build_series(data, series, args.slices)
        out.mkdir()
        job_stages(series, out, clock)
    print(f"series: {count} images of 512 x 512 (0.7 mm pixels, 1.1 mm slices)")
    print(f"{'stage':32} {'wall s':>7} {'CPU s':>7}")
    for name in clock.wall:
        print(f"{name:32} {clock.wall[name]:7.2f} {clock.cpu[name]:7.2f}")
    top = [name for name in clock.wall if not name.startswith(" ")]
    wall, cpu = sum(clock.wall[n] for n in top), sum(clock.cpu[n] for n in top)
    print(f"{'job total':32} {wall:7.2f} {cpu:7.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"peak RSS of this process (series building included): {peak:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
