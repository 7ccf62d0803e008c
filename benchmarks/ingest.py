"""C-STORE ingest throughput: myonode vs Orthanc vs dcmtk storescp, same sender, same data,
same run, with one association and with 4 concurrent associations.

    .venv/bin/python benchmarks/ingest.py [--count 300] [--workdir DIR] [--rounds 1]

Generates `count` real-size CT instances (512x512, 16-bit, ~0.5 MB each) and sends them with
dcmtk `storescu` (TCP_NODELAY) to each receiver: once over one association, then split in 4
parts sent by 4 concurrent `storescu` processes. Prints images/s per receiver and setting, the
node/Orthanc ratio with one association (aim >= 1.5) and the node's 4-vs-1 association ratio
(aim >= 2). Durability differs: the node fsyncs file, directory and index row before
acknowledging; Orthanc 1.10 (Debian), even with "SyncStorageArea": true, syncs only its SQLite
index (strace: about one fdatasync per instance, no fsync of the stored files); storescp syncs
nothing. So the node also runs as "myonode index-sync" (`storage.sync_instance_files: false`,
a documented non-default option): Orthanc's durability, for a like-for-like ratio. Each
receiver starts empty for each setting. The node's quiet period is long so only ingest is
measured. The 1-minute load average is sampled throughout and its mean printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from myonode.app.demo.synthetic import abdomen_phantom, write_ct_series
from myonode.core.processes import stop_process
from myonode.core.volume import Geometry

ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0) -> None:
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


def split(files: list[Path], parts: int, workdir: Path) -> list[Path]:
    """`parts` folders of hard links, one per concurrent sender."""
    folders = []
    for part in range(parts):
        folder = workdir / f"part{parts}-{part}"
        folder.mkdir(exist_ok=True)
        for path in files[part::parts]:
            link = folder / path.name
            if not link.exists():
                os.link(path, link)
        folders.append(folder)
    return folders


def send(port: int, called: str, folders: list[Path]) -> float:
    """Seconds for `storescu` processes (one association each, in parallel) to send all."""
    start = time.perf_counter()
    senders = [
        subprocess.Popen(
            [
                *("storescu", "-aet", "BENCH", "-aec", called),
                "127.0.0.1",
                str(port),
                "+sd",
                str(folder),
            ],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for folder in folders
    ]
    codes = [sender.wait() for sender in senders]
    seconds = time.perf_counter() - start
    if any(codes):
        raise RuntimeError(f"storescu failed: exit codes {codes}")
    return seconds


def run_storescp(workdir: Path, port: int) -> tuple[subprocess.Popen, Callable[[], int]]:
    out = workdir / "out"
    out.mkdir()
    process = subprocess.Popen(
        ["storescp", "--output-directory", str(out), str(port)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, lambda: len(list(out.iterdir()))


def run_orthanc(workdir: Path, port: int) -> tuple[subprocess.Popen, Callable[[], int]]:
    storage = workdir / "storage"
    storage.mkdir()
    config = workdir / "orthanc.json"
    config.write_text(
        json.dumps(
            {
                "Name": "bench",
                "StorageDirectory": str(storage),
                "IndexDirectory": str(storage),
                "HttpPort": free_port(),
                "DicomPort": port,
                "DicomAet": "ORTHANC",
                "RemoteAccessAllowed": False,
                "SyncStorageArea": True,
                "StorageCompression": False,
                "DicomCheckCalledAet": False,
                "Plugins": [],
            }
        )
    )
    process = subprocess.Popen(
        ["Orthanc", str(config)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return process, lambda: sum(1 for p in storage.rglob("*") if p.is_file() and len(p.name) == 36)


def run_node(
    workdir: Path, port: int, sync_files: bool = True
) -> tuple[subprocess.Popen, Callable[[], int]]:
    config = workdir / "node.yaml"
    storage = {"data_dir": str(workdir / "node"), "min_free_mb": 0}
    if not sync_files:
        storage["sync_instance_files"] = False
    config.write_text(
        yaml.safe_dump(
            {
                "dicom": {"port": port, "bind": "127.0.0.1"},
                "http": {"enabled": False},
                "storage": storage,
                "assemble": {"quiet_seconds": 3600},
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "myonode.app.cli", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, lambda: len(list((workdir / "node" / "instances").rglob("*.dcm")))


RECEIVERS = {
    "dcmtk storescp": ("STORESCP", run_storescp),
    "Orthanc": ("ORTHANC", run_orthanc),
    "myonode": ("MYONODE", run_node),
    "myonode index-sync": ("MYONODE", lambda w, p: run_node(w, p, sync_files=False)),
}


def measure(name: str, workdir: Path, folders: list[Path], expected: int) -> float:
    called, start = RECEIVERS[name]
    workdir.mkdir(parents=True)
    port = free_port()
    process, count = start(workdir, port)
    try:
        wait_for_port(port)
        time.sleep(0.5)  # let it finish starting (Orthanc opens its index after listening)
        seconds = send(port, called, folders)
    finally:
        stop_process(process)
    stored = count()
    if stored != expected:
        raise RuntimeError(f"{name} stored {stored} of {expected} instances")
    return seconds


def sample_load(loads: list[float], done: threading.Event) -> None:
    """The 1-minute load average every half second: the machine is shared."""
    while not done.wait(0.5):
        loads.append(os.getloadavg()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1, help="repeat and keep the best")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "Orthanc"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: install the Debian packages dcmtk, orthanc", file=sys.stderr)
            return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="myonode-bench-"))
    try:
        files = make_instances(workdir / "ct", args.count)
        size_mb = sum(p.stat().st_size for p in files) / 2**20
        print(f"{len(files)} CT instances, {size_mb:.0f} MiB, sender dcmtk storescu")
        loads = [os.getloadavg()[0]]
        done = threading.Event()
        sampler = threading.Thread(target=sample_load, args=(loads, done), daemon=True)
        sampler.start()
        rates: dict[tuple[str, int], float] = {}
        for associations in (1, 4):
            folders = [workdir / "ct"] if associations == 1 else split(files, 4, workdir)
            for name in RECEIVERS:
                best = min(
                    measure(
                        name,
                        workdir / f"{name.replace(' ', '_')}-{associations}-{r}",
                        folders,
                        len(files),
                    )
                    for r in range(args.rounds)
                )
                rates[name, associations] = len(files) / best
                print(
                    f"{name:18s} {associations} association{'s' if associations > 1 else ' '}: "
                    f"{rates[name, associations]:8.1f} images/s ({best:.2f} s)",
                    flush=True,
                )
        node1, node4 = rates["myonode", 1], rates["myonode", 4]
        same1, same4 = rates["myonode index-sync", 1], rates["myonode index-sync", 4]
        orthanc1, orthanc4 = rates["Orthanc", 1], rates["Orthanc", 4]
        print(f"ratio myonode/Orthanc, 1 association  : {node1 / orthanc1:.2f} (aim >= 1.5)")
        print(f"ratio myonode/Orthanc, 4 associations : {node4 / orthanc4:.2f}")
        print(f"ratio myonode 4/1 associations        : {node4 / node1:.2f} (aim >= 2)")
        print(f"ratio myonode/storescp, 1 association : {node1 / rates['dcmtk storescp', 1]:.2f}")
        print(f"same durability as Orthanc (index-sync), 1 association : {same1 / orthanc1:.2f}")
        print(f"same durability as Orthanc (index-sync), 4 associations: {same4 / orthanc4:.2f}")
        done.set()
        sampler.join()
        print(f"load average during the run: {sum(loads) / len(loads):.1f} (sampled each 0.5 s)")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
