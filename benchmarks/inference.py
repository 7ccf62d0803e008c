"""Resident inference: first job (load + infer) vs second job (infer on the resident model).

    .venv/bin/python benchmarks/inference.py [--slices 300] [--bundle PATH | --paper-size]
                                             [--device cpu|cuda]

Segments a 512x512xN CT volume (an abdomen phantom slice, N = 300 by default) with a segmentation
bundle through the node's engine interface twice, as a worker would for two jobs, and prints
the time of each job, their ratio and the peak memory (process RSS on CPU; allocated CUDA
memory on a GPU). Every anchor pipeline reloads its model per job; the node keeps it.

The default bundle is the committed CT demo bundle (seed 000 architecture at demo width).
`--paper-size` times the paper-size seed 000 network instead, with randomly initialised
weights in a temporary bundle: timing only, the output means nothing.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from myonode.app.demo.synthetic import abdomen_phantom
from myonode.core.volume import Volume
from myonode.infer.engines.bundle import BundleEngine
from myonode.models import BUNDLES_DIR
from myonode.models.bundle import load_bundle, record_weights, write_bundle
from myonode.models.runtime import build_network
from myonode.models.templates import ct_muscle_seed000

DEFAULT_BUNDLE = BUNDLES_DIR / "ct-abdominal-muscles-seed000-demo"
ROOT = Path(__file__).resolve().parents[1]


def fresh_process_imports_s() -> float:
    """What a worker that starts a new process per job pays before loading any model."""
    code = "import myonode.infer.engines.bundle, myonode.models.runtime, torch, monai"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def paper_size_bundle(folder: Path) -> Path:
    template = ct_muscle_seed000(demo=False)
    bundle = write_bundle(
        folder, template.manifest, template.inference, template.train, template.readme
    )
    torch.save(build_network(bundle).state_dict(), folder / "models" / "model.pt")
    record_weights(folder, bundle.manifest, {"models/model.pt": "torch"})
    return folder


@dataclass
class Clock:
    """Wall and process CPU time: on a shared machine CPU time is the steadier measure."""

    wall: float = 0.0
    cpu: float = 0.0

    @classmethod
    def now(cls) -> Clock:
        return cls(time.perf_counter(), time.process_time())

    def since(self, start: Clock) -> Clock:
        return Clock(self.wall - start.wall, self.cpu - start.cpu)

    def __str__(self) -> str:
        return f"{self.wall:7.2f} s wall, {self.cpu:7.2f} s CPU"


def run(bundle: Path, slices: int, device: str) -> None:
    plane, geometry = abdomen_phantom(shape=(1, 512, 512), pixel_mm=0.8, slice_mm=1.0)
    hu = np.repeat(plane, slices, axis=0)
    volume = Volume(array=hu, geometry=geometry)
    print(f"volume 512x512x{slices} ({hu.nbytes / 2**20:.0f} MiB float32), device {device}")
    baseline = peak_rss_mib()
    shown = bundle.relative_to(ROOT) if bundle.is_relative_to(ROOT) else bundle
    print(f"bundle {shown}")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = Clock.now()
    engine = BundleEngine(load_bundle(bundle), device)  # what `bundle:PATH` creates
    loaded = Clock.now()
    first = engine.segment(volume)
    if device == "cuda":
        torch.cuda.synchronize()
    first_done = Clock.now()
    rss_first = peak_rss_mib()
    gpu_first = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    second_start = Clock.now()
    second = engine.segment(volume)
    if device == "cuda":
        torch.cuda.synchronize()
    second_done = Clock.now()
    gpu_second = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    assert np.array_equal(first.labels, second.labels)
    job1, job2 = first_done.since(start), second_done.since(second_start)
    print(f"first job : {job1}  (load: {loaded.since(start)})")
    print(f"second job: {job2}  (model resident, no load)")
    print(f"ratio first/second: {job1.wall / job2.wall:.2f} wall, {job1.cpu / job2.cpu:.2f} CPU")
    imports = fresh_process_imports_s()
    print(
        f"a fresh process per job would first spend {imports:.2f} s (wall) importing torch, "
        "MONAI and the node"
    )
    print(f"throughput second job: {slices / job2.wall:.2f} slices/s wall")
    print(
        f"peak process RSS: {baseline:.0f} MiB with the volume loaded, {rss_first:.0f} MiB "
        f"after job 1, {peak_rss_mib():.0f} MiB after job 2"
    )
    if gpu_first is not None:
        print(f"peak CUDA memory allocated: {gpu_first:.0f} MiB job 1, {gpu_second:.0f} MiB job 2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--paper-size", action="store_true", help="untrained paper-size net")
    parser.add_argument("--device", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] * torch.cuda.is_available())
    with tempfile.TemporaryDirectory() as scratch:
        bundle = paper_size_bundle(Path(scratch) / "paper") if args.paper_size else args.bundle
        for device in devices:
            run(bundle, args.slices, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
