"""Run the bare-metal deployment on this machine, without systemd or root.

Orthanc (Debian's package, with orthanc/archive.json, orthanc/site.json and the plugin), the
node and the viewer are started with the Environment= and ExecStart= of their units in
deploy/systemd/, and the configuration files of deploy/README.md, with /etc/myonode,
/var/lib/myonode, /var/lib/orthanc, /var/log/orthanc and /opt/myonode moved into DIR (and
this checkout). So what `deploy/setup.sh stack` starts, and what the tests start, is what a
Debian server runs. Ctrl-C or SIGTERM stops the three, in reverse order, by their PIDs.

    .venv/bin/python deploy/local_stack.py DIR [--orthanc-dicom-port 4242] [...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from myonode.core.processes import stop_process

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "deploy" / "systemd"
# (unit file, name, the port that tells it is up)
SERVICES = (
    ("orthanc.service.d/myonode.conf", "orthanc", "orthanc_http_port"),
    ("myonode.service", "node", "node_http_port"),
    ("myonode-viewer.service", "viewer", "viewer_port"),
)


def relocations(directory: Path) -> list[tuple[str, str]]:
    """Absolute paths of the Debian install -> where they are in this stack (most specific
    first)."""
    return [
        ("/opt/myonode/.venv", sys.prefix),
        ("/opt/myonode/ohif", str(REPO / ".ohif")),
        ("/opt/myonode", str(REPO)),
        ("/etc/myonode", str(directory / "etc")),
        ("/var/lib/myonode", str(directory / "var" / "myonode")),
        ("/var/lib/orthanc", str(directory / "var" / "orthanc")),
        ("/var/log/orthanc", str(directory / "log")),
    ]


def relocate(text: str, moves: list[tuple[str, str]]) -> str:
    for old, new in moves:
        text = re.sub(re.escape(old) + r"(?=/|\b|$)", new, text)
    return text


def unit_command(path: Path) -> tuple[dict[str, str], list[str]]:
    """Environment= and the effective ExecStart= of a unit or drop-in file."""
    environment, command = {}, None
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            name, _, setting = value.partition("=")
            environment[name] = setting
        elif key == "ExecStart":
            command = shlex.split(value) or None  # an empty ExecStart= resets
    if command is None:
        raise ValueError(f"{path}: no ExecStart")
    return environment, command


def write_configuration(directory: Path, args: argparse.Namespace) -> None:
    """/etc/myonode as deploy/README.md installs it, with this stack's ports and times."""
    moves = relocations(directory)
    orthanc_dir = directory / "etc" / "orthanc"
    orthanc_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("var/myonode", "var/orthanc", "log"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(16)
    (orthanc_dir / "archive.json").write_text((REPO / "orthanc" / "archive.json").read_text())
    token = secrets.token_hex(32)
    token_sha256 = hashlib.sha256(token.encode()).hexdigest()
    (orthanc_dir / "credentials.json").write_text(
        json.dumps({"RegisteredUsers": {"myonode": password}, "MyoNodeToken": token})
    )
    http_token = directory / "etc" / "http-token"  # the admin's copy, as the install keeps it
    http_token.write_text(token + "\n")
    http_token.chmod(0o600)
    # DICOM TLS between Orthanc and the node, as the install makes it.
    subprocess.run(
        [REPO / "deploy" / "dicom-tls-certs.sh", directory / "etc" / "tls", "localhost"],
        check=True,
    )
    site = json.loads(relocate((REPO / "orthanc" / "site.json").read_text(), moves))
    site.update(
        DicomPort=args.orthanc_dicom_port,
        HttpPort=args.orthanc_http_port,
        RemoteAccessAllowed=False,
        StableAge=args.stable_seconds,
    )
    site["DicomModalities"]["MYONODE"]["Port"] = args.node_dicom_port
    site["MyoNode"]["NodeUrl"] = f"http://127.0.0.1:{args.node_http_port}"
    site["MyoNode"]["PollSeconds"] = min(site["MyoNode"]["PollSeconds"], 1)
    (orthanc_dir / "site.json").write_text(json.dumps(site, indent=2))
    text = (REPO / "deploy" / "myonode.yaml").read_text()
    text = text.replace("CHANGE-ME-TOKEN-SHA256", token_sha256).replace("CHANGE-ME", password)
    text = text.replace(":8042/", f":{args.orthanc_http_port}/")
    node = yaml.safe_load(relocate(text, moves))
    node["dicom"].update(bind="127.0.0.1", port=args.node_dicom_port)
    node["storage"]["min_free_mb"] = 0
    node["assemble"]["quiet_seconds"] = args.stable_seconds
    node["peers"]["ORTHANC"]["port"] = args.orthanc_dicom_port
    node["http"].update(bind="127.0.0.1", port=args.node_http_port)
    node["viewer"].update(bind="127.0.0.1", port=args.viewer_port)
    (directory / "etc" / "myonode.yaml").write_text(yaml.safe_dump(node, sort_keys=False))


def wait_for_port(port: int, process: subprocess.Popen, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; see its log")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not open port {port} within {timeout} s")


def stop(processes: list[tuple[str, subprocess.Popen]]) -> None:
    for _name, process in reversed(processes):
        stop_process(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--orthanc-dicom-port", type=int, default=4242)
    parser.add_argument("--orthanc-http-port", type=int, default=8042)
    parser.add_argument("--node-dicom-port", type=int, default=11112)
    parser.add_argument("--node-http-port", type=int, default=8080)
    parser.add_argument("--viewer-port", type=int, default=3000)
    parser.add_argument(
        "--stable-seconds", type=int, default=5, help="Orthanc StableAge, node quiet time"
    )
    args = parser.parse_args(argv)
    directory = args.directory.resolve()
    write_configuration(directory, args)
    moves = relocations(directory)
    processes: list[tuple[str, subprocess.Popen]] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for unit, name, port in SERVICES:
            environment, command = unit_command(UNITS / unit)
            environment = {k: relocate(v, moves) for k, v in environment.items()}
            command = [relocate(part, moves) for part in command]
            with (directory / "log" / f"{name}.log").open("ab") as log:
                process = subprocess.Popen(
                    command, env={**os.environ, **environment}, stdout=log, stderr=log
                )
            processes.append((name, process))
            wait_for_port(getattr(args, port), process, name)
            print(f"{name} (pid {process.pid}): {shlex.join(command)}", flush=True)
        print(
            f"archive: DICOM ORTHANC@127.0.0.1:{args.orthanc_dicom_port}, "
            f"http://127.0.0.1:{args.orthanc_http_port}/ (user myonode, password in "
            f"{directory / 'etc' / 'orthanc' / 'credentials.json'})\n"
            f"dashboard: http://127.0.0.1:{args.node_http_port}/ (any user, the token in "
            f"{directory / 'etc' / 'http-token'} as password)\n"
            f"viewer: http://127.0.0.1:{args.viewer_port}/\n"
            f"logs: {directory / 'log'}; Ctrl-C stops everything",
            flush=True,
        )
        while all(process.poll() is None for _, process in processes):
            time.sleep(0.5)
        exited = [name for name, process in processes if process.poll() is not None]
        print(f"stopped: {', '.join(exited)} exited; see {directory / 'log'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(processes)


if __name__ == "__main__":
    sys.exit(main())
