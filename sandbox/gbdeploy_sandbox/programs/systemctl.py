"""`systemctl`: services described in `units/NAME.json` ({"exec_start", "user",
"working_directory", "environment", "log", "enabled"}) and timers in `timers/NAME.json`
({"on_calendar", "unit", "enabled"}).

`start|stop|restart|is-active|is-enabled|show -p P [--value]|cat`, `list-units`,
`list-unit-files` and `list-timers` answer in systemd's formats. A service starts detached in its
own session, as its user, and stops by exactly its recorded main pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TIMEOUT_STOP_SECONDS = 90  # systemd's DefaultTimeoutStopSec
QUIET = ("--no-pager", "--quiet", "-q", "--plain", "--no-legend", "--all")


class UnitNotFound(Exception):
    pass


def _spec_path(root: Path, unit: str) -> Path:
    if unit.endswith(".timer"):
        return root / "timers" / (unit[: -len(".timer")] + ".json")
    return root / "units" / (unit.removesuffix(".service") + ".json")


def _load(root: Path, unit: str) -> tuple[dict[str, Any], Path]:
    spec = _spec_path(root, unit)
    if not spec.exists():
        raise UnitNotFound(unit)
    return json.loads(spec.read_text()), spec.with_suffix(".pid")


def _alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    return None if state == "Z" else pid


def _start(root: Path, unit: str) -> None:
    spec, pidfile = _load(root, unit)
    if _alive(pidfile):
        return
    env = dict(os.environ, **spec.get("environment", {}))
    # Popen's start_new_session already makes the service a session leader; `setsid` is only
    # needed under runuser (and there it does not fork: its caller is no group leader). Run
    # directly, `setsid` would fork, and the recorded pid would be its exited parent.
    command = ["sh", "-c", "exec " + spec["exec_start"]]
    if spec.get("user") and spec["user"] != "root":
        command = ["runuser", "-u", spec["user"], "--", "setsid", *command]
    with open(spec.get("log", "/dev/null"), "ab") as log:
        process = subprocess.Popen(
            command,
            cwd=spec.get("working_directory", "/"),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    pid = process.pid
    if command[0] == "runuser":
        # runuser either forks the service or exits: wait for one of the two, however loaded the
        # machine (a short deadline here recorded runuser's own pid as the main pid).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            children = Path(f"/proc/{pid}/task/{pid}/children")
            kids = children.read_text().split() if children.exists() else []
            if kids:
                pid = int(kids[0])
                break
            if process.poll() is not None:
                break
            time.sleep(0.01)
    pidfile.write_text(str(pid))


def _stop(root: Path, unit: str) -> None:
    _, pidfile = _load(root, unit)
    pid = _alive(pidfile)
    if not pid:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + TIMEOUT_STOP_SECONDS
    while _alive(pidfile) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pidfile):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + TIMEOUT_STOP_SECONDS
        while _alive(pidfile) and time.monotonic() < deadline:  # as systemd: once it is gone
            time.sleep(0.02)


def _exec_start(command: str) -> str:
    """ExecStart as `systemctl show` prints it."""
    path = command.split()[0] if command.split() else ""
    return (
        f"{{ path={path} ; argv[]={command} ; ignore_errors=no ; start_time=[n/a] ; "
        "stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }"
    )


def _show(root: Path, prop: str, unit: str) -> str:
    spec, pidfile = _load(root, unit)
    if unit.endswith(".timer"):
        calendar = f"{{ OnCalendar={spec['on_calendar']} ; next_elapse=n/a }}"
        timer = {"TimersCalendar": calendar, "Unit": spec["unit"]}
        timer["UnitFileState"] = "enabled" if spec.get("enabled") else "disabled"
        return timer.get(prop, "")
    pid = _alive(pidfile)
    return {
        "MainPID": str(pid or 0),
        "Environment": " ".join(f"{k}={v}" for k, v in spec.get("environment", {}).items()),
        "ExecStart": _exec_start(spec["exec_start"]),
        "User": spec.get("user", "root"),
        "ActiveState": "active" if pid else "inactive",
        "UnitFileState": "enabled" if spec.get("enabled") else "disabled",
    }.get(prop, "")


def _services(root: Path) -> list[Path]:
    return sorted((root / "units").glob("*.json"))


def _timers(root: Path) -> list[Path]:
    directory = root / "timers"
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def main(root: str, argv: list[str]) -> int:
    base = Path(root)
    flags = [a for a in argv if a.startswith("--state=") or a.startswith("--type=")]
    args = [a for a in argv if a not in QUIET and a not in flags]
    verb, units = (args[0], args[1:]) if args else ("", [])
    try:
        return _verb(base, verb, units, flags)
    except UnitNotFound as missing:
        sys.stderr.write(f"Unit {missing} not found.\n")
        return 5


def _verb(base: Path, verb: str, units: list[str], flags: list[str]) -> int:
    if verb in ("start", "stop", "restart"):
        for unit in units:
            if verb in ("stop", "restart"):
                _stop(base, unit)
            if verb in ("start", "restart"):
                _start(base, unit)
        return 0
    if verb == "is-enabled":
        states = ["enabled" if _load(base, u)[0].get("enabled") else "disabled" for u in units]
        print("\n".join(states))
        return 0 if all(s == "enabled" for s in states) else 1
    if verb == "is-active":
        states = ["active" if _alive(_load(base, u)[1]) else "inactive" for u in units]
        print("\n".join(states))
        return 0 if all(s == "active" for s in states) else 3
    if verb == "show":
        prop = units[units.index("-p") + 1] if "-p" in units else "MainPID"
        value = _show(base, prop, units[-1])
        print(value if "--value" in units else f"{prop}={value}")
        return 0
    if verb == "list-units":
        # UNIT LOAD ACTIVE SUB DESCRIPTION
        for spec in _services(base):
            unit = spec.stem + ".service"
            state = "active" if _alive(spec.with_suffix(".pid")) else "inactive"
            sub = "running" if state == "active" else "dead"
            print(f"{unit} loaded {state} {sub} {unit}")
        return 0
    if verb == "list-unit-files":
        # UNIT STATE PRESET
        wanted = [f.split("=", 1)[1] for f in flags if f.startswith("--state=")]
        rows = [(s.stem + ".service", s) for s in _services(base)]
        rows += [(s.stem + ".timer", s) for s in _timers(base)]
        for unit, spec in rows:
            state = "enabled" if json.loads(spec.read_text()).get("enabled") else "disabled"
            if not wanted or state in wanted[0].split(","):
                print(f"{unit} {state} enabled")
        return 0
    if verb == "list-timers":
        # NEXT LEFT LAST PASSED UNIT ACTIVATES, for timers that are enabled (started)
        for spec in _timers(base):
            timer = json.loads(spec.read_text())
            if timer.get("enabled"):
                print(f"- - - - {spec.stem}.timer {timer['unit']}")
        return 0
    if verb == "cat":
        spec, _ = _load(base, units[0])
        print("[Service]")
        for key, value in spec.get("environment", {}).items():
            print(f"Environment={key}={value}")
        print(f"ExecStart={spec['exec_start']}")
        return 0
    sys.stderr.write(f"systemctl stand-in: unsupported: {verb} {' '.join(units)}\n")
    return 2
