"""Where the time of one scanner-resolution CT job goes: wall and CPU seconds per stage.

    .venv/bin/python benchmarks/scanner_stages.py [--data DIR] [--slices 300] [--slice-mm 1.1]
        [--workdir DIR]

Builds the series of `scanner_cost.py` (512 x 512, 0.7 mm pixels, 1.1 mm slices) and runs
`Runner.run` on it in this process with each of its stages timed where it is called: read and
assemble the slices, classical-ct (its parts timed inside: landmarks, body wall, posterior
groups with the psoas, glutei and iliacus, wall groups, the working grid's resampling and
map-back), QC, measure, SEG, SR, PDF, key image, writing the files. The job's ingest and
routing (in `scanner_cost.py`'s figure) are not here. CPU seconds are the figure to compare
on a machine busy with other work. Exit status 2 without the shared data.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scanner_cost import build_series, series_arguments

import myonode.infer.engines.classical_ct as classical_ct
import myonode.worker.runner as runner_module
from myonode.infer.engines.working_grid import WorkingGrid
from myonode.worker.runner import Runner

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
        self._running: set[str] = set()

    def run(self, name: str, work: Callable, *args, **kwargs):
        """Time `work` under `name`; a call inside one of the same name is already counted."""
        if name in self._running:
            return work(*args, **kwargs)
        self.wall.setdefault(name, 0.0)
        self.cpu.setdefault(name, 0.0)
        self._running.add(name)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return work(*args, **kwargs)
        finally:
            self.wall[name] += time.perf_counter() - wall
            self.cpu[name] += time.process_time() - cpu
            self._running.discard(name)

    def timed(self, name: str, work: Callable) -> Callable:
        return lambda *args, **kwargs: self.run(name, work, *args, **kwargs)


# `Runner.run`'s stages, by the names its module calls them: each is timed where it runs.
RUNNER_STAGES = {
    "load_series": "read + assemble",
    "conform_copied_attributes": "read + assemble",
    "quality_control": "QC",
    "assess": "measure",
    "build_segmentation": "SEG (highdicom)",
    "build_report": "SR",
    "render_pdf": "PDF",
    "build_encapsulated_pdf": "PDF",
    "render_key_image": "key image",
    "write_durably": "write SEG, SR, PDF",
    "_write": "write SEG, SR, PDF",
}


def job_stages(series: Path, out: Path, clock: Clock) -> None:
    """One classical-ct job on `series` through `Runner.run` itself, every stage timed."""
    for name in ENGINE_PARTS:
        setattr(classical_ct, name, clock.timed(f"  {name}", getattr(classical_ct, name)))
    for name in ("down", "up"):
        setattr(
            WorkingGrid, name, clock.timed(f"  working grid {name}", getattr(WorkingGrid, name))
        )
    for name, stage in RUNNER_STAGES.items():
        setattr(runner_module, name, clock.timed(stage, getattr(runner_module, name)))
    runner = Runner()
    engine = runner.engine("ct_muscle")
    engine.segment = clock.timed("engine (classical-ct)", engine.segment)
    runner.run("ct_muscle", sorted(series.iterdir()), out)


def main(argv: list[str] | None = None) -> int:
    args, data = series_arguments(__doc__.splitlines()[0], argv)
    clock = Clock()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        series, out = Path(tmp) / "series", Path(tmp) / "out"
        count = build_series(data, series, args.slices, args.slice_mm)
        out.mkdir()
        job_stages(series, out, clock)
    print(f"series: {count} images of 512 x 512 (0.7 mm pixels, {args.slice_mm} mm slices)")
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
