"""How a component's service runs on its target: how it stops, starts, is seen running, and where
its log is; one class per `restart` mode, each with the parser of its own output.

    service = service_of(component)
    service.stop_lines()          # sh: stop it; prints `none`, `stopped PIDS` or `killed PIDS`
    service.recipe(ssh_user)      # sh: the recipe that starts it (kept as B.start)
    service.running_lines()       # sh: sets `up=1` when it runs
    service.detail(script_output) # the one-line account of a service script's output

To change how a deploy stops a service, this module is the place; `layout.py` only calls these
fragments from the scripts it builds. The process is always found by its executable
(/proc/PID/exe, see `remote/far_end/procs.sh`), never by pattern, so nothing else is signalled.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from ..config import Component
from ..errors import UsageError
from ..remote import far_end
from ..remote.connection import quote

# How often a stop looks whether the process is gone: every 20 ms during its first second (a
# service that exits at once is restarted at once: downtime), then every 100 ms (each look forks).
# procs.sh's `stop_by_path` sleeps these; here they turn seconds into its counts of looks.
FAST_POLL, FAST_LOOKS, SLOW_POLL = 0.02, 50, 0.1


def stop_by_path_lines(binary: str, timeout: float) -> str:
    """SIGTERM every process running exactly `binary`, wait up to `timeout`, then SIGKILL
    (procs.sh's `stop_by_path`, which expects procs.sh ahead of it).

    Prints `none`, `stopped PIDS` or `killed PIDS`; exits 1 if a process survives SIGKILL. Only
    pids found by executable path are signalled, and this shell's own pid is never among them
    (its executable is sh), so the calling ssh session survives.
    """
    fast = min(FAST_LOOKS, max(1, round(timeout / FAST_POLL)))

    def looks(seconds: float) -> int:
        return fast + max(0, round((seconds - fast * FAST_POLL) / SLOW_POLL))

    return f"resolve {quote(binary)}; stop_by_path {fast} {looks(timeout)} {looks(5.0)}"


def stop_by_path_command(binary: str, timeout: float) -> str:
    """`stop_by_path_lines` as a whole script."""
    return f"{far_end.processes()}\n{stop_by_path_lines(binary, timeout)}"


@dataclass(frozen=True)
class Report:
    """What a service script said about the service (see `parse_report`)."""

    was_running: bool | None  # None: the script did not say
    stopped: str  # `stopped PIDS`, `killed PIDS`, or "" (nothing was stopped)
    launched: str  # `launched PID`, or ""
    already_running: bool  # a `start` found it running and started nothing


def parse_report(out: str) -> Report:
    """Reads the lines a service script prints: `was-running 0|1`, the stop's `none`,
    `stopped PIDS` or `killed PIDS`, `launched PID`, `already-running`."""
    lines = out.splitlines()
    stopped = next((line for line in lines if line.split()[:1] in (["stopped"], ["killed"])), "")
    was_running: bool | None = None
    if "was-running 1" in lines or stopped:
        was_running = True
    elif "was-running 0" in lines or "none" in lines:
        was_running = False
    return Report(
        was_running=was_running,
        stopped=stopped,
        launched=next((line for line in lines if line.startswith("launched ")), ""),
        already_running="already-running" in lines,
    )


class Service:
    """A component's service under one `restart` mode. The fragments are sh that expects the
    layout's prelude (`layout.prelude`: its variables and the far end's functions)."""

    def __init__(self, component: Component) -> None:
        self.component = component

    # -- stop
    def stop_lines(self) -> str:
        """Stops it; prints `none`, `stopped PIDS` or `killed PIDS`; fails when it survives."""
        component = self.component
        return f"( {stop_by_path_lines(component.binary, component.stop_timeout)} )"

    def running_before_stop_lines(self) -> list[str]:
        """Sets `up=1` before a stop when the stop's own output cannot tell (a unit is active)."""
        return []

    # -- start
    def recipe(self, ssh_user: str) -> str:
        """The sh recipe that starts it, kept as B.start and sourced by `launch`."""
        raise NotImplementedError

    def start_detail(self, report: Report) -> str:
        return report.launched

    # -- running
    def running_lines(self) -> str:
        """Sets `up=1` when it runs (`up=0` otherwise)."""
        return f"note_running {quote(self.component.binary)}"

    # -- the rest
    def preflight_lines(self, key: str) -> list[str]:
        """Checks for the preflight (`fail KEY WHY` on a problem)."""
        return []

    def log_elsewhere(self) -> str:
        """Where its output goes besides its `log` file ("" when nowhere)."""
        return ""

    def describe(self) -> str:
        raise NotImplementedError

    def detail(self, out: str, *, started: bool) -> str:
        """The account of a service script's output, e.g. `stopped 12; launched 40` (`started`:
        the script started the service)."""
        report = parse_report(out)
        if report.already_running:
            return "already running: nothing started"
        parts = []
        if report.was_running is False:
            parts.append("was not running")
        elif report.stopped:
            parts.append(report.stopped.replace("killed", "killed after SIGTERM timeout:"))
        start = self.start_detail(report) if started else report.launched
        if start:
            parts.append(start)
        return "; ".join(parts)


class ProcessService(Service):
    """`restart: process`: gbdeploy starts the binary itself, detached, and stops it by path."""

    def recipe(self, ssh_user: str) -> str:
        """Run in the binary's directory, as `user`, with its environment, detached (own session,
        no fd left on the channel); prints `launched PID`.

        Signals: the scripts that change the service ignore HUP INT TERM PIPE so that they finish
        once begun, and ignored signals are inherited across exec (FACTS.md). `launch` resets
        them, and `env --default-signal` (GNU) resets also the INT and QUIT that `&` ignores for a
        background command; `nohup`, only where there is no setsid, ignores HUP, as its name
        says."""
        component = self.component
        check_env_names(component)
        env = " ".join(f"{name}={quote(value)}" for name, value in component.env.items())
        words = [
            "$reset",
            '"$detach"',
            run_as_prefix(component, ssh_user),
            f"env {env}" if env else "",
            f"sh -c {quote(_exec_form(component.start_command))}",
        ]
        launch = " ".join(word for word in words if word)
        return "\n".join(
            [
                f"cd -- {quote(component.directory)} || exit 1",
                f"mkdir -p -- {quote(os.path.dirname(component.log_path) or '/')}",
                "detach=$(command -v setsid || echo nohup)",
                "reset=; env --default-signal=TERM true 2>/dev/null &&"
                " reset='env --default-signal=HUP,INT,QUIT,TERM,PIPE'",
                f"{launch} < /dev/null >> {quote(component.log_path)} 2>&1 &",
                'echo "launched $!"',
            ]
        )

    def describe(self) -> str:
        return f"process `{self.component.start_command}` as {self.component.user}"


class SystemdService(Service):
    """`restart: {systemd: UNIT}`: systemd starts and stops the unit; the stop then also ends any
    process still running the binary (one started by hand beside the unit)."""

    @property
    def unit(self) -> str:
        return str(self.component.restart.unit)

    def stop_lines(self) -> str:
        return f"systemctl stop {quote(self.unit)} && {super().stop_lines()}"

    def running_before_stop_lines(self) -> list[str]:
        return [f"systemctl is-active --quiet {quote(self.unit)} 2>/dev/null && up=1"]

    def recipe(self, ssh_user: str) -> str:
        check_env_names(self.component)
        return f"systemctl start {quote(self.unit)}"

    def start_detail(self, report: Report) -> str:
        return report.launched or f"systemctl start {self.unit}"

    def running_lines(self) -> str:
        active = f"systemctl is-active --quiet {quote(self.unit)} 2>/dev/null && up=1"
        return f"{super().running_lines()}\n{active}"

    def preflight_lines(self, key: str) -> list[str]:
        return [
            f"command -v systemctl >/dev/null 2>&1 || refuse {key}.restart "
            "'no systemctl on the target'"
        ]

    def log_elsewhere(self) -> str:
        return f"journalctl -u {self.unit}"

    def describe(self) -> str:
        return f"systemd unit {self.unit}"


def service_of(component: Component) -> Service:
    if component.restart.mode == "systemd":
        return SystemdService(component)
    return ProcessService(component)


def run_as_prefix(component: Component, ssh_user: str) -> str:
    """`sudo -u gbuser` (from config), or nothing when the ssh user already is the service user.

    `run_as` is an argument vector, never shell code: split as the shell would split words, each
    word quoted (`;` or `$(…)` in it reach the program as plain arguments)."""
    if not component.run_as or ssh_user == component.user:
        return ""
    try:
        words = shlex.split(component.run_as)
    except ValueError as error:
        raise UsageError(f"components.{component.name}.run_as: {error}") from None
    return " ".join(quote(word.format(user=component.user)) for word in words)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_env_names(component: Component) -> None:
    for name in component.env:
        if not _ENV_NAME.fullmatch(name):
            raise UsageError(f"components.{component.name}.env: bad variable name {name!r}")


def _exec_form(command: str) -> str:
    """`exec CMD` for a simple command, so the service itself is the session's process."""
    if re.search(r"[;&|\n`$()<>]", command) or command.lstrip().startswith("exec "):
        return command
    return f"exec {command}"
