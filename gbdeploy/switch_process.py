"""The service side of a switch that the deploy layer does not have: during a switch two processes
run from the same path (the old one's executable shows as `PATH (deleted)` once the new binary is
renamed over it), so the old one is found by the port it listens on, drained, and stopped by its
pid alone — never by path, which would stop the new one too.

Each is a call of a `far_end/procs.sh` function (sent ahead of it), run on the target as its ssh
user (root or the service user, who may read the service's /proc/PID/fd).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .deploy.layout import call
from .remote import far_end
from .remote.connection import quote

POLL = 0.05  # seconds between looks while a stopped process exits, or a port drains (procs.sh)
QUIET_LOOKS = 6  # looks in a row with no connection on the old port: drained


def serving_pid_command(binary: str, port: int) -> str:
    """Prints the pid of each process running `binary` that listens on `port`, one a line;
    nothing when none does (free, or another program's)."""
    return _script(call("serving_pids", binary, int(port)))


def drain_command(port: int, seconds: float) -> str:
    """Wait until nothing has been connected to `port` for QUIET_LOOKS looks in a row, at most
    `seconds`: Caddy's reload returns while its old config still proxies the requests it had
    accepted to the old port (killing the old process then fails them: measured 11 of 7089
    requests over 20 switches), and those connections are what this waits out. Prints
    `drained` or `drain timed out with N connections`."""
    return _script(drain_call(port, seconds))


def drain_call(port: int, seconds: float) -> str:
    """The call line of procs.sh's `drain` (see `drain_command`)."""
    return call("drain", int(port), looks(seconds), QUIET_LOOKS, POLL)


def looks(seconds: float) -> int:
    """How many looks, one every POLL seconds, fill `seconds` (at least one)."""
    return max(1, round(seconds / POLL))


def parse_pids(out: str) -> list[int]:
    return sorted({int(word) for word in out.split() if word.isdigit()})


def stop_pid_command(binary: str, pid: int, timeout: float) -> str:
    """SIGTERM exactly `pid` if it still runs `binary` (a pid since reused by another program is
    left alone), give it `timeout` seconds, then SIGKILL. Prints `none PID`, `stopped PID` or
    `killed PID`; exits 1 if it survives SIGKILL."""
    return _script(f"{call('resolve', binary)}; {call('stop_pid', int(pid), looks(timeout))}")


def _script(line: str) -> str:
    return f"{far_end.processes()}\n{line}"


def serving_ports(run: Callable[[str], str], binary: str, ports: list[int]) -> dict[int, list[int]]:
    """The pids of `binary` listening on each of a switch component's `ports` (`run` sends a
    command to the target and returns what it printed)."""
    return {port: parse_pids(run(serving_pid_command(binary, port))) for port in ports}


def live_port(serving: dict[int, list[int]], recorded: object = None) -> int | None:
    """The port a switch component serves on: the one port with a process; while both have one
    (a switch in progress), the one the last deploy recorded (`recorded`, its `switch.live`)."""
    busy = [port for port, pids in serving.items() if pids]
    if len(busy) == 1:
        return busy[0]
    if recorded in busy or (not busy and recorded in serving):
        return int(recorded)  # type: ignore[arg-type]
    return busy[0] if busy else None


def live_port_on_target(
    run: Callable[[str], str], binary: str, ports: list[int], deploy_log: str
) -> int:
    """The port a switch component serves on now (see `live_port`; the last deploy's record
    while nothing serves; else the first port)."""
    last = run(f"tail -n 1 -- {quote(deploy_log)} 2>/dev/null || true").strip()
    try:
        recorded = (json.loads(last or "{}").get("switch") or {}).get("live")
    except (ValueError, AttributeError):
        recorded = None
    live = live_port(serving_ports(run, binary, ports), recorded)
    return live if live is not None else ports[0]
