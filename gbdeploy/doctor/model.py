"""What a check is: a name, where it runs, the one exact command, a judge that turns the
command's result into pass/fail/skip with what it saw, the fix to apply by hand, and — only for
repairs that are safe and reversible — the repair `--fix` runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..config import DoctorSettings, Target
from ..deploy.layout import call
from ..remote import far_end
from ..remote.connection import CommandResult, quote
from ..remote.connection import container_tool as shared_container_tool

Status = Literal["pass", "fail", "skip"]
GIB = 1024**3
DAY = 86400
COMMAND_TIMEOUT = 60.0
VALKEY_TIMEOUT = 10
ACTIVE_STATES = ("active", "activating", "reloading")


@dataclass(frozen=True)
class Finding:
    """One line of the report; `to_json` is the fixed `--json` format: check, status, saw, fix."""

    check: str
    status: Status
    saw: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "saw": self.saw, "fix": self.fix}


@dataclass(frozen=True)
class Verdict:
    status: Status
    saw: str
    fix: str | None = None  # None: the check's own fix text (shown unless the check passes)


@dataclass(frozen=True)
class Repair:
    says: str  # what it changes, in the words the user reads
    command: str  # the exact command, run where the check runs


Judge = Callable[[CommandResult], "Verdict | FollowUp"]


@dataclass(frozen=True)
class FollowUp:
    """A judge's answer when the first command's output names what to ask next (the domains of a
    Caddyfile to resolve): `command` runs in the same place and `judge` reads its result."""

    command: str
    judge: Judge


Repairer = Callable[[CommandResult], "Repair | str"]  # a str says why it is not safe now


@dataclass(frozen=True)
class Check:
    name: str
    place: str | None  # a container on the LXD host; None for the host itself
    command: str
    judge: Judge
    fix: str
    when_missing: Status = "fail"  # the status when the command is not installed (exit 127)
    repair: Repairer | None = None
    disabled: str | None = None  # why it is not run (a container set to null)


def container_tool(d: DoctorSettings) -> str:
    """How the container tool is called on the host, as the deploy calls it: `lxc`, `incus`,
    `sudo -n incus` (never waiting for a password)."""
    return shared_container_tool(d.via, d.sudo)


def list_containers(tool: str) -> str:
    return f"{tool} list --format csv -c n"


def place_target(d: DoctorSettings, host: str, place: str | None) -> Target:
    """Where a check runs, as a deploy target: the host itself, or a container behind it (whose
    commands the deploy's own wrapper sends through `[sudo -n] lxc|incus exec`)."""
    if place is None:
        return Target("lxd-host", host)
    return Target(place, host, container=place, via=d.via, sudo=d.sudo)


def where(place: str | None, host: str, tool: str = "lxc") -> str:
    return f"{host}: {tool} exec {place}" if place else host


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def output_of(result: CommandResult) -> str:
    return last_line(result.stderr) or last_line(result.stdout) or f"exit {result.exit_code}"


def doctor_call(function: str, *arguments: object) -> str:
    """A check's script that is more than one command: `far_end/doctor.sh`, then the one call of
    its `function`, every argument quoted (`--dry-run`'s plan shows the call: `shown`)."""
    return f"{far_end.doctor()}\n{call(function, *arguments)}"


def shown(command: str) -> str:
    """`command` as the plan shows it: a doctor.sh call as `[doctor.sh] CALL`."""
    library = far_end.doctor() + "\n"
    return (
        f"[doctor.sh] {command.removeprefix(library)}" if command.startswith(library) else command
    )


def read_command(path: str) -> str:
    return f"cat -- {quote(path)}"


def disabled_check(name: str, role: str) -> Check:
    return Check(
        name, None, "", lambda _: Verdict("skip", ""), "", disabled=f"doctor.{role} is null"
    )
