"""Stopping a process this program started: by its PID, politely first, never by name."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM `process` if it still runs, SIGKILL it if it has not exited after `grace_s`
    seconds, and reap it, so no zombie or orphan is left behind."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
