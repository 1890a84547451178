"""Whether the service a deploy started runs and answers healthy: one exchange per check (the
processes and the health answer together), first-ready, then a settle window; the log lines
shown when it does not; and a line now and then while one long exchange runs (`progress`). A
part of `Deployment` (a base class): it reads the deploy's session, component, commit and
reporter."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..config import Component
from ..errors import DeployFailed, GbdeployError
from ..output import Reporter
from ..remote import probes
from ..remote.connection import CommandResult
from ..remote.session import Session
from . import layout
from .engine import Command, Step
from .layout import Paths
from .service import service_of

if TYPE_CHECKING:
    from collections.abc import Callable

HEALTH_INTERVAL = 0.05  # seconds between two health checks while a service starts
SETTLE_INTERVAL = 0.25  # seconds between two checks while a healthy new process settles
PROGRESS_EVERY = 5.0  # a long wait prints a line this often


class ServiceChecks:
    """The health checks of a `Deployment`."""

    component: Component
    session: Session
    reporter: Reporter
    paths: Paths
    token: str
    commit: str | None
    unchanged: bool
    users: list[str]
    log_offset: int
    run: Callable[..., str]
    send: Callable[..., str]
    exchange: Callable[..., CommandResult]
    health_check: Command  # `state_command(health=True)`, one object from plan to run
    state_check: Command  # `state_command()`
    log_stat: Command  # `log_probe().command`

    def state_command(self, *, health: bool = False) -> str:
        probe = self.health_probe() if health else None
        return layout.state_command(
            self.paths, self.component, probe.command if probe is not None else None
        )

    def check(self) -> tuple[str, dict[int, str], probes.Health | None]:
        """One exchange: `up` with the processes this deploy started (any process running the
        binary when it started none) and their users, `starting` or `down`; and what the health
        URL answers (None without one)."""
        probe = self.health_probe()
        result = self.exchange(
            self.health_check, timeout=probe.timeout if probe is not None else 30.0
        )
        head, mark, rest = result.stdout.partition(f"{layout.HEALTH_MARK}\n")
        words = head.split()
        running = {}
        for word in words[1:]:
            pid, _, user = word.partition(":")
            if pid.isdigit():
                running[int(pid)] = user
        health = None
        if probe is not None:
            body, found, status = rest.rpartition(f"{layout.HEALTH_MARK} ")
            if mark and found and status.strip().isdigit():
                code = int(status)
            else:  # the exchange itself failed
                body, code = "", result.exit_code or 1
            body = body[:-1] if body.endswith("\n") else body
            health = probe.parse(CommandResult(probe.command, code, body, result.stderr))
        return (words[0] if words else "down"), running, health

    def service_state(self) -> tuple[str, list[int]]:
        """`up` with the pids of the processes this deploy started, `starting`, or `down`."""
        words = self.send(self.state_check).split()
        state = words[0] if words else "down"
        return state, [int(w.partition(":")[0]) for w in words[1:] if w.partition(":")[0].isdigit()]

    def service_alive(self) -> bool:
        return self.service_state()[0] in ("up", "starting")

    def health_probe(self) -> probes.Probe[probes.Health] | None:
        return probes.health_probe(self.component)

    def wait_until_up(self, *, settle: float = 0.0, expect: str | None = "") -> str:
        """First-ready: checked at once, then every HEALTH_INTERVAL, until the process this deploy
        started runs and the health URL answers ok with the expected commit (when known), or
        `health_timeout` passes; the service dying ends the wait at once. Then, for `settle`
        seconds, the same processes must keep running and every answer stay ok. `expect`: the
        commit the answer must name (default this deploy's; None: any)."""
        expected = self.commit if expect == "" else expect
        component = self.component
        started = time.monotonic()
        deadline = started + component.health_timeout
        next_note = started + PROGRESS_EVERY
        probe = self.health_probe()
        settled_from: float | None = None
        pids: list[int] = []
        last: probes.Health | None = None
        while True:
            state, users, answer = self.check()
            running = list(users)
            if state == "down":
                if self.unchanged:
                    raise DeployFailed(
                        f"{component.name}: the binary is unchanged but the service does not run",
                        hint=f"`gbdeploy deploy {component.name} --force` restarts it",
                    )
                when = " after it had answered healthy" if settled_from is not None else ""
                raise DeployFailed(
                    f"{component.binary} exited while starting{when}" + self.log_tail()
                )
            why = ""
            if probe is not None and state == "up":
                last = answer
                assert last is not None
                why = self.unhealthy(last, expected)
            elif state != "up":
                why = "the process it started has not started the binary yet"
            now = time.monotonic()
            if not why and settled_from is None:
                settled_from, pids = now, running
            elif settled_from is not None:
                gone = sorted(set(pids) - set(running))
                if gone or why:
                    raise DeployFailed(
                        f"{component.name} answered healthy, then within its settle window "
                        f"({settle:g}s, `components.{component.name}.health_settle`) "
                        + (f"pid {', '.join(map(str, gone))} exited" if gone else why)
                        + self.log_tail()
                    )
            if settled_from is not None and now - settled_from >= settle:
                self.users = sorted(set(users.values()))
                if probe is None:
                    return "running (no health URL configured)"
                assert last is not None
                return f"status ok, commit {last.commit or '?'}" + (
                    f", stayed healthy {settle:g}s" if settle else ""
                )
            if settled_from is None and now > deadline:
                raise DeployFailed(
                    f"{component.name} not healthy after {component.health_timeout:g}s: {why}"
                    + self.log_tail()
                )
            if now >= next_note:
                next_note = now + PROGRESS_EVERY
                what = "settling" if settled_from is not None else f"waiting: {why}"
                self.reporter.say(f"  … {int(now - started)}s, {component.name} {what}")
            if settled_from is None:
                time.sleep(HEALTH_INTERVAL)
            else:  # the last check falls at the window's end, not up to an interval past it
                time.sleep(min(SETTLE_INTERVAL, settled_from + settle - now))

    def unhealthy(self, health: probes.Health, commit: str | None) -> str:
        """Why this answer does not count as healthy ("" when it does)."""
        if not health.ok:
            return health.describe()
        expected, got = (commit or "").lower(), (health.commit or "").lower()
        if expected and got and not (expected.startswith(got) or got.startswith(expected)):
            return (
                f"{health.url} answers for commit {health.commit}, not {commit}: another "
                f"binary, or another service on that URL (check `components."
                f"{self.component.name}.health`)"
            )
        return ""

    def health_step(self) -> Step:
        self.health_probe()  # a URL it cannot use is the config's error, before anything runs
        healthy = Command("healthy", lambda: layout.healthy_command(self.paths, self.token))

        def run() -> str:
            settle = 0.0 if self.unchanged else self.component.health_settle
            detail = self.wait_until_up(settle=settle)
            others = [user for user in self.users if user != self.component.user]
            if others:
                self.reporter.say(
                    f"  warning: {self.component.binary} runs as {', '.join(others)}, not "
                    f"{self.component.user}: check `run_as` of {self.component.name} in the config"
                )
            if not self.unchanged:
                self.send(healthy)
            return detail

        return Step(
            "health",
            [self.health_check, healthy],
            run,
            summary=f"{self.component.health or 'the process runs'}: first-ready, "
            f"every {HEALTH_INTERVAL}s up to {self.component.health_timeout:g}s, then "
            f"{self.component.health_settle:g}s settle",
        )

    @contextmanager
    def progress(self, note: str) -> Iterator[None]:
        """While the body runs (one exchange that may take long), a line every PROGRESS_EVERY
        seconds says so."""
        done = threading.Event()
        started = time.monotonic()

        def tell() -> None:
            while not done.wait(PROGRESS_EVERY):
                self.reporter.say(f"  … {int(time.monotonic() - started)}s, {note}")

        teller = threading.Thread(target=tell, daemon=True)
        teller.start()
        try:
            yield
        finally:
            done.set()
            teller.join()

    # -- logs
    def log_probe(self) -> probes.Probe[probes.FileStat | None]:
        return probes.probe_stat(self.component.log_path)

    def log_size(self) -> int:
        probe = self.log_probe()
        found = probe.parse(self.exchange(self.log_stat, timeout=probe.timeout))
        return found.size if found else 0

    def log_tail(self) -> str:
        where = service_of(self.component).log_elsewhere()
        try:
            tail = probes.probe_tail(self.component.log_path, from_byte=self.log_offset).run(
                self.session
            )
        except GbdeployError:
            tail = ""
        if not tail.strip():
            return f"; nothing in {self.component.log_path}" + (f" (see {where})" if where else "")
        lines = "\n    ".join(tail.rstrip().splitlines())
        return f"; last lines of {self.component.log_path}:\n    {lines}"
