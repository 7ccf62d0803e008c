"""Real servers for the scale-out tests: Debian's redis-server and Celery worker processes of
the node, on loopback with temporary data directories, stopped by their PIDs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from myonode.core.processes import stop_process

from support import free_port, require_tool, wait_for_port


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
