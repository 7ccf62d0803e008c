"""Scale-out throughput: studies/hour through Redis + Celery with 1 and with 2 worker processes.

    .venv/bin/python benchmarks/throughput.py [--studies 12] [--shape 8,64,64] [--workdir DIR]

For each worker count, a fresh stack on loopback: Debian's redis-server, the node's receiver,
router and dispatcher in this process (`queue.kind: celery`), and that many `myonode serve
--role worker` processes (prefork, one child each, engines loaded at start). Once every worker
is ready, the pools are warmed (two studies per worker, run to completion, not timed: the
first job of a process pays for imports and first calls), then `studies` phantom CT studies
(new UIDs each) are sent by C-STORE; the clock runs from the first send until the last job is
done. Prints, for each worker count, wall time, studies/hour, the CPU seconds the workers
(each process group: Celery main process and its child) and this process spent per study,
the cores the workers got on average, and the load average sampled during the timed phase;
then the measured ratio 2:1 (aim >= 1.7 with two workers on two cores for the CPU engine)
and the ratio projected from CPU time for two free cores: one worker has a core to itself
(rate 1/c1), two workers and this process share two (rate 2/(c2 + n2)), so 2 c1 / (c2 + n2),
with c the workers' CPU per study less what they burn idle (measured for 10 s before timing)
and n this process's. On a shared machine the measured ratio moves with the other load (a
worker gets its share of a busy machine, two get twice that share); the projection depends
on CPU time only and says whether the workers themselves scale.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.app.service import Node
from myonode.core.config import load_settings
from myonode.dispatch.scu import describe, send_files

from support.servers import CeleryWorker, RedisServer


def studies(workdir: Path, count: int, shape: tuple[int, int, int], tag: str) -> list[list[Path]]:
    array, geometry = abdomen_phantom(shape=shape, pixel_mm=320 / shape[1], slice_mm=5.0)
    return [
        write_ct_series(array, geometry, workdir / f"{tag}-{n}", seed=f"throughput-{tag}-{n}")
        for n in range(count)
    ]


def done_jobs(index: Path) -> int:
    with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=60) as conn:
        failed = conn.execute("SELECT error FROM jobs WHERE state = 'failed'").fetchall()
        if failed:
            raise SystemExit(f"a job failed: {failed[0][0]}")
        return conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetchone()[0]


_TICK = os.sysconf("SC_CLK_TCK")
IDLE_SECONDS = 10.0


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in a process group, plus what its reaped
    children used (a worker runs in a session of its own: pgid = the main process's pid)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid:  # fields[0] is field 3 of proc(5): state
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / _TICK


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    seconds: float
    worker_cpu: float  # all workers together, timed phase, less their idle rate
    node_cpu: float  # this process: receiver, router, dispatcher, the sender
    load: float  # mean 1-minute load average sampled during the timed phase
    idle: float  # cores the workers burn with nothing to do


def send_all(series: list[list[Path]], ae_title: str, port: int) -> None:
    for paths in series:
        results = send_files([describe(p) for p in paths], "BENCH", ae_title, "127.0.0.1", port)
        if not all(r.ok for r in results):
            raise SystemExit("a C-STORE was refused")


def wait_done(index: Path, count: int, loads: list[float]) -> None:
    deadline = time.monotonic() + 3600
    while done_jobs(index) < count:
        if time.monotonic() > deadline:
            raise SystemExit("jobs not done within an hour")
        loads.append(os.getloadavg()[0])
        time.sleep(0.2)


def run(workdir: Path, warmup: list[list[Path]], series: list[list[Path]], workers: int) -> Run:
    """Warm the pool with `warmup`, then time `series` from the first send until every
    study's job is done."""
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
        send_all(warmup, settings.dicom.ae_title, node.port)
        wait_done(settings.index_path, len(warmup), [])
        pgids = [worker.process.pid for worker in started if worker.process is not None]
        idle_from = sum(group_cpu_seconds(pgid) for pgid in pgids)
        time.sleep(IDLE_SECONDS)  # what idle workers burn (broker polls, heartbeats)
        cpu_before = sum(group_cpu_seconds(pgid) for pgid in pgids)
        idle = (cpu_before - idle_from) / IDLE_SECONDS
        node_before = self_cpu_seconds()
        loads: list[float] = [os.getloadavg()[0]]
        begin = time.monotonic()
        send_all(series, settings.dicom.ae_title, node.port)
        wait_done(settings.index_path, len(warmup) + len(series), loads)
        seconds = time.monotonic() - begin
        return Run(
            seconds,
            sum(group_cpu_seconds(pgid) for pgid in pgids) - cpu_before - idle * seconds,
            self_cpu_seconds() - node_before,
            sum(loads) / len(loads),
            idle,
        )
    finally:
        for worker in started:
            worker.stop()
        node.stop()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--shape", default="8,64,64", help="slices,rows,columns per study")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    root = args.workdir or Path(tempfile.mkdtemp(prefix="myonode-throughput-"))
    print(
        f"{args.studies} studies of {shape} timed after 2 warm-up studies per worker, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} before the run"
    )
    runs = {}
    for workers in (1, 2):
        warmup = studies(root / f"warmup-{workers}", 2 * workers, shape, f"warm{workers}")  # type: ignore[arg-type]
        series = studies(root / f"studies-{workers}", args.studies, shape, f"run{workers}")  # type: ignore[arg-type]
        result = runs[workers] = run(root / f"workers-{workers}", warmup, series, workers)
        print(
            f"{workers} worker process(es): {result.seconds:6.1f} s wall, "
            f"{args.studies / result.seconds * 3600:6.0f} studies/hour, "
            f"worker CPU {result.worker_cpu / args.studies:5.2f} s/study, "
            f"node CPU {result.node_cpu / args.studies:5.2f} s/study, "
            f"workers used {result.worker_cpu / result.seconds:4.2f} cores "
            f"(+{result.idle:4.2f} idle), "
            f"load {result.load:4.1f}",
            flush=True,
        )
    one, two = runs[1], runs[2]
    print(f"ratio 2 workers / 1 worker, measured : {one.seconds / two.seconds:.2f} (aim >= 1.7)")
    studies_n = args.studies
    c1, c2, n2 = one.worker_cpu / studies_n, two.worker_cpu / studies_n, two.node_cpu / studies_n
    print(
        f"ratio projected from CPU time        : {2 * c1 / (c2 + n2):.2f} "
        "(2 free cores: one worker's job CPU against two workers' and the node's sharing two)"
    )


if __name__ == "__main__":
    main()
