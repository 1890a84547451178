"""Processes on this machine found by their executable's path, for tests and the sandbox.

Tests start services from binaries under a fresh temporary directory; these helpers find exactly
those processes (by /proc/PID/exe, never by name) and stop them by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

DELETED = " (deleted)"


def executable_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:  # gone, a zombie, or a kernel thread
        return None


def pids_running(binary: str | Path) -> list[int]:
    """Pids whose executable is exactly `binary` (or `binary (deleted)`)."""
    wanted = str(binary)
    return [
        pid
        for pid in _all_pids()
        if (exe := executable_of(pid)) is not None and exe.removesuffix(DELETED) == wanted
    ]


def pids_under(directory: str | Path) -> list[int]:
    """Pids whose executable lies inside `directory`."""
    prefix = str(directory).rstrip("/") + "/"
    return [
        pid
        for pid in _all_pids()
        if (exe := executable_of(pid)) is not None and exe.startswith(prefix)
    ]


def kill_pids(pids: list[int], *, deadline_seconds: float = 5.0) -> None:
    """SIGKILL each pid and wait until none of them runs its executable any more."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + deadline_seconds
    while any(executable_of(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


def end_process(process: subprocess.Popen[bytes] | None, *, term_seconds: float = 10.0) -> None:
    """SIGTERM a child this sandbox started (if it still runs), give it `term_seconds`, then
    SIGKILL it; reaped either way."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=term_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_running(binary: str | Path, *, term_seconds: float = 10.0) -> None:
    """SIGTERM each process running `binary`, give them `term_seconds` to exit, then SIGKILL
    whichever still runs it."""
    for pid in pids_running(binary):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pids_running(binary), deadline_seconds=term_seconds, interval=0.05)
    kill_pids(pids_running(binary))


def wait_for(condition: object, *, deadline_seconds: float = 10.0, interval: float = 0.02) -> bool:
    """Poll `condition()` until it is true or the deadline passes; returns its last truth."""
    assert callable(condition)
    deadline = time.monotonic() + deadline_seconds
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]
