"""C-STORE ingest throughput: myonode vs dcmtk storescp, same sender, same data, same run.

    .venv/bin/python benchmarks/ingest.py [--count 500] [--workdir DIR]

Generates `count` real-size CT instances (512x512, 16-bit, ~0.5 MB each), then sends them with
dcmtk `storescu` (TCP_NODELAY) to dcmtk `storescp` and to `myonode serve`, and prints images/s
for both and their ratio. The node's quiet period is set long so only ingest is measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.core.processes import stop_process
from myonode.core.volume import Geometry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def make_instances(directory: Path, count: int) -> list[Path]:
    slice_hu, _ = abdomen_phantom(shape=(1, 512, 512), pixel_mm=0.8)
    array = np.repeat(slice_hu, count, axis=0)
    geometry = Geometry(np.zeros(3), np.eye(3), np.array([0.8, 0.8, 1.0]))
    return write_ct_series(array, geometry, directory, seed="benchmark-ingest")


def send_with_storescu(port: int, called: str, files: list[Path]) -> float:
    env = {**os.environ, "TCP_NODELAY": "1"}
    start = time.perf_counter()
    subprocess.run(
        [
            "storescu",
            "-aec",
            called,
            "127.0.0.1",
            str(port),
            "+sd",
            str(files[0].parent),
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def bench_storescp(workdir: Path, files: list[Path]) -> float:
    port = free_port()
    out = workdir / "storescp"
    out.mkdir()
    process = subprocess.Popen(
        ["storescp", "--output-directory", str(out), str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        seconds = send_with_storescu(port, "STORESCP", files)
    finally:
        stop_process(process)
    assert len(list(out.iterdir())) == len(files), "storescp did not store every instance"
    return seconds


def bench_node(workdir: Path, files: list[Path]) -> float:
    port = free_port()
    config = workdir / "node.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dicom": {"port": port, "bind": "127.0.0.1"},
                "http": {"port": 0},
                "storage": {"data_dir": str(workdir / "node"), "min_free_mb": 0},
                "assemble": {"quiet_seconds": 3600},
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "myonode.app.cli", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        seconds = send_with_storescu(port, "MYONODE", files)
    finally:
        stop_process(process)
    stored = list((workdir / "node" / "instances").rglob("*.dcm"))
    assert len(stored) == len(files), "the node did not store every instance"
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: install the Debian package dcmtk", file=sys.stderr)
            return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="myonode-bench-"))
    try:
        files = make_instances(workdir / "ct", args.count)
        size_mb = sum(p.stat().st_size for p in files) / 2**20
        print(f"{len(files)} CT instances, {size_mb:.0f} MiB, sender dcmtk storescu")
        peer = bench_storescp(workdir, files)
        node = bench_node(workdir, files)
        print(f"dcmtk storescp : {len(files) / peer:8.1f} images/s  ({peer:.2f} s)")
        print(f"myonode        : {len(files) / node:8.1f} images/s  ({node:.2f} s)")
        print(f"ratio myonode/storescp: {peer / node:.2f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
