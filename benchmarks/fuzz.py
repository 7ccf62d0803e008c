"""The receiver's fuzz corpus at benchmark size, against `myonode serve` in its own process.

    .venv/bin/python benchmarks/fuzz.py [--count 20000] [--seed 16] [--workdir DIR]

The CI test (tests/test_hostile_input.py) sends 2,000 cases to an in-process node; this sends
`count` cases of the same fixed-seed corpus over real associations to a separate `myonode
serve`, and prints per category how the node answered, the node's peak RSS against its RSS
after start-up (the floor), its liveness (C-ECHO every 100 cases), how many acknowledged
instances pydicom cannot fully decode (must be 0) and how many files are left that the index
does not know (must be 0).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from myonode.core.processes import stop_process

from support import free_port, wait_for_port
from support.hostile import RawSender, corpus, decodable


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def echo(port: int) -> bool:
    done = subprocess.run(
        ["echoscu", "-aec", "MYONODE", "127.0.0.1", str(port)], capture_output=True, timeout=30
    )
    return done.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if shutil.which("echoscu") is None:
        print("echoscu not found: install the Debian package dcmtk", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="myonode-fuzz-"))
    port = free_port()
    config = workdir / "node.yaml"
    data_dir = workdir / "node"
    config.write_text(
        yaml.safe_dump(
            {
                "dicom": {"port": port, "bind": "127.0.0.1", "max_instance_mb": 2},
                "http": {"enabled": False},
                "storage": {"data_dir": str(data_dir), "min_free_mb": 0},
                "assemble": {"quiet_seconds": 36000},
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "myonode.app.cli", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    dead = 0
    try:
        wait_for_port(port, timeout=60)
        floor = peak = rss_mb(process.pid)
        cases = corpus(seed=args.seed, count=args.count, huge_mb=3, bomb_mb=300)
        sender = RawSender(port, workdir)
        start = time.perf_counter()
        for number, case in enumerate(cases):
            status = sender.send(case)
            answers[case.category]["no answer" if status is None else f"0x{status:04X}"] += 1
            if number % 100 == 0:
                peak = max(peak, rss_mb(process.pid))
                dead += not echo(port)
        sender.close()
        seconds = time.perf_counter() - start
        peak = max(peak, rss_mb(process.pid))
        alive = echo(port)
    finally:
        stop_process(process)
    with sqlite3.connect(data_dir / "index.sqlite3") as index:
        accepted = {row[0] for row in index.execute("SELECT path FROM instances")}
    files = {str(p) for p in (data_dir / "instances").rglob("*") if p.is_file()}
    undecodable = [path for path in accepted if decodable(Path(path))]
    print(f"{len(cases)} cases (seed {args.seed}) in {seconds:.0f} s")
    for category, counts in sorted(answers.items()):
        print(f"  {category:22s} " + ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())))
    print(f"node RSS: {floor:.0f} MiB after start, peak {peak:.0f} MiB ({peak / floor:.2f}x)")
    print(f"failed C-ECHO checks: {dead}; alive at the end: {alive}")
    print(f"acknowledged but undecodable: {len(undecodable)}")
    print(f"files not in the index: {len(files - accepted)}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if alive and not dead and not undecodable and files == accepted else 1


if __name__ == "__main__":
    sys.exit(main())
