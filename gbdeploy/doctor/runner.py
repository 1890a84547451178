"""Running checks over ssh: one connection to the LXD host and one per container, commands of
different connections at the same time, each command once per examination."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

from ..config import Settings
from ..errors import RemoteError
from ..remote.connection import CommandResult, Remote
from .host import container_names
from .model import (
    COMMAND_TIMEOUT,
    Check,
    Finding,
    FollowUp,
    container_tool,
    output_of,
    place_target,
    where,
)
from .parsers import ParseError
from .plan import require_host


class Doctor:
    """Runs checks over ssh: one connection to the host, one per container (through `lxc exec`
    or `incus exec` on the host, behind sudo when doctor.sudo).
    A command that several checks read runs once per examination; the commands of different
    connections run at the same time (one thread per connection, in order within it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = require_host(settings.doctor)
        self.tool = container_tool(settings.doctor)
        self._remotes: dict[str | None, Remote] = {}
        self._results: dict[tuple[str | None, str], CommandResult | RemoteError] = {}

    def remote(self, place: str | None) -> Remote:
        if place not in self._remotes:
            target = place_target(self.settings.doctor, self.host, place)
            self._remotes[place] = Remote(target, self.settings.ssh)
        return self._remotes[place]

    def run(self, place: str | None, command: str) -> CommandResult:
        """The command's result (RemoteError if ssh failed), run once per examination."""
        key = (place, command)
        if key not in self._results:
            try:
                self._results[key] = self.remote(place).run(
                    command, check=False, timeout=COMMAND_TIMEOUT
                )
            except RemoteError as error:
                self._results[key] = error
        outcome = self._results[key]
        if isinstance(outcome, RemoteError):
            raise outcome
        return outcome

    def _run_all(self, checks: list[Check]) -> None:
        by_place: dict[str | None, list[str]] = {}
        for check in checks:
            commands = by_place.setdefault(check.place, [])
            if check.command not in commands:
                commands.append(check.command)
        for place in by_place:
            self.remote(place)  # built here, not in the threads

        def run_in_order(place: str | None) -> None:
            for command in by_place[place]:
                with contextlib.suppress(RemoteError):  # kept in _results; the check reports it
                    self.run(place, command)

        with ThreadPoolExecutor(max_workers=max(1, len(by_place))) as pool:
            list(pool.map(run_in_order, by_place))

    def examine(self, checks: list[Check]) -> list[Finding]:
        self._results.clear()
        first, rest = checks[0], checks[1:]
        try:
            listing = self.run(None, first.command)
        except RemoteError as error:
            why = f"the LXD host {self.host} did not answer (see {first.name})"
            return [Finding(first.name, "fail", error.message, error.hint or first.fix)] + [
                Finding(c.name, "skip", why) for c in rest
            ]
        present = container_names(listing.stdout) if listing.ok else set()
        runnable = [c for c in rest if not c.disabled and (c.place is None or c.place in present)]
        self._run_all(runnable)
        findings = [self._finding(first)]
        for check in rest:
            if check.disabled:
                findings.append(Finding(check.name, "skip", check.disabled))
            elif check in runnable:
                findings.append(self._finding(check))
            else:
                findings.append(
                    Finding(check.name, "skip", f"no container {check.place} (see {first.name})")
                )
        return findings

    def _finding(self, check: Check) -> Finding:
        try:
            result = self.run(check.place, check.command)
        except RemoteError as error:
            return Finding(check.name, "fail", error.message, check.fix)
        if result.exit_code == 127:
            return Finding(
                check.name,
                check.when_missing,
                f"not installed on {where(check.place, self.host, self.tool)}: {output_of(result)}",
                "" if check.when_missing == "skip" else check.fix,
            )
        command, judge = check.command, check.judge
        try:
            verdict = judge(result)
            while isinstance(verdict, FollowUp):
                command, judge = verdict.command, verdict.judge
                verdict = judge(self.run(check.place, command))
        except ParseError as error:
            return Finding(
                check.name, "fail", f"unreadable output of `{command}`: {error}", check.fix
            )
        except RemoteError as error:
            return Finding(check.name, "fail", error.message, check.fix)
        fix = (
            ""
            if verdict.status == "pass"
            else (verdict.fix if verdict.fix is not None else check.fix)
        )
        return Finding(check.name, verdict.status, verdict.saw, fix)

    def repair(self, checks: list[Check], findings: list[Finding]) -> list[str]:
        """Run the safe repairs of the failing checks; what changed, and what was left alone."""
        by_name = {c.name: c for c in checks}
        said: list[str] = []
        for finding in findings:
            check = by_name[finding.check]
            if finding.status != "fail" or check.repair is None:
                continue
            result = self._results.get((check.place, check.command))
            if not isinstance(result, CommandResult):
                continue
            try:
                repair = check.repair(result)
            except ParseError as error:
                said.append(f"not repaired: {check.name}: {error}")
                continue
            if isinstance(repair, str):
                said.append(f"not repaired: {check.name}: {repair}")
                continue
            try:
                outcome = self.remote(check.place).run(
                    repair.command, check=False, timeout=COMMAND_TIMEOUT
                )
            except RemoteError as error:
                said.append(f"not repaired: {check.name}: {error.message}")
                continue
            if outcome.ok:
                said.append(f"changed: {check.name}: {repair.says}")
            else:
                said.append(f"not repaired: {check.name}: {output_of(outcome)}")
        return said

    def close(self) -> None:
        for remote in self._remotes.values():
            remote.close()

    def __enter__(self) -> Doctor:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
