"""Real servers for the scale-out tests: Debian's redis-server and PostgreSQL, and Celery
worker processes of the node, on loopback with temporary data directories, stopped by their
PIDs."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from myonode.core.processes import stop_process

from support import free_port, require_tool, wait_for_port, wait_until


class RedisServer:
    """redis-server with an append-only file fsynced on every write, so a restart keeps every
    message it had accepted (what a site configures for the job broker)."""

    def __init__(self, directory: Path) -> None:
        self.binary = require_tool("redis-server")
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.directory),
            "appendonly": "yes",
            "appendfsync": "always",
            "save": "",
            "daemonize": "no",
            "logfile": str(self.directory / "redis.log"),
        }
        self.process = subprocess.Popen(
            [self.binary, *(part for k, v in options.items() for part in (f"--{k}", v))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, grace_s=10)
        self.process = None


class CeleryWorker:
    """`myonode serve --role worker` in a session of its own (the Celery main process and its
    prefork child form one process group, so `kill` takes the whole worker down at once)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> CeleryWorker:
        command = [sys.executable, "-m", "myonode.app.cli", "--config", str(self.config)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "serve", "--role", "worker"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its child mid-job: a machine that dies."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        else:  # the main process is gone; its child must not outlive the test
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process = None


def postgres_bin() -> Path:
    """Debian's PostgreSQL server binaries (not on PATH), or skip the test."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3])
    )
    if not found:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql: see .ci/run)")
    return found[-1].parent


class PostgresServer:
    """A PostgreSQL cluster of its own: initdb into a temporary directory, `postgres` on a
    loopback port, trust authentication for the local test user, stopped by its PID.

    PostgreSQL refuses to run as root (CI runs as root): then the cluster belongs to `nobody`,
    whose directory lives under the world-writable temp dir (pytest's tmp_path is root's 0700).
    """

    USER = "myonode"

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.directory = Path(tempfile.mkdtemp(prefix="myonode-pg-"))
        self.data = self.directory / "data"
        self.prefix: list[str] = []
        if os.getuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.directory, nobody.pw_uid, nobody.pw_gid)
            self.prefix = [
                require_tool("setpriv"),
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
            ]
        subprocess.run(
            [
                *self.prefix,
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",  # the cluster is thrown away; the server itself fsyncs
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.directory,  # readable by nobody (CI's checkout may be under /root)
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        with (self.directory / "postgres.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *self.prefix,
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.directory}",
                    "-c",
                    "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        wait_for_port(self.port, timeout=60)
        wait_until(self._accepts, 60)
        return self

    def _accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url(), connect_timeout=5).close()
        except psycopg.OperationalError:  # "the database system is starting up"
            return False
        return True

    def create_database(self) -> str:
        """A fresh, empty database (one per test) and its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self, how: signal.Signals = signal.SIGINT) -> None:
        """Fast shutdown (SIGINT): open sessions are ended, as when the server goes down."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, how)
            deadline = time.monotonic() + 30
            while self.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            stop_process(self.process, grace_s=10)
        self.process = None

    def remove(self) -> None:
        """Immediate shutdown (SIGQUIT, no final checkpoint: the cluster is deleted next)."""
        self.stop(signal.SIGQUIT)
        shutil.rmtree(self.directory, ignore_errors=True)
