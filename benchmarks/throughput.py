"""Scale-out throughput: studies/hour through Redis + Celery with 1 and with 2 worker processes.

    .venv/bin/python benchmarks/throughput.py [--studies 6] [--shape 8,64,64] [--workdir DIR]

For each worker count, a fresh stack on loopback: Debian's redis-server, the node's receiver,
router and dispatcher in this process (`queue.kind: celery`), and that many `myonode serve
--role worker` processes (prefork, one child each, engines loaded at start). Once every worker
is ready, `studies` phantom CT studies (new UIDs each) are sent by C-STORE; the clock runs from
the first send until the last job is done. Prints studies/hour for each and the ratio 2:1
(the aim is >= 1.7 on two free cores for the CPU engine). Measure on an otherwise idle machine:
other load on the cores lowers the ratio, and the figure is only as good as that.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.app.service import Node
from myonode.core.config import load_settings
from myonode.dispatch.scu import describe, send_files

from support.servers import CeleryWorker, RedisServer


def studies(workdir: Path, count: int, shape: tuple[int, int, int]) -> list[list[Path]]:
    array, geometry = abdomen_phantom(shape=shape, pixel_mm=320 / shape[1], slice_mm=5.0)
    return [
        write_ct_series(array, geometry, workdir / f"study-{n}", seed=f"throughput-{n}")
        for n in range(count)
    ]


def done_jobs(index: Path) -> int:
    with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=60) as conn:
        failed = conn.execute("SELECT error FROM jobs WHERE state = 'failed'").fetchall()
        if failed:
            raise SystemExit(f"a job failed: {failed[0][0]}")
        return conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetchone()[0]


def run(workdir: Path, series: list[list[Path]], workers: int) -> float:
    """Seconds from the first C-STORE until every study's job is done."""
    redis = RedisServer(workdir / "redis").start()
    settings = load_settings(
        environ={},
        overrides={
            "storage.data_dir": str(workdir / "node"),
            "storage.min_free_mb": 0,
            "dicom.bind": "127.0.0.1",
            "dicom.port": 0,
            "http.enabled": False,
            "assemble.quiet_seconds": 0.5,
            "assemble.poll_seconds": 0.1,
            "dispatch.destinations": [],
            "queue.kind": "celery",
            "queue.broker_url": redis.url,
        },
    )
    config = workdir / "node.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    node = Node(settings, roles=("receiver", "router"))
    started: list[CeleryWorker] = []
    try:
        node.start()
        logs = [workdir / f"worker-{n}.log" for n in range(workers)]
        started = [CeleryWorker(config, log).start() for log in logs]
        deadline = time.monotonic() + 300
        while not all(log.exists() and " ready." in log.read_text() for log in logs):
            if time.monotonic() > deadline:
                raise SystemExit(f"workers not ready within 300 s; see {workdir}")
            time.sleep(0.5)
        time.sleep(5)  # the children load their engines after the parent says ready
        begin = time.monotonic()
        for paths in series:
            results = send_files(
                [describe(p) for p in paths],
                "BENCH",
                settings.dicom.ae_title,
                "127.0.0.1",
                node.port,
            )
            assert all(r.ok for r in results)
        while done_jobs(settings.index_path) < len(series):
            time.sleep(0.2)
        return time.monotonic() - begin
    finally:
        for worker in started:
            worker.stop()
        node.stop()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--shape", default="8,64,64", help="slices,rows,columns per study")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    root = args.workdir or Path(tempfile.mkdtemp(prefix="myonode-throughput-"))
    series = studies(root / "studies", args.studies, shape)  # type: ignore[arg-type]
    print(
        f"{args.studies} studies of {shape}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    rates = {}
    for workers in (1, 2):
        seconds = run(root / f"workers-{workers}", series, workers)
        rates[workers] = args.studies / seconds * 3600
        print(f"{workers} worker process(es): {seconds:7.1f} s, {rates[workers]:8.0f} studies/hour")
    print(f"ratio 2 workers / 1 worker: {rates[2] / rates[1]:.2f} (aim >= 1.7 on 2 free cores)")
    print(f"load after the run: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
