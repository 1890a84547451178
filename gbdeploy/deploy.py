"""The runner-side deploy step, `rollback` and `status`, over SSH.

A deploy is a list of `Step`s, each declaring the exact remote commands it runs and how to undo
it, so `--dry-run` prints the plan without connecting, and a failure undoes what was done, newest
first. Paths on the target, for a component whose binary is B:

    B.new          the upload, checked by sha256 before anything is stopped (strategy `staged`)
    B.prev         the binary that ran before the last deploy (a hard link, or a copy)
    B.lock/holder  the deploy lock: `mkdir` is atomic; the file says who, when, which commit
    B.deploys.log  one JSON line per deploy, appended; `status` reads the last one

Strategy `staged`: lock → upload B.new → check its sha256 → stop → keep B as B.prev → rename B.new
over B → chown/chmod → start → health → unlock. Strategy `seed` (the operations guide's order):
lock → stop → keep B.prev → upload B.new → check → rename over B → chown/chmod → start → health →
unlock. Once the service was stopped, any failure puts B.prev back and starts it again (exit 1);
exit 5 only if that fails too.

`rollback` swaps B and B.prev (so the binary it replaces becomes B.prev, and a second rollback
rolls forward again), restarts and checks health, with the same undo on failure.

The ssh user must be root (as inside the LXD container) or the service user itself: processes are
found through /proc/PID/exe, which only their owner and root can read, and only they can signal
them. The service is started through `run_as` (`sudo -u {user}`, `runuser -u {user} --`) unless
the ssh user already is the service user.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import paramiko

from . import probes, transfer
from .config import Component, Settings
from .connection import Remote, quote
from .errors import (
    DeployFailed,
    GbdeployError,
    LockHeld,
    OperationFailed,
    PreflightError,
    RemoteError,
    RestoreFailed,
    UsageError,
)
from .output import Reporter, human_bytes

STRATEGIES = ("staged", "seed")
POLL_SECONDS = 0.25
START_SECONDS = 10.0  # how long a started process may take to appear in /proc


# --- paths and pure commands (pyinfra style: what will run, testable without a target) ----------
@dataclass(frozen=True)
class Paths:
    binary: str

    @property
    def new(self) -> str:
        return f"{self.binary}.new"

    @property
    def prev(self) -> str:
        return f"{self.binary}.prev"

    @property
    def lock(self) -> str:
        return f"{self.binary}.lock"

    @property
    def holder(self) -> str:
        return f"{self.binary}.lock/holder"

    @property
    def deploy_log(self) -> str:
        return f"{self.binary}.deploys.log"

    @property
    def directory(self) -> str:
        return os.path.dirname(self.binary) or "/"


def lock_command(paths: Paths, holder: str) -> str:
    """Take the lock atomically; prints `acquired`, or `held` and the holder's record."""
    lock, info = quote(paths.lock), quote(paths.holder)
    return (
        f"if mkdir -- {lock} 2>/dev/null; then\n"
        f"  printf '%s\\n' {quote(holder)} > {info} || {{ rmdir -- {lock}; exit 1; }}\n"
        "  echo acquired\n"
        f"elif [ -d {lock} ]; then echo held; cat -- {info} 2>/dev/null; exit 0\n"
        f"else mkdir -- {lock}\n"
        "fi"
    )


def unlock_command(paths: Paths, token: str) -> str:
    """Remove the lock only if it still holds our token."""
    info = quote(paths.holder)
    return (
        f"grep -q -F -e {quote(token)} -- {info} && rm -f -- {info} && rmdir -- {quote(paths.lock)}"
    )


def remove_lock_command(paths: Paths) -> str:
    return f"rm -f -- {quote(paths.holder)} && rmdir -- {quote(paths.lock)}"


def keep_prev_command(paths: Paths) -> str:
    """Keep the current binary as B.prev (a hard link: B stays in place); `none` if no B."""
    b, prev = quote(paths.binary), quote(paths.prev)
    return (
        f"[ -e {b} ] || {{ echo none; exit 0; }}\n"
        f"ln -f -- {b} {prev} 2>/dev/null || cp -p -- {b} {prev} || exit 1\n"
        "echo kept"
    )


def swap_in_command(paths: Paths) -> str:
    return f"mv -f -- {quote(paths.new)} {quote(paths.binary)}"


def restore_prev_command(paths: Paths) -> str:
    """Put B.prev back as B atomically, keeping B.prev (it may be needed again)."""
    prev, b = quote(paths.prev), quote(paths.binary)
    tmp = quote(f"{paths.binary}.restore")
    return (
        f"[ -f {prev} ] || {{ echo 'no previous binary at '{prev} >&2; exit 1; }}\n"
        f"rm -f -- {tmp} && {{ ln -- {prev} {tmp} 2>/dev/null || cp -p -- {prev} {tmp}; }}"
        f" && mv -f -- {tmp} {b}"
    )


def swap_prev_command(paths: Paths) -> str:
    """Exchange B and B.prev (rollback; running it twice rolls forward again)."""
    prev, b = quote(paths.prev), quote(paths.binary)
    tmp = quote(f"{paths.binary}.swap")
    return (
        f"[ -f {prev} ] || {{ echo 'no previous binary at '{prev} >&2; exit 1; }}\n"
        f"rm -f -- {tmp} && {{ ln -- {b} {tmp} 2>/dev/null || cp -p -- {b} {tmp}; }}"
        f" && mv -f -- {prev} {b} && mv -f -- {tmp} {prev}"
    )


def remove_command(path: str) -> str:
    return f"rm -f -- {quote(path)}"


def ownership_command(component: Component) -> str:
    # `user:` gives the user's login group, which is what `chown user:user` means where they match.
    b = quote(component.binary)
    return f"chown -- {quote(component.user + ':')} {b} && chmod 0755 -- {b}"


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def run_as_prefix(component: Component, ssh_user: str) -> str:
    """`sudo -u gbuser` (from config), or nothing when the ssh user already is the service user."""
    if not component.run_as or ssh_user == component.user:
        return ""
    return component.run_as.format(user=quote(component.user))


def start_command(component: Component, ssh_user: str) -> str:
    """Start the process detached (own session, no fd left on the ssh channel), as `user`."""
    for name in component.env:
        if not _ENV_NAME.match(name):
            raise UsageError(f"components.{component.name}.env: bad variable name {name!r}")
    env = " ".join(f"{name}={quote(value)}" for name, value in component.env.items())
    words = [
        '"$detach"',
        run_as_prefix(component, ssh_user),
        f"env {env}" if env else "",
        f"sh -c {quote(_exec_form(component.start_command))}",
    ]
    log = quote(component.log_path)
    launch = " ".join(word for word in words if word)
    return (
        f"cd -- {quote(component.directory)} || exit 1\n"
        f"mkdir -p -- {quote(os.path.dirname(component.log_path) or '/')}\n"
        "detach=$(command -v setsid || echo nohup)\n"
        f"{launch} < /dev/null >> {log} 2>&1 &\n"
        'echo "launched $!"'
    )


def _exec_form(command: str) -> str:
    """`exec CMD` for a simple command, so the service itself is the session's process."""
    if re.search(r"[;&|\n`$()<>]", command) or command.lstrip().startswith("exec "):
        return command
    return f"exec {command}"


def stop_command(component: Component) -> str:
    stop = probes.stop_processes_command(component.binary, component.stop_timeout)
    if component.restart.mode == "systemd":
        return f"systemctl stop {quote(component.restart.unit)} || exit 1\n{stop}"
    return stop


def systemd_start_command(component: Component) -> str:
    return f"systemctl start {quote(component.restart.unit)}"


def systemd_state_command(component: Component) -> str:
    return f"systemctl is-active {quote(component.restart.unit)} || true"


def append_log_command(paths: Paths, record: dict[str, object]) -> str:
    line = json.dumps(record, sort_keys=True)
    return f"printf '%s\\n' {quote(line)} >> {quote(paths.deploy_log)}"


# --- steps ----------------------------------------------------------------------------------------
@dataclass
class Step:
    """One operation: the commands it runs (for the plan), how to run it and how to undo it."""

    name: str
    commands: list[str]
    run: Callable[[], str | None]
    undo_commands: list[str] = field(default_factory=list)
    undo: Callable[[], None] | None = None
    restores_service: bool = False  # its undo is part of restoring the running service

    def plan_lines(self) -> list[str]:
        lines = [f"{self.name}: {_indent(c)}" for c in self.commands] or [self.name]
        lines += [f"    undo on failure: {_indent(c)}" for c in self.undo_commands]
        return lines


def _indent(command: str) -> str:
    return command.replace("\n", "\n        ")


@dataclass
class _State:
    locked: bool = False
    stopped: bool = False  # the service was touched: failures now need a restore
    was_running: bool = False
    kept_prev: bool = False
    swapped: bool = False
    log_offset: int = 0
    restore_problems: list[str] = field(default_factory=list)
    restored_health: str = ""
    unchanged: bool = False  # the target already has this binary: only health runs


class _Run:
    """One deploy (or rollback) of one component: its steps, its state, its undo."""

    def __init__(
        self,
        settings: Settings,
        component: Component,
        reporter: Reporter,
        *,
        action: str,
        commit: str | None,
        strategy: str,
    ) -> None:
        self.settings = settings
        self.component = component
        self.reporter = reporter
        self.action = action
        self.commit = commit
        self.strategy = strategy
        self.target = settings.target_of(component)
        self.remote = Remote(self.target, settings.ssh)
        self.paths = Paths(component.binary)
        self.state = _State()
        self.token = secrets.token_hex(8)
        self.who = f"{_local_user()}@{socket.gethostname()}"
        self.started = time.monotonic()
        self.started_at = _now()
        self.sha256: str | None = None

    def refuse_a_foreign_ssh_user(self) -> None:
        """Only root or the service user can see (/proc/PID/exe) and signal the service's
        processes; as anyone else, the stop would find nothing and leave the old service running."""
        user = self.remote.user
        if user not in ("root", self.component.user):
            raise UsageError(
                f"{self.component.name}: the ssh user {user!r} on {self.target.ssh} can neither "
                f"see nor stop {self.component.user}'s processes; nothing was changed",
                hint=f"connect as root or as {self.component.user} (`User` of Host "
                f"{self.target.ssh} in {self.settings.ssh.config})",
            )

    # -- remote helpers
    def run(self, command: str, *, timeout: float = 120.0) -> str:
        return self.remote.run(command, timeout=timeout).stdout

    def run_again_if_dropped(self, command: str, *, timeout: float = 120.0) -> str:
        """For undo: after a dropped connection, reconnect once and run it."""
        try:
            return self.run(command, timeout=timeout)
        except RemoteError:
            if _transport_active(self.remote):
                raise
            close_quietly(self.remote)
            return self.run(command, timeout=timeout)

    # -- lock
    def holder_record(self) -> str:
        return json.dumps(
            {
                "holder": self.who,
                "pid": os.getpid(),
                "time": self.started_at,
                "component": self.component.name,
                "action": self.action,
                "commit": self.commit,
                "token": self.token,
            },
            sort_keys=True,
        )

    def lock_step(self) -> Step:
        command = lock_command(self.paths, self.holder_record())

        def run() -> str:
            output = self.run(command).splitlines()
            if output[:1] == ["acquired"]:
                self.state.locked = True
                return self.paths.lock
            raise self.lock_held("\n".join(output[1:]))

        return Step(
            "lock",
            [command],
            run,
            [unlock_command(self.paths, self.token)],
            self.release_lock_after_failure,
        )

    def lock_held(self, raw: str) -> LockHeld:
        try:
            held = json.loads(raw)
            who = (
                f"{held.get('holder', '?')} (pid {held.get('pid', '?')}) since "
                f"{held.get('time', '?')}, {held.get('action', 'deploy')} of commit "
                f"{held.get('commit') or 'unknown'}"
            )
            holder_pid = f"{held.get('pid', '?')} on {held.get('holder', '?')}"
        except ValueError:
            who = repr(raw.strip()) if raw.strip() else "unknown holder (no holder file)"
            holder_pid = "the holder's process"
        removal = (
            f"ssh {self.target.ssh} {quote(self.remote.wrap(remove_lock_command(self.paths)))}"
        )
        return LockHeld(
            f"{self.component.name}: another deploy holds the lock {self.paths.lock} on "
            f"{self.remote.description}: {who}; nothing was changed",
            hint=f"wait for it to finish and try again; if it is stale (check that {holder_pid} "
            f"no longer runs a deploy), remove it: {removal}",
        )

    def release_lock_after_failure(self) -> None:
        if not self.state.locked:
            return
        try:
            self.record(self.result_after_failure())
        except GbdeployError as error:
            self.reporter.say(f"  warning: could not append to {self.paths.deploy_log}: {error}")
        self.unlock()

    def unlock(self) -> None:
        try:
            self.run_again_if_dropped(unlock_command(self.paths, self.token))
        except GbdeployError as error:
            removal = quote(self.remote.wrap(remove_lock_command(self.paths)))
            self.reporter.say(
                f"  warning: could not remove the lock {self.paths.lock}: {error}\n"
                f"  remove it by hand once no deploy runs: ssh {self.target.ssh} {removal}"
            )
            return
        self.state.locked = False

    def unlock_step(self) -> Step:
        def run() -> str:
            try:
                self.record("unchanged" if self.state.unchanged else "ok")
            except GbdeployError as error:
                self.reporter.say(
                    f"  warning: could not append to {self.paths.deploy_log}: {error}"
                )
            self.unlock()
            return ""

        return Step(
            "unlock",
            [
                append_log_command(self.paths, self.log_entry("ok")),
                unlock_command(self.paths, self.token),
            ],
            run,
        )

    def result_after_failure(self) -> str:
        if not self.state.stopped:
            return "failed, nothing changed"
        if self.state.restore_problems:
            return "failed, restore failed"
        return "failed, rolled back"

    def record(self, result: str) -> None:
        self.run_again_if_dropped(append_log_command(self.paths, self.log_entry(result)))

    def log_entry(self, result: str) -> dict[str, object]:
        return {
            "time": self.started_at,
            "component": self.component.name,
            "action": self.action,
            "commit": self.commit,
            "sha256": self.sha256,
            "strategy": self.strategy,
            "result": result,
            "duration": round(time.monotonic() - self.started, 2),
            "who": self.who,
        }

    # -- stop / start / health
    @property
    def systemd(self) -> bool:
        return self.component.restart.mode == "systemd"

    def is_running(self) -> bool:
        if self.systemd:
            state = self.run(systemd_state_command(self.component)).strip()
            if state in ("active", "activating", "reloading"):
                return True
        return bool(probes.probe_processes(self.component.binary).run(self.remote))

    def stop_step(self) -> Step:
        command = stop_command(self.component)

        def run() -> str:
            self.state.was_running = self.is_running()
            self.state.stopped = True
            output = self.run(command, timeout=self.component.stop_timeout + 30).strip()
            last = output.splitlines()[-1] if output else ""
            if not self.state.was_running:
                return "was not running"
            return last.replace("killed", "killed after SIGTERM timeout:")

        return Step(
            "stop",
            [command],
            run,
            ["start the previous binary again and wait for its health (if it was running)"],
            self.restart_previous,
            restores_service=True,
        )

    def restart_previous(self) -> None:
        if not self.state.was_running:
            return
        self.run_again_if_dropped("true")  # reconnect first if the connection dropped
        if not self.is_running():
            self.launch()
        health = self.wait_until_up()
        self.state.restored_health = health

    def start_step(self) -> Step:
        if self.systemd:
            commands = [systemd_start_command(self.component)]
        else:
            commands = [start_command(self.component, self.remote.user)]
        return Step(
            "start",
            commands,
            lambda: self.launch(),
            [stop_command(self.component)],
            self.stop_new,
            restores_service=True,
        )

    def stop_new(self) -> None:
        self.run_again_if_dropped(
            stop_command(self.component), timeout=self.component.stop_timeout + 30
        )

    def launch(self) -> str:
        before = probes.probe_stat(self.component.log_path).run(self.remote)
        self.state.log_offset = before.size if before else 0
        if self.systemd:
            self.run(systemd_start_command(self.component))
            return f"systemctl start {self.component.restart.unit}"
        launched = self.run(start_command(self.component, self.remote.user)).split()
        launcher = int(launched[-1]) if launched and launched[-1].isdigit() else None
        deadline = time.monotonic() + min(START_SECONDS, self.component.health_timeout)
        while True:
            found = probes.probe_processes(self.component.binary).run(self.remote)
            if found:
                detail = ", ".join(f"pid {p.pid} as {p.user}" for p in found)
                if any(p.user != self.component.user for p in found):
                    self.reporter.say(
                        f"  warning: {self.component.binary} runs as "
                        f"{', '.join(sorted({p.user for p in found}))}, not "
                        f"{self.component.user}: check `run_as` in the config … "
                    )
                return detail
            # The launcher (setsid/run_as, or the service itself) is gone and left nothing running.
            gone = launcher is not None and not self.pid_alive(launcher)
            if gone or time.monotonic() > deadline:
                raise DeployFailed(
                    f"{self.component.binary} did not start (no process runs it)" + self.log_tail()
                )
            time.sleep(POLL_SECONDS)

    def pid_alive(self, pid: int) -> bool:
        """Whether `pid` runs (a zombie has no executable any more)."""
        command = f"readlink /proc/{int(pid)}/exe >/dev/null 2>&1 && echo alive || echo gone"
        return self.run(command).strip() == "alive"

    def log_tail(self) -> str:
        where = f"journalctl -u {self.component.restart.unit}" if self.systemd else ""
        try:
            tail = probes.probe_tail(self.component.log_path, from_byte=self.state.log_offset).run(
                self.remote
            )
        except GbdeployError:
            tail = ""
        if not tail.strip():
            return f"; nothing in {self.component.log_path}" + (f" (see {where})" if where else "")
        lines = "\n    ".join(tail.rstrip().splitlines())
        return f"; last lines of {self.component.log_path}:\n    {lines}"

    def wait_until_up(self) -> str:
        """Poll the health URL on the target, watching that the service has not died."""
        component = self.component
        deadline = time.monotonic() + component.health_timeout
        probe = probes.probe_health(component.health) if component.health else None
        last: probes.Health | None = None
        while True:
            if not self.service_alive():
                if self.state.unchanged:
                    raise DeployFailed(
                        f"{component.name}: the binary is unchanged but the service does not run",
                        hint="`gbdeploy deploy --force` restarts it",
                    )
                raise DeployFailed(f"{component.binary} exited while starting" + self.log_tail())
            if probe is None:
                return "running (no health URL configured)"
            last = probe.run(self.remote)
            if last.ok:
                return f"status ok, commit {last.commit or '?'}"
            if time.monotonic() > deadline:
                raise DeployFailed(
                    f"{component.name} not healthy after {component.health_timeout:.0f}s: "
                    f"{last.describe()}" + self.log_tail()
                )
            time.sleep(POLL_SECONDS)

    def service_alive(self) -> bool:
        if self.systemd:
            state = self.run(systemd_state_command(self.component)).strip()
            return state in ("active", "activating", "reloading")
        return bool(probes.probe_processes(self.component.binary).run(self.remote))

    def health_step(self) -> Step:
        url = self.component.health
        commands = [probes.probe_health(url).command] if url else []
        return Step(
            "health",
            commands or ["(no health URL: check that the process runs)"],
            self.wait_until_up,
        )

    # -- binary steps
    def keep_prev_step(self) -> Step:
        command = keep_prev_command(self.paths)

        def run() -> str:
            self.state.kept_prev = self.run(command).strip() == "kept"
            return self.paths.prev if self.state.kept_prev else "no binary yet"

        return Step("keep previous", [command], run)

    def swap_step(self) -> Step:
        command = swap_in_command(self.paths)

        def run() -> str:
            self.state.swapped = True  # a failed mv may still have replaced B: always restore
            self.run(command)
            return ""

        return Step(
            "swap",
            [command],
            run,
            [restore_prev_command(self.paths)],
            self.restore_binary,
            restores_service=True,
        )

    def restore_binary(self) -> None:
        if not self.state.swapped:
            return
        if self.state.kept_prev:
            self.run_again_if_dropped(restore_prev_command(self.paths))
        else:  # first deploy: there was no binary before
            self.run_again_if_dropped(remove_command(self.paths.binary))

    def ownership_step(self) -> Step:
        command = ownership_command(self.component)
        return Step("chown", [command], lambda: self.run(command) or self.component.user)


# --- the executor ---------------------------------------------------------------------------------
def execute(run: _Run, steps: list[Step]) -> None:
    """Run `steps` in order; on any failure (Ctrl-C too) undo them newest first, then raise."""
    done: list[Step] = []
    try:
        with _interrupts_abort(run.remote):
            for step in steps:
                done.append(step)  # the failing step too: its undo copes with a partial run
                with run.reporter.step(step.name) as record:
                    record.detail = step.run() or ""
    except BaseException as error:
        undo(run, done, error)
        raise AssertionError("undo always raises") from error


@contextmanager
def _interrupts_abort(remote: Remote) -> Iterator[None]:
    """Ctrl-C and SIGTERM (a cancelled CI job) cut the connection, then undo the deploy.

    The interrupt may land inside paramiko, in the middle of an SFTP exchange; raising there alone
    can leave it waiting forever for an answer. Shutting the socket first wakes every wait with an
    error, and the undo runs on a fresh connection.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        transport = remote.connection.transport
        if transport is not None and transport.sock is not None:
            with suppress(OSError):
                transport.sock.shutdown(socket.SHUT_RDWR)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def undo(run: _Run, done: list[Step], error: BaseException) -> None:
    reporter = run.reporter
    cause = "interrupted" if isinstance(error, KeyboardInterrupt) else _first_line(error)
    if isinstance(error, LockHeld | UsageError) and not run.state.locked:
        raise error
    # Undo on a fresh connection: the old one may have dropped, or been interrupted mid-exchange.
    close_quietly(run.remote)
    reporter.say(f"undoing after: {cause}")
    restore_failed = False
    for step in reversed(done):
        if step.undo is None:
            continue
        if step.restores_service and restore_failed:
            continue  # do not start anything on top of a binary we could not put back
        try:
            with reporter.step(f"undo {step.name}"):
                step.undo()
        except Exception as failure:
            if step.restores_service:
                restore_failed = True
                run.state.restore_problems.append(f"undo {step.name}: {_first_line(failure)}")
            else:
                reporter.say(f"  warning: undo {step.name}: {_first_line(failure)}")
    raise _outcome(run, error, cause)


def _outcome(run: _Run, error: BaseException, cause: str) -> GbdeployError:
    name, paths, state = run.component.name, run.paths, run.state
    lock_note = "" if not state.locked else f"; the lock {paths.lock} is still held (see above)"
    if state.restore_problems:
        return RestoreFailed(
            f"{run.action} of {name} failed ({cause}) and the previous state could NOT be "
            f"restored: {'; '.join(state.restore_problems)}.\n  State now: "
            + describe_state(run)
            + lock_note,
            hint=f"a person must act: put a good binary at {paths.binary} (the previous one, "
            f"if intact, is {paths.prev}), start it, then check with `gbdeploy status {name}`",
        )
    if not state.stopped:
        if isinstance(error, GbdeployError) and not isinstance(error, OperationFailed):
            return error
        return DeployFailed(
            f"{run.action} of {name} failed before the service was touched ({cause}); "
            f"the running service and {paths.binary} are unchanged" + lock_note,
            hint=getattr(error, "hint", None) or "fix the cause above and run it again",
        )
    if state.swapped and not state.kept_prev:
        back = f"there was no binary before, so the new one was removed from {paths.binary}"
    elif state.was_running:
        back = f"the previous binary runs again and is healthy ({state.restored_health})"
    else:
        back = "the previous binary is back (it was not running before, so it was not started)"
    return DeployFailed(
        f"{run.action} of {name} failed ({cause}); rolled back: {back}" + lock_note,
        hint=getattr(error, "hint", None) or "fix the cause above and deploy again",
    )


def describe_state(run: _Run) -> str:
    """What is on the target right now, as far as we can still tell."""
    parts = []
    try:
        for label, path in (("binary", run.paths.binary), ("previous", run.paths.prev)):
            sha = probes.probe_sha256(path).run(run.remote)
            parts.append(f"{label} {path}: " + (f"sha256 {sha[:12]}" if sha else "MISSING"))
        procs = probes.probe_processes(run.component.binary).run(run.remote)
        parts.append(
            "running: " + (", ".join(f"pid {p.pid} ({p.user})" for p in procs) or "NOTHING")
        )
    except GbdeployError as error:
        parts.append(f"(could not inspect the target: {_first_line(error)})")
    return "; ".join(parts)


# --- entry points ---------------------------------------------------------------------------------
def run_deploy(
    settings: Settings,
    component: str,
    reporter: Reporter,
    *,
    artifact: str | None = None,
    strategy: str = "staged",
    dry_run: bool = False,
    force: bool = False,
    commit: str | None = None,
) -> None:
    """Deploy `artifact` as `component`'s binary on its target (see the module docstring)."""
    comp = settings.component(component)
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    local = find_artifact(settings, comp, artifact)
    run = _Run(settings, comp, reporter, action="deploy", commit=commit, strategy=strategy)
    if dry_run:
        sha = transfer.file_sha256(local) if local.is_file() else None
        run.sha256 = sha
        steps = deploy_steps(run, local, skip_unchanged=not force)
        reporter.plan(
            f"deploy {comp.name}: {local} ({_describe_local(local, sha)}) to {comp.binary} on "
            f"{run.remote.description}, strategy {strategy}, restart {_restart_text(comp)}"
            + (f"; every command runs as `{run.remote.wrap('COMMAND')}`" if run.target.lxc else ""),
            [line for step in steps for line in step.plan_lines()],
        )
        return
    run.refuse_a_foreign_ssh_user()
    if not local.is_file():
        raise UsageError(
            f"artifact {local} does not exist",
            hint=f"build it first ({comp.build or 'cargo build'}) or pass --artifact PATH",
        )
    run.sha256 = transfer.file_sha256(local)
    reporter.say(
        f"deploy {comp.name}: {local} ({_describe_local(local, run.sha256)}) → "
        f"{comp.binary} on {run.remote.description} (strategy {strategy})"
    )
    try:
        execute(run, deploy_steps(run, local, skip_unchanged=not force))
    finally:
        close_quietly(run.remote)
    reporter.summary()


def deploy_steps(run: _Run, local: Path, *, skip_unchanged: bool) -> list[Step]:
    lock = run.lock_step()
    compare = _compare_step(run, skip_unchanged)
    upload = _upload_step(run, local)
    check = _check_step(run)
    stop, keep = run.stop_step(), run.keep_prev_step()
    swap, chown = run.swap_step(), run.ownership_step()
    start, health, unlock = run.start_step(), run.health_step(), run.unlock_step()
    if run.strategy == "seed":
        order = [lock, compare, stop, keep, upload, check, swap, chown, start, health, unlock]
    else:
        order = [lock, compare, upload, check, stop, keep, swap, chown, start, health, unlock]
    for step in order:
        if step.name in _SKIPPED_WHEN_UNCHANGED:
            step.run = _unless_unchanged(run, step.run)
    return order


_SKIPPED_WHEN_UNCHANGED = {"upload", "check", "stop", "keep previous", "swap", "chown", "start"}


def _unless_unchanged(run: _Run, inner: Callable[[], str | None]) -> Callable[[], str | None]:
    def run_step() -> str | None:
        return "skipped (unchanged)" if run.state.unchanged else inner()

    return run_step


def _compare_step(run: _Run, skip_unchanged: bool) -> Step:
    probe = probes.probe_sha256(run.paths.binary)

    def compare() -> str:
        current = probe.run(run.remote)
        run.state.unchanged = skip_unchanged and current == run.sha256
        if run.state.unchanged:
            return "unchanged, nothing to do (the target has this binary); checking health"
        if current is None:
            return "no binary on the target yet"
        return f"target has {current[:12]}, deploying {run.sha256[:12] if run.sha256 else '?'}"

    return Step(
        "compare",
        [probe.command + "\n# equal to the artifact's sha256 (and no --force): skip to health"],
        compare,
    )


def _upload_step(run: _Run, local: Path) -> Step:
    new = run.paths.new

    def upload() -> str:
        run.run(remove_command(new))
        progress = _StepProgress("upload", run.reporter.stream, end_line=False)
        try:
            result = transfer.upload(run.remote, local, new, progress=progress)
        except (GbdeployError, OSError, EOFError, paramiko.SSHException) as error:
            dropped = not _transport_active(run.remote)
            why = "the connection dropped" if dropped else (str(error) or type(error).__name__)
            directory = quote(run.paths.directory)
            raise RemoteError(
                f"upload of {local} to {run.remote.description}:{new} failed: {why}",
                hint=f"check the connection, and that {run.paths.directory} on the target is "
                f"writable and has room for {human_bytes(local.stat().st_size)} "
                f"(`df -h {directory}`), then deploy again",
            ) from None
        rate = result.size / result.seconds if result.seconds > 0 else 0.0
        return (
            f"{human_bytes(result.size)} in {result.seconds:.1f}s ({human_bytes(rate)}/s, "
            f"{human_bytes(result.bytes_sent)} on the wire, {result.method})"
        )

    return Step(
        "upload",
        [remove_command(new), *transfer.upload_plan(local, new)],
        upload,
        [remove_command(new)],
        lambda: run.run_again_if_dropped(remove_command(new)) and None,
    )


def _check_step(run: _Run) -> Step:
    probe = probes.probe_sha256(run.paths.new)

    def check() -> str:
        got = probe.run(run.remote)
        if got != run.sha256:
            raise DeployFailed(
                f"the upload at {run.paths.new} has sha256 {got or 'none (missing)'}, "
                f"the artifact has {run.sha256}: the copy is damaged"
            )
        return f"sha256 {got[:12]} matches"

    return Step("check", [probe.command + "\n# must equal the artifact's sha256"], check)


def run_rollback(
    settings: Settings, component: str, reporter: Reporter, *, dry_run: bool = False
) -> None:
    """Swap B.prev and B (B becomes B.prev), restart, check health; undone on failure."""
    comp = settings.component(component)
    run = _Run(settings, comp, reporter, action="rollback", commit=None, strategy="rollback")
    steps = rollback_steps(run)
    if dry_run:
        reporter.plan(
            f"rollback {comp.name}: {run.paths.prev} ⇄ {comp.binary} on {run.remote.description}",
            [line for step in steps for line in step.plan_lines()],
        )
        return
    run.refuse_a_foreign_ssh_user()
    try:
        prev_sha = probes.probe_sha256(run.paths.prev).run(run.remote)
        if prev_sha is None:
            raise PreflightError(
                f"{comp.name}: no previous binary at {run.paths.prev} on "
                f"{run.remote.description}; nothing was changed",
                hint="a previous binary is kept by each deploy; deploy a known-good build instead",
            )
        run.sha256 = prev_sha
        reporter.say(f"rollback {comp.name} to {run.paths.prev} (sha256 {prev_sha[:12]})")
        execute(run, steps)
    finally:
        close_quietly(run.remote)
    reporter.summary()


def rollback_steps(run: _Run) -> list[Step]:
    swap_command = swap_prev_command(run.paths)

    def swap() -> str:
        run.state.swapped = True
        run.run(swap_command)
        return f"{run.paths.prev} ⇄ {run.paths.binary}"

    def swap_back() -> None:
        if run.state.swapped:
            run.run_again_if_dropped(swap_command)

    swap_step = Step("swap", [swap_command], swap, [swap_command], swap_back, restores_service=True)
    return [
        run.lock_step(),
        run.stop_step(),
        swap_step,
        run.ownership_step(),
        run.start_step(),
        run.health_step(),
        run.unlock_step(),
    ]


# --- status ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComponentStatus:
    component: str
    target: str
    binary: probes.FileStat | None
    sha256: str | None
    processes: list[probes.ProcessInfo]
    health: probes.Health | None
    last_deploy: dict[str, object] | None
    lock: str | None
    ci: str


def gather_status(settings: Settings, component: Component) -> ComponentStatus:
    paths = Paths(component.binary)
    target = settings.target_of(component)
    with Remote(target, settings.ssh) as remote:
        stat = probes.probe_stat(component.binary).run(remote)
        sha = probes.probe_sha256(component.binary).run(remote) if stat else None
        procs = probes.probe_processes(component.binary).run(remote)
        health = probes.probe_health(component.health).run(remote) if component.health else None
        last = probes.probe_last_line(paths.deploy_log).run(remote)
        lock = probes.probe_last_line(paths.holder).run(remote)
        description = remote.description
    try:
        last_deploy = json.loads(last) if last else None
    except ValueError:
        last_deploy = {"unreadable": last}
    return ComponentStatus(
        component.name,
        description,
        stat,
        sha,
        procs,
        health,
        last_deploy,
        lock,
        latest_ci_run(settings, component),
    )


def latest_ci_run(
    settings: Settings, component: Component, *, transport: httpx.BaseTransport | None = None
) -> str:
    """The newest CI run of the component's workflow, in one line; never fails `status`."""
    from .runs import latest_run_line

    return latest_run_line(settings, component, transport=transport)


def run_status(settings: Settings, reporter: Reporter, *, component: str | None = None) -> None:
    names = [settings.component(component).name] if component else sorted(settings.components)
    failures = 0
    for name in names:
        comp = settings.components[name]
        try:
            status = gather_status(settings, comp)
        except RemoteError as error:
            failures += 1
            reporter.say(f"{name}: cannot read its target: {error}")
            continue
        for line in format_status(comp, status):
            reporter.say(line)
    if failures == len(names):
        raise RemoteError("status: no target could be read", hint="see the errors above")


def format_status(component: Component, status: ComponentStatus) -> list[str]:
    lines = [f"{component.name} on {status.target}"]
    if status.binary is None:
        lines.append(f"  binary   {component.binary}: MISSING")
    else:
        b = status.binary
        mtime = datetime.fromtimestamp(b.mtime, timezone.utc).isoformat(timespec="seconds")
        lines.append(
            f"  binary   {component.binary}  modified {mtime}  {human_bytes(b.size)}  "
            f"owner {b.owner}:{b.group}  mode {b.mode:o}  sha256 {status.sha256}"
        )
    running = ", ".join(
        f"pid {p.pid} as {p.user}" + (" (binary replaced since it started)" if p.deleted else "")
        for p in status.processes
    )
    lines.append(f"  process  {running or 'not running'}")
    if status.health is None:
        lines.append("  health   (no health URL configured)")
    elif status.health.ok:
        h = status.health
        lines.append(f"  health   ok  version {h.version or '?'}  commit {h.commit or '?'}")
    else:
        lines.append(f"  health   NOT OK: {status.health.describe()}")
    if status.last_deploy:
        d = status.last_deploy
        lines.append(
            f"  deployed {d.get('time', '?')}  {d.get('action', 'deploy')} "
            f"commit {d.get('commit') or '?'}  {d.get('strategy', '?')}  "
            f"result {d.get('result', '?')}  by {d.get('who', '?')}"
        )
    else:
        lines.append("  deployed (no deploy log yet)")
    if status.lock:
        lines.append(f"  LOCKED   {status.lock}")
    lines.append(f"  CI       {status.ci}")
    return lines


# --- helpers --------------------------------------------------------------------------------------
def find_artifact(settings: Settings, component: Component, given: str | None) -> Path:
    """`--artifact`, else the component's `artifact` from the current directory, the submodule or
    the root repository (the first that exists)."""
    if given:
        return Path(given).expanduser().resolve()
    relative = Path(component.artifact or f"target/release/{component.name}")
    candidates = [Path.cwd() / relative]
    if settings.project_dir:
        candidates += [
            settings.project_dir / component.submodule / relative,
            settings.project_dir / relative,
        ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    return candidates[0]


def _describe_local(local: Path, sha: str | None) -> str:
    if sha is None:
        return "not built yet"
    return f"{human_bytes(local.stat().st_size)}, sha256 {sha[:12]}"


def _restart_text(component: Component) -> str:
    if component.restart.mode == "systemd":
        return f"systemd unit {component.restart.unit}"
    return f"process `{component.start_command}` as {component.user}"


class _StepProgress(transfer.TerminalProgress):
    """The upload's progress, drawn over its step's header `→ upload … ` on a terminal; the
    step's outcome then ends the line."""

    def line(self, done: int, total: int, elapsed: float) -> str:
        rate = done / elapsed if elapsed > 0 else 0.0
        return (
            f"→ {self.label} … {human_bytes(done)} / {human_bytes(total)} ({human_bytes(rate)}/s) "
        )


def close_quietly(remote: Remote) -> None:
    """Close, ignoring what a dead or interrupted connection raises while closing; the next
    command then opens a fresh connection."""
    with suppress(OSError, EOFError, paramiko.SSHException):
        remote.close()
    # Fabric closes its SFTP session first; when that raised, the ssh client is still open.
    with suppress(OSError, EOFError, paramiko.SSHException):
        remote.connection.client.close()


def _transport_active(remote: Remote) -> bool:
    transport = remote.connection.transport
    return bool(transport is not None and transport.is_active())


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return str(text).strip()


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a CI container without a passwd entry for its uid
        return f"uid{os.getuid()}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
