"""One deploy, rollback or recovery of one component: every step built in one place.

A deploy is a handful of exchanges over one `Session`, the upload included when the target has
python3 and the bytes go plain (else the upload takes its own channel, opened while the lock is
taken):

    begin     lock (atomic) + journal + preflight + what the target has   one exchange
    upload    B.new, hashed on the target while written                   the session (or a channel)
    service   keep B.prev → stop → swap → chown → start, with its undo    one exchange
    health    first-ready: checked at once, every HEALTH_INTERVAL, bounded
    finish    keep the release, deploy log, end the journal, unlock        one exchange

Strategy `seed` stops before the upload (the operations guide's order): its service exchange is
split in two around the upload. Once the service was touched, a failure puts B.prev back and
starts it again (exit 1); exit 5 only if that fails too. `rollback` runs the same steps with a
kept release in place of the upload; `--recover` takes over the lock of a deploy that was
killed and puts the last healthy release back.

The ssh user must be root (as inside the LXD container) or the service user itself: processes are
found through /proc/PID/exe, which only their owner and root can read, and only they can signal
them.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import paramiko

from .. import artifact, freeze, probes, provenance, transfer
from ..artifact import (
    Fingerprint,
    file_sha256,
    find_artifact,
    fingerprint,
    prefetch_fingerprint,
)
from ..config import Component, Settings
from ..connection import CommandResult, Remote, quote
from ..errors import (
    ConfigError,
    DeployFailed,
    GbdeployError,
    LockHeld,
    OperationFailed,
    PreflightError,
    RemoteError,
    RestoreFailed,
    UsageError,
)
from ..output import Reporter, human_bytes
from . import engine, layout
from .engine import Step, Undo
from .layout import Paths
from .service import service_of
from .session import Session, put_line

STRATEGIES = ("staged", "seed")
HEALTH_INTERVAL = 0.05  # seconds between two health checks while a service starts
SETTLE_INTERVAL = 0.25  # seconds between two checks while a healthy new process settles
PROGRESS_EVERY = 5.0  # a long wait prints a line this often
COMMIT = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,99}$")  # what --commit and the list may hold


# --- what the begin exchange found
@dataclass(frozen=True)
class Release:
    sha256: str
    commit: str | None
    time: str


@dataclass
class Facts:
    acquired: bool = False
    released: bool = False
    held_age: int | None = None
    holder: dict[str, object] | None = None
    holder_raw: str = ""
    journal: list[dict[str, object]] = field(default_factory=list)
    lockfail: str | None = None
    fails: list[tuple[str, str]] = field(default_factory=list)
    machine: str | None = None
    current: str | None = None
    releases: list[Release] = field(default_factory=list)
    frozen: dict[str, object] | None = None  # `gbdeploy lock … acquire` froze the component
    orphans: list[str] = field(default_factory=list)  # service scripts waited for (--recover)
    live_session: str | None = None  # --recover: the holder's session on the target still runs


def parse_facts(stdout: str) -> Facts:
    facts = Facts()
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word == "acquired":
            facts.acquired = True
        elif word == "released":  # the preflight failed: the lock was given back at once
            facts.released = True
        elif word == "held":
            facts.held_age = int(rest) if rest.strip().lstrip("-").isdigit() else None
        elif word == "holder":
            facts.holder_raw = rest
            facts.holder = _json_object(rest)
        elif word == "journal":
            facts.journal.append(_json_object(rest) or {"unreadable": rest})
        elif word == "lockfail":
            facts.lockfail = rest.strip() or "unknown error"
        elif word == "fail":
            key, _, why = rest.partition(" ")
            facts.fails.append((key, why))
        elif word == "frozen":
            facts.frozen = freeze.parse_record(rest)
        elif word == "orphan":
            facts.orphans.append(rest.strip())
        elif word == "live-session":
            facts.live_session = rest.strip()
        elif word == "machine":
            facts.machine = rest.strip()
        elif word == "current":
            facts.current = None if rest.strip() == "none" else rest.strip()
        elif word == "release":
            parts = rest.split()
            # a path is built from the sha256: anything but 64 hex digits is no release
            if len(parts) == 3 and layout.SHA256.match(parts[0]) and COMMIT.match(parts[1]):
                commit = None if parts[1] == "unknown" else parts[1]
                facts.releases.append(Release(parts[0], commit, parts[2]))
    return facts


def _json_object(text: str) -> dict[str, object] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- what an interrupted deploy left
_PHASE_MEANING = {
    "locked": "it had not touched the service yet",
    "uploaded": "it had uploaded the new binary but not touched the service",
    "stopping": "it was STOPPING the service: it may be down",
    "stopped": "it had STOPPED the service: it may be down",
    "swapped": "it had put the new binary in place but not started it: the service may be down",
    "started": "it had started the new binary, which never passed its health check",
    "healthy": "the new binary had passed its health check; only the end was missing",
    "undoing": "it was putting the previous binary back",
    "restored": "it had put the previous binary back",
    "restore-failed": "it could NOT put the previous binary back: the service may be down",
    "done": "it had ended",
    "failed-nothing-changed": "it failed before it touched the service",
    "failed-rolled-back": "it failed and had put the previous binary back",
    "failed-restore-failed": "it failed and could NOT put the previous binary back: the service "
    "may be down",
}


def describe_journal(journal: list[dict[str, object]]) -> str:
    if not journal:
        return "no journal (an older gbdeploy, or it was killed while taking the lock)"
    first, last = journal[0], journal[-1]
    phase = str(last.get("phase", "?"))
    what = f"{first.get('action', 'deploy')} of commit {first.get('commit') or 'unknown'}"
    meaning = _PHASE_MEANING.get(phase, "unknown phase")
    return f"{what}, last phase `{phase}` at {last.get('time', '?')}: {meaning}"


# --- the deployment
class Deployment:
    """One deploy (or rollback, or recovery) of one component: its steps, its state, its undo."""

    def __init__(
        self,
        settings: Settings,
        component: Component,
        reporter: Reporter,
        *,
        action: str,
        commit: str | None,
        strategy: str,
        clock: Callable[[], float] = time.time,
        token: str | None = None,
    ) -> None:
        self.settings = settings
        self.component = component
        self.reporter = reporter
        self.action = action
        self.commit = commit
        self.strategy = strategy
        self.target = settings.target_of(component)
        self.remote = Remote(self.target, settings.ssh)
        self.session = Session(self.remote)
        self.paths = Paths(component.binary)
        reporter.shared = layout.prelude(self.paths)  # -v: shown once
        self.token = token or secrets.token_hex(8)
        self.who = f"{_local_user()}@{socket.gethostname()}"
        now = clock()
        self.started_epoch = int(now)
        self.started_at = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")
        self.sha256: str | None = None
        self.size = 0
        self.fingerprint: Fingerprint | None = None  # of the artifact, as hashed here
        self.pending_upload: transfer.PendingUpload | None = None
        self.plain: bool | None = None  # the upload goes uncompressed (see sent_plain)
        self.facts = Facts()
        self.unchanged = False
        self.touched = False  # the service script began: a failure now needs a restore
        self.was_running = False
        self.restore_failed = False
        self.restored = False
        self.restored_health = ""
        self.restored_unhealthy = ""
        self.release: Release | None = None  # rollback: the release put back
        self.service_names: list[str] = []  # the service scripts of this deploy, in order
        # what the undo found on the target: "" (no undo ran), not-ours, untouched, kept, restored
        self.on_target = ""
        self.users: list[str] = []  # who runs the binary, as health last saw it
        self.kept_note = ""
        self.steal: str | None = None  # recover: the token of the stale lock to take over
        self.force = False  # recover: take over even a lock whose deploy is still connected
        self.log_offset = 0
        # Called once the lock is held and the preflight passed, before anything changes (the
        # pre_deploy hook); what it raises ends the deploy with nothing changed.
        self.before_change: Callable[[Deployment], None] | None = None

    # -- connection
    @property
    def ssh_user(self) -> str:
        return self.remote.user

    def run(self, command: str, *, timeout: float = 120.0, check: bool = True) -> str:
        return self.session.run(command, timeout=timeout, check=check).stdout

    def reconnect(self, error: BaseException | None = None) -> None:
        """A fresh connection and session (the old one may be dropped or cut mid-exchange)."""
        self.cancel_upload()
        self.session.close()
        close_quietly(self.remote)

    def close(self) -> None:
        self.cancel_upload()
        self.session.close()
        close_quietly(self.remote)

    def sent_plain(self, local: Path) -> bool:
        """Whether the artifact goes uncompressed; decided once (it may sample the artifact)."""
        if self.plain is None:
            self.plain = transfer.choose_method(self.remote, local, None) == transfer.STREAM
        return self.plain

    def upload_through_session(self, local: Path) -> bool:
        """The session's helper takes the file (no second channel), unless the bytes are to be
        compressed or the target has no python3."""
        return self.sent_plain(local) and self.session.streams_files()

    def prepare_upload(self, local: Path) -> None:
        """When the upload needs its own channel, open it now: its receiver waits for the word
        (see `transfer.start_upload`), so the target's shell starts while the lock is taken."""
        if not self.upload_through_session(local):
            self.pending_upload = transfer.start_upload(self.remote, local, self.paths.new)

    def cancel_upload(self) -> None:
        pending, self.pending_upload = self.pending_upload, None
        if pending is not None:
            pending.cancel()

    def cut(self) -> None:
        transport = self.remote.connection.transport
        if transport is not None and transport.sock is not None:
            with suppress(OSError):
                transport.sock.shutdown(socket.SHUT_RDWR)

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

    # -- records
    def holder_record(self) -> str:
        return json.dumps(
            {
                "holder": self.who,
                "pid": os.getpid(),
                "time": self.started_at,
                "component": self.component.name,
                "action": self.action,
                "commit": self.commit,
                "sha256": self.sha256,
                "token": self.token,
            },
            sort_keys=True,
        )

    def journal_start(self) -> str:
        return json.dumps(
            {
                "phase": "locked",
                "time": self.started_at,
                "action": self.action,
                "commit": self.commit,
                "sha256": self.sha256,
                "token": self.token,
            },
            sort_keys=True,
        )

    def log_entry(self, result: str) -> dict[str, object]:
        entry: dict[str, object] = {
            "time": self.started_at,
            "component": self.component.name,
            "action": self.action,
            "commit": self.commit,
            "sha256": self.sha256,
            "strategy": self.strategy,
            "result": result,
            "who": self.who,
            **provenance.record_fields(),  # the person who released, the CI run
        }
        if self.release is not None:
            entry["release"] = self.release.sha256
        if self.steal:
            entry["recovered"] = True
        return entry

    # -- the steps
    def begin_command(self, *, upload: bool) -> str:
        kib = self.size // 1024 + 1 if upload else None
        return layout.begin_command(
            self.paths,
            holder=self.holder_record(),
            journal=self.journal_start(),
            preflight=layout.preflight_lines(self.component, self.ssh_user, upload_kib=kib)
            + "\n"
            + freeze.check_lines(self.paths),
            steal=self.steal,
            force=self.force,
        )

    def begin_step(self, *, upload: bool, machine_of: Callable[[str], None] | None) -> Step:
        command = self.begin_command(upload=upload)

        def run() -> str:
            self.facts = parse_facts(self.run(command))
            facts = self.facts
            if facts.lockfail:
                raise RemoteError(
                    f"{self.component.name}: cannot take the lock {self.paths.lock} on "
                    f"{self.remote.description}: {facts.lockfail}; nothing was changed",
                    hint=f"check the disk and permissions of {self.paths.directory} (`df -h`)",
                )
            if not facts.acquired and facts.live_session:
                held = self.lock_held()
                raise LockHeld(
                    f"{held.message}\n  the deploy holding it is still connected to the target "
                    f"(its session, pid {facts.live_session} there, runs): --recover does not "
                    "take over a live deploy's lock",
                    hint="wait for it to finish; if it hangs, end it, or take over anyway with "
                    "`--recover --force`",
                )
            if not facts.acquired:
                raise self.lock_held()
            if facts.frozen is not None:
                where = self.remote.description
                raise freeze.refusal(self.component.name, self.action, where, facts.frozen)
            if facts.fails:
                raise PreflightError(
                    f"{self.component.name}: the target is not ready; nothing was changed: "
                    + "; ".join(f"{key}: {why}" for key, why in facts.fails),
                    hint=f"fix {facts.fails[0][0]} in gbdeploy.yaml or on the target, then "
                    "run it again",
                )
            for pid in facts.orphans:
                self.reporter.say(
                    f"  waited for the service script (pid {pid}) that the killed deploy left "
                    "running on the target, before taking over its lock"
                )
            if facts.journal:
                self.reporter.say(
                    f"  {'recovering from' if self.steal else 'warning: found'} what an earlier "
                    f"deploy left: {describe_journal(facts.journal)}"
                )
            if machine_of and facts.machine:
                try:
                    machine_of(facts.machine)
                except UsageError:
                    self.run(self.release_lock_command())
                    raise
            if self.before_change is not None:
                self.before_change(self)
            self.unchanged = upload and self.sha256 is not None and facts.current == self.sha256
            if self.commit is None:  # the same binary keeps the commit it is known by
                known = [r.commit for r in facts.releases if r.sha256 == self.sha256 and r.commit]
                self.commit = known[-1] if known else None
            if self.unchanged:
                return "unchanged, nothing to do (the target has this binary); checking health"
            if facts.current is None:
                return f"{self.paths.lock}; no binary on the target yet"
            return f"{self.paths.lock}; target has {facts.current[:12]}"

        undo_commands = [self.finish_command(result) for result in _FAILED_RESULTS]
        return Step(
            "lock",
            [command],
            run,
            Undo(undo_commands, self.release_after_failure, shown=lambda: self.facts.acquired),
            summary=f"take {self.paths.lock} (atomic), journal, preflight, compare sha256",
        )

    def release_lock_command(self) -> str:
        return (
            f"grep -q -F -e {quote(self.token)} -- {quote(self.paths.holder)} && "
            f"rm -f -- {quote(self.paths.journal)} && rm -rf -- {quote(self.paths.lock)}"
        )

    def lock_held(self) -> LockHeld:
        facts, name = self.facts, self.component.name
        held = facts.holder or {}
        age = f"{facts.held_age}s ago" if facts.held_age is not None else "at an unknown time"
        if held:
            who = (
                f"{held.get('holder', '?')} (pid {held.get('pid', '?')}), taken {age}, "
                f"{held.get('action', 'deploy')} of commit {held.get('commit') or 'unknown'}"
            )
        else:
            raw = facts.holder_raw.strip()
            who = repr(raw) if raw else f"no holder record (taken {age})"
        interrupted = describe_journal(facts.journal) if facts.journal else ""
        remove = quote(self.remote.wrap(layout.remove_lock_command(self.paths)))
        removal = f"ssh {self.target.ssh} {remove}"
        return LockHeld(
            f"{name}: another deploy holds the lock {self.paths.lock} on "
            f"{self.remote.description}: {who}"
            + (f"\n  its journal: {interrupted}" if interrupted else "")
            + "\n  nothing was changed",
            hint="wait for it to finish; if it no longer runs (it was killed), recover with "
            f"`gbdeploy deploy {name} --recover` (puts the last healthy release back and runs "
            f"it), or only remove the lock: {removal}",
        )

    def release_after_failure(self) -> None:
        if not self.facts.acquired or self.facts.released:  # not held, or given back already
            with suppress(GbdeployError):
                self.run_again_if_dropped(self.release_lock_command() + " || true")
            return
        result = self.result_after_failure()
        try:
            self.run_again_if_dropped(self.finish_command(result))
        except GbdeployError as error:
            removal = quote(self.remote.wrap(layout.remove_lock_command(self.paths)))
            self.reporter.say(
                f"  warning: could not record the result and remove the lock {self.paths.lock}: "
                f"{_first_line(error)}\n  remove it by hand once no deploy runs: "
                f"ssh {self.target.ssh} {removal}"
            )

    def result_after_failure(self) -> str:
        if self.on_target == "kept":
            return "ok"
        if not self.touched:
            return _FAILED_RESULTS[0]
        return _FAILED_RESULTS[2] if self.restore_failed else _FAILED_RESULTS[1]

    def run_again_if_dropped(self, command: str, *, timeout: float = 120.0) -> str:
        try:
            return self.run(command, timeout=timeout)
        except RemoteError:
            if _transport_active(self.remote):
                raise
            self.reconnect()
            return self.run(command, timeout=timeout)

    def finish_command(self, result: str) -> str:
        keep = None
        if result in ("ok", "unchanged") and self.sha256 and self.release is None:
            keep = (self.sha256, self.commit or "unknown", self.component.keep_releases)
        phase = "done" if result in ("ok", "unchanged") else result.replace(", ", "-")
        return layout.finish_command(
            self.paths,
            token=self.token,
            log_entry=self.log_entry(result),
            started_epoch=self.started_epoch,
            keep_release=keep,
            phase=phase.replace(" ", "-"),
        )

    def upload_step(self, local: Path) -> Step:
        new = self.paths.new
        hash_command = f'{layout.prelude(self.paths)}\nsha_of "$N"'
        uploaded = f"{layout.prelude(self.paths)}\nphase uploaded"

        def upload() -> str:
            progress = _StepProgress("upload", self.reporter.stream, end_line=False)
            pending, self.pending_upload = self.pending_upload, None
            try:
                if pending is None and self.upload_through_session(local):
                    result = transfer.upload_through(
                        self.session, local, new, progress=progress, known=self.fingerprint
                    )
                else:
                    if pending is None:
                        pending = transfer.start_upload(self.remote, local, new)
                    result = pending.send(progress=progress, known=self.fingerprint)
            except (GbdeployError, OSError, EOFError, paramiko.SSHException) as error:
                dropped = not _transport_active(self.remote)
                why = "the connection dropped" if dropped else (str(error) or type(error).__name__)
                raise RemoteError(
                    f"upload of {local} to {self.remote.description}:{new} failed: {why}",
                    hint=f"check the connection, and that {self.paths.directory} on the target "
                    f"is writable and has room for {human_bytes(self.size)} "
                    f"(`df -h {quote(self.paths.directory)}`), then deploy again",
                ) from None
            got = result.remote_sha256
            if got is None:  # the target could not hash while writing: one more pass there
                got = self.run(hash_command, timeout=300).strip()
            if got != self.sha256:
                raise DeployFailed(
                    f"the upload at {new} has sha256 {got or 'none'}, the artifact has "
                    f"{self.sha256}: the copy is damaged"
                )
            if not self.touched:
                self.run(uploaded)
            rate = result.size / result.seconds if result.seconds > 0 else 0.0
            return (
                f"{human_bytes(result.size)} in {result.seconds:.1f}s ({human_bytes(rate)}/s, "
                f"{human_bytes(result.bytes_sent)} on the wire, {result.method}), "
                f"sha256 {got[:12]} matches"
            )

        remove = layout.remove_new_command(self.paths)
        channel = transfer.upload_plan(local, new, remote=self.remote)
        if local.is_file() and self.sent_plain(local):
            size = local.stat().st_size
            channel = [put_line(new, size), *(f"(without python3 there) {c}" for c in channel)]
        return Step(
            "upload",
            [*channel, hash_command, uploaded],
            upload,
            Undo([remove], lambda: self.run_again_if_dropped(remove) and None),
            summary=f"{local} → {new}, sha256 checked as written",
        )

    def service_step(
        self, name: str, *, source: str | None = None, stop: bool = True, start: bool = True
    ) -> Step:
        assert self.sha256
        command = layout.service_command(
            self.paths,
            self.component,
            self.ssh_user,
            sha256=self.sha256,
            token=self.token,
            name=name,
            source=source,
            stop=stop,
            start=start,
        )
        self.service_names.append(name)
        restore = self.restore_command()

        def run() -> str:
            self.touched = True
            if start:
                self.log_offset = self.log_size()
            note = (
                f"{name} still running on the target (a stop waits up to "
                f"{self.component.stop_timeout:g}s for SIGTERM before SIGKILL)"
            )
            with self.progress(note):
                result = self.session.run(
                    command, check=False, timeout=self.component.stop_timeout + 60
                )
            out = result.stdout
            self.was_running = self.was_running or "was-running 1" in out
            if result.exit_code == 3:  # the script failed and undid itself
                why = result.stderr.strip().splitlines()[-1:] or ["?"]
                if "restore-failed" in out:
                    self.restore_failed = True
                raise DeployFailed(f"{name} failed on the target ({why[0]})" + self.log_tail())
            if result.exit_code == 4:  # it never began: the lock is not ours, or the undo won
                raise RemoteError(
                    f"on {self.remote.description}: {name} did not begin: "
                    + (result.stderr.strip() or "?")
                )
            if not result.ok:
                raise RemoteError(
                    f"on {self.remote.description}: {name} failed (exit {result.exit_code}): "
                    + (result.stderr.strip() or out.strip())[-500:]
                )
            return service_of(self.component).detail(out, started=start)

        def undo() -> None:
            if self.restore_failed:
                raise RemoteError("the script on the target could not put the previous binary back")
            if self.restored or self.on_target:  # seed: one undo covers both scripts
                return
            with self.progress(
                "the undo still running on the target (it waits for the "
                "service script, then stops, puts back and starts)"
            ):
                out = self.run_again_if_dropped(
                    self.restore_command(), timeout=2 * self.component.stop_timeout + 120
                )
            words = out.split()
            self.on_target = next(
                (w for w in words if w in ("not-ours", "untouched", "kept", "restored")), "?"
            )
            if self.on_target == "untouched":
                self.touched = False
            if self.on_target == "restored":
                self.was_running = "up=1" in words
                if self.was_running:
                    self.wait_for_restored()
                self.restored = True

        return Step(
            name,
            [probes.probe_stat(self.component.log_path).command, command] if start else [command],
            run,
            Undo([restore], self.guard_restore(undo), restores_service=True),
            summary=_SERVICE_SUMMARY[(stop, start)],
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

    def restore_command(self) -> str:
        return layout.restore_command(
            self.paths,
            self.component,
            self.ssh_user,
            token=self.token,
            names=self.service_names,
            wait_seconds=self.component.stop_timeout + 60,
        )

    def guard_restore(self, undo: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                undo()
            except Exception:
                self.restore_failed = True
                raise

        return run

    def wait_for_restored(self) -> None:
        """After a restore: the previous binary must run; its health is reported as it is."""
        try:
            before = [r.commit for r in self.facts.releases if r.sha256 == self.facts.current]
            self.restored_health = self.wait_until_up(expect=before[-1] if before else None)
        except DeployFailed as error:
            if self.service_alive():
                self.restored_unhealthy = _first_line(error)
                return
            raise

    # -- health
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
        result = self.session.run(
            self.state_command(health=True),
            check=False,
            timeout=probe.timeout if probe is not None else 30.0,
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
        words = self.run(self.state_command()).split()
        state = words[0] if words else "down"
        return state, [int(w.partition(":")[0]) for w in words[1:] if w.partition(":")[0].isdigit()]

    def service_alive(self) -> bool:
        return self.service_state()[0] in ("up", "starting")

    def health_probe(self) -> probes.Probe[probes.Health] | None:
        url = self.component.health
        if not url:
            return None
        try:
            return probes.probe_health(url, timeout=5.0)
        except ValueError as error:
            raise ConfigError(f"components.{self.component.name}.health", str(error)) from None

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
            time.sleep(HEALTH_INTERVAL if settled_from is None else SETTLE_INTERVAL)

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
        healthy = layout.healthy_command(self.paths, self.token)
        commands = [self.state_command(health=True)]

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
                self.run(healthy)
            return detail

        return Step(
            "health",
            [*commands, healthy],
            run,
            summary=f"{self.component.health or 'the process runs'}: first-ready, "
            f"every {HEALTH_INTERVAL}s up to {self.component.health_timeout:g}s, then "
            f"{self.component.health_settle:g}s settle",
        )

    def finish_step(self) -> Step:
        results = ("ok", "unchanged")
        commands = {result: self.finish_command(result) for result in results}

        def run() -> str:
            result = "unchanged" if self.unchanged else "ok"
            out = self.run(self.finish_command(result))
            if "lock not ours" in out:
                raise OperationFailed(
                    f"{self.component.name}: the lock {self.paths.lock} is no longer this "
                    "deploy's (removed by hand, or taken over by `--recover`): nothing recorded",
                    hint=f"`gbdeploy status {self.component.name}` shows what runs",
                )
            if "keep-failed" in out:
                why = out.split("keep-failed", 1)[1].strip()
                self.reporter.say(
                    f"  warning: could not keep the release in {self.paths.releases}: {why}"
                )
                return "deploy log written, lock released; the release was NOT kept"
            if self.release is not None:
                return "deploy log written, lock released"
            return "release kept, deploy log written, lock released"

        return Step(
            "finish",
            [commands["unchanged" if self.unchanged else "ok"]],
            run,
            summary="keep the release, append the deploy log, end the journal, unlock",
        )

    # -- logs
    def log_size(self) -> int:
        found = probes.probe_stat(self.component.log_path).run(self.session)
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

    # -- the outcome
    def outcome(self, undone: engine.Undone) -> GbdeployError:
        error = undone.error
        interrupted = isinstance(error, KeyboardInterrupt)
        cause = "interrupted" if interrupted else _message(error)
        again = "run it again when ready" if interrupted else "fix the cause above and run it again"
        name, paths = self.component.name, self.paths
        if self.restore_failed or undone.problems:
            return RestoreFailed(
                f"{self.action} of {name} failed ({cause}) and the previous state could NOT be "
                f"restored: {'; '.join(undone.problems) or 'see above'}.\n  State now: "
                + self.describe_state(),
                hint=f"a person must act: put a good binary at {paths.binary} (the previous one, "
                f"if intact, is {paths.prev}; kept releases are in {paths.releases}), start it, "
                f"then check with `gbdeploy status {name}`",
            )
        what = f"{self.action} of {name}"
        if self.release is not None:
            what += f" to release {self.release.commit or 'unknown'} ({self.release.sha256[:12]})"
        if self.on_target == "kept":
            return DeployFailed(
                f"{what} was interrupted ({cause}) after the new binary had passed health and "
                f"settled on the target: it runs and was kept, nothing was undone",
                hint=f"`gbdeploy status {name}` shows what runs",
            )
        if self.on_target == "not-ours":
            return DeployFailed(
                f"{what} was interrupted ({cause}); the target no longer holds its lock: it had "
                "finished there (or `--recover` took it over), so nothing was undone",
                hint=f"`gbdeploy status {name}` and `gbdeploy history {name}` show what runs",
            )
        if not self.touched:
            if isinstance(error, GbdeployError) and not isinstance(error, OperationFailed):
                return error
            if isinstance(error, GbdeployError) and (
                not self.facts.acquired or self.facts.released
            ):
                return error  # the lock was not ours: held by another, or could not be taken
            return DeployFailed(
                f"{self.action} of {name} failed before the service was touched ({cause}); "
                f"the running service and {paths.binary} are unchanged",
                hint=getattr(error, "hint", None) or again,
            )
        had = self.facts.current is not None
        if not had:
            back = f"there was no binary before, so the new one was removed from {paths.binary}"
        elif self.restored_unhealthy:
            back = (
                f"the binary that ran before ({(self.facts.current or '')[:12]}) is back and "
                f"running, but its health URL does not answer either ({self.restored_unhealthy})"
                f" — check `components.{name}.health`"
            )
        elif self.was_running:
            back = f"the binary that ran before ({(self.facts.current or '')[:12]}) runs again" + (
                f" and is healthy ({self.restored_health})" if self.restored_health else ""
            )
        else:
            back = "the previous binary is back (it was not running before, so it was not started)"
        return DeployFailed(
            f"{what} failed ({cause}); rolled back: {back}",
            hint=getattr(error, "hint", None) or again,
        )

    def describe_state(self) -> str:
        """What is on the target right now, as far as we can still tell."""
        parts = []
        try:
            for label, path in (("binary", self.paths.binary), ("previous", self.paths.prev)):
                sha = probes.probe_sha256(path).run(self.session)
                parts.append(f"{label} {path}: " + (f"sha256 {sha[:12]}" if sha else "MISSING"))
            procs = probes.probe_processes(self.component.binary).run(self.session)
            parts.append(
                "running: " + (", ".join(f"pid {p.pid} ({p.user})" for p in procs) or "NOTHING")
            )
        except GbdeployError as error:
            parts.append(f"(could not inspect the target: {_first_line(error)})")
        return "; ".join(parts)

    def execute(self, steps: list[Step]) -> None:
        try:
            engine.execute(
                steps,
                self.reporter,
                interrupts=lambda: engine.interrupts_abort(self.cut),
                before_undo=self.reconnect,
                cause=_first_line,
            )
        except engine.Undone as undone:
            raise self.outcome(undone) from None


_FAILED_RESULTS = ("failed, nothing changed", "failed, rolled back", "failed, restore failed")

_SERVICE_SUMMARY = {
    (True, True): "keep B.prev → stop (exact path) → swap → chown → start, in one script",
    (True, False): "keep B.prev → stop (exact path), in one script",
    (False, True): "swap → chown → start, in one script",
}


# --- entry points
def check_artifact(local: Path) -> Callable[[str], None]:
    """The artifact's local checks (exit 2 when it is no ELF executable); returns the check of
    the target's `uname -m` against its machine type."""
    info = artifact.check(local)
    return lambda uname_m: info.require_machine(uname_m, "the target")


def deployment_steps(
    run: Deployment, local: Path, *, machine_of: Callable[[str], None] | None
) -> list[Step]:
    """Every step of a deploy, in order, for the strategy."""
    begin = run.begin_step(upload=True, machine_of=machine_of)
    upload = _unless_unchanged(run, run.upload_step(local))
    health, finish = run.health_step(), run.finish_step()
    if run.strategy == "seed":
        stop = _unless_unchanged(run, run.service_step("stop", start=False))
        start = _unless_unchanged(run, run.service_step("start", stop=False))
        return [begin, stop, upload, start, health, finish]
    service = _unless_unchanged(run, run.service_step("restart"))
    return [begin, upload, service, health, finish]


def _unless_unchanged(run: Deployment, step: Step) -> Step:
    inner = step.run

    def run_step() -> str | None:
        return "skipped (unchanged)" if run.unchanged else inner()

    step.run = run_step
    return step


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
    recover: bool = False,
    verbose: bool = False,
    clock: Callable[[], float] = time.time,
    token: str | None = None,
    before_change: Callable[[Deployment], None] | None = None,
) -> list[Step]:
    """Deploy `artifact` as `component`'s binary on its target (see the module docstring).
    Returns the steps (what ran, or with --dry-run what would run)."""
    comp = settings.component(component)
    if recover:
        return run_rollback(
            settings,
            component,
            reporter,
            dry_run=dry_run,
            recover=True,
            force=force,
            before_change=before_change,
        )
    if commit is not None and not COMMIT.match(commit):
        raise UsageError(
            f"--commit {commit!r} is not a commit: letters, digits, `.`, `_`, `+` and `-` only "
            "(no spaces or newlines), at most 100",
            hint="pass the commit the binary was built from, e.g. `--commit $(git rev-parse HEAD)`",
        )
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    local = find_artifact(settings, comp, artifact)
    run = Deployment(
        settings,
        comp,
        reporter,
        action="deploy",
        commit=commit,
        strategy=strategy,
        clock=clock,
        token=token,
    )
    run.before_change = before_change
    if dry_run:
        if local.is_file():
            run.sha256, run.size = file_sha256(local), local.stat().st_size
        else:
            run.sha256 = "0" * 64
        steps = deployment_steps(run, local, machine_of=None)
        full = verbose or reporter.verbose
        reporter.plan(
            f"deploy {comp.name}: {local} ({_describe_local(local, run)}) to {comp.binary} on "
            f"{run.remote.description}, strategy {strategy}, restart {service_of(comp).describe()}"
            + (
                f"; every command runs as `{run.remote.wrap('COMMAND')}`"
                if run.target.container
                else ""
            ),
            engine.plan_lines(steps, verbose=full),
        )
        if not full:
            reporter.say("(each step in one line: -v prints every remote script in full)")
        return steps
    run.refuse_a_foreign_ssh_user()
    machine_of = check_artifact(local)
    run.size = local.stat().st_size
    # The artifact is hashed in the background (the CLI started it before loading this module)
    # while the connection opens and the session's far end starts (and, when the upload needs
    # its own channel, that channel's receiver, which waits for the lock).
    prefetch_fingerprint(local)
    try:
        run.session.open()
        run.prepare_upload(local)
        run.fingerprint = fingerprint(local)
    except GbdeployError:
        run.close()
        raise
    run.sha256 = run.fingerprint.sha256
    reporter.info(
        f"deploy {comp.name}: {local} ({_describe_local(local, run)}) → "
        f"{comp.binary} on {run.remote.description} (strategy {strategy})"
    )
    steps = deployment_steps(run, local, machine_of=machine_of)
    if force:
        steps[0] = _forced(run, steps[0])
    try:
        run.execute(steps)
    finally:
        run.close()
    reporter.summary()
    built = run.commit or f"sha256 {(run.sha256 or '?')[:12]}"
    done = "unchanged (it was there already)" if run.unchanged else "deployed"
    reporter.say(f"{comp.name} {built} {done} on {run.remote.description}, healthy")
    return steps


def _forced(run: Deployment, begin: Step) -> Step:
    inner = begin.run

    def run_step() -> str | None:
        detail = inner()
        if run.unchanged:
            run.unchanged = False
            return f"{run.paths.lock}; target has this binary, redeploying (--force)"
        return detail

    begin.run = run_step
    return begin


def choose_release(facts: Facts, to: str | None) -> Release:
    """The release a rollback puts back: the one with commit (or sha256) `to`, older or newer
    than the running one, else the newest kept before the current binary in deploy order."""
    releases = facts.releases
    if to:
        wanted = to.lower()
        for release in reversed(releases):
            if (release.commit or "").lower().startswith(wanted) or (
                len(wanted) >= 7 and release.sha256.startswith(wanted)
            ):
                return release
        kept = ", ".join(f"{r.commit or 'unknown'} ({r.sha256[:12]})" for r in releases)
        raise PreflightError(
            f"no kept release with commit {to} (kept: {kept or 'none'}); nothing was changed",
            hint="`gbdeploy history COMPONENT` lists the deploys",
        )
    shas = [r.sha256 for r in releases]
    below = releases[: shas.index(facts.current)] if facts.current in shas else releases
    candidates = [r for r in below if r.sha256 != facts.current]
    if not candidates:
        raise PreflightError(
            "no healthy release kept on the target from before the running one; nothing was "
            "changed",
            hint="each deploy keeps the binaries that passed health (`gbdeploy history` lists "
            "them); `rollback --to COMMIT` names one, or deploy a known-good build",
        )
    return candidates[-1]


def _running_release(facts: Facts) -> str:
    if facts.current is None:
        return "no binary"
    known = [r.commit for r in facts.releases if r.sha256 == facts.current and r.commit]
    return f"commit {known[-1] if known else 'unknown'} (sha256 {facts.current[:12]})"


def _holder_alive(holder: dict[str, object] | None) -> int | None:
    """The pid of the deploy holding the lock when it runs on this machine and is alive."""
    if not holder or str(holder.get("holder", "")).rpartition("@")[2] != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def run_rollback(
    settings: Settings,
    component: str,
    reporter: Reporter,
    *,
    dry_run: bool = False,
    to: str | None = None,
    recover: bool = False,
    before_change: Callable[[Deployment], None] | None = None,
    force: bool = False,
    confirm_change: Callable[[str], None] | None = None,
) -> list[Step]:
    """Put a kept release back (the previous healthy one, or the one with commit `to`), restart
    it and check health; undone on failure. `recover`: first take over the lock of a deploy that
    was killed (never one whose deploy still runs here, unless `force`; a service script it left
    running on the target is waited for), and put the last healthy release back.
    `confirm_change` is given the change ("roll back botserver from 9f116bd to 17c42e4 on …")
    once it is known, before anything is changed, and may stop it by raising."""
    comp = settings.component(component)
    run = Deployment(settings, comp, reporter, action="rollback", commit=None, strategy="rollback")
    run.before_change = before_change
    run.refuse_a_foreign_ssh_user()
    try:
        facts = parse_facts(run.run(inspect_command(run.paths)))
        if recover:
            alive = _holder_alive(facts.holder)
            if alive and not force:
                run.facts = facts
                held = run.lock_held()
                raise LockHeld(
                    f"{held.message}\n  the deploy holding it still runs on this machine (pid "
                    f"{alive}): --recover does not take over a live deploy's lock",
                    hint=f"wait for it, or stop it (`kill {alive}`); `--recover --force` takes "
                    "over anyway",
                )
            run.force = force
            if facts.holder:
                run.steal = str(facts.holder.get("token", "")) or None
            if facts.held_age is not None and not run.steal:
                run.steal = layout.HOLDERLESS
            if facts.held_age is None and not facts.journal and run.service_alive():
                reporter.say(
                    f"recover {comp.name}: nothing to recover (no lock, no interrupted deploy); "
                    f"{_running_release(facts)} runs, left as it is"
                )
                return []
            release = facts.releases[-1] if facts.releases else None
            if release is None:
                if run.steal and not dry_run:
                    if "live-session" in run.run(
                        layout.steal_command(run.paths, run.steal, force=force)
                    ):
                        run.facts = facts
                        raise LockHeld(
                            f"{run.lock_held().message}\n  the deploy holding it is still "
                            "connected to the target: --recover does not take it over",
                            hint="wait for it to finish, or `--recover --force`",
                        )
                    reporter.say(f"recover {comp.name}: the stale lock {run.paths.lock} removed")
                raise PreflightError(
                    f"{comp.name}: no healthy release is kept on the target to recover to"
                    + ("; the stale lock was removed" if run.steal else ""),
                    hint=f"deploy a known-good build: `gbdeploy deploy {comp.name} --force`",
                )
            found = describe_journal(facts.journal) if facts.journal else "no interrupted deploy"
            reporter.say(f"recover {comp.name}: found {found}")
        else:
            release = choose_release(facts, to)
        run.release, run.sha256, run.commit = release, release.sha256, release.commit
        steps = [
            run.begin_step(upload=False, machine_of=None),
            run.service_step("restart", source=run.paths.release(release.sha256)),
            run.health_step(),
            run.finish_step(),
        ]
        title = (
            f"{'recover' if recover else 'rollback'} {comp.name} from {_running_release(facts)} "
            f"to release {release.commit or 'unknown'} (sha256 {release.sha256[:12]}) on "
            f"{run.remote.description}"
        )
        if dry_run:
            reporter.plan(title, engine.plan_lines(steps, verbose=reporter.verbose))
            if not reporter.verbose:
                reporter.say("(each step in one line: -v prints every remote script in full)")
            return steps
        if confirm_change is not None:
            confirm_change(
                f"{'recover' if recover else 'roll back'} {comp.name} from "
                f"{_release_name(facts.current, facts.releases)} to "
                f"{_release_name(release.sha256, facts.releases)} on {run.remote.description}"
            )
        reporter.info(title)
        run.execute(steps)
    finally:
        run.close()
    reporter.summary()
    reporter.say(
        f"{comp.name} {_release_name(release.sha256, [release])} runs again on "
        f"{run.remote.description}, healthy"
    )
    reporter.say(_verify_hint(comp.name, release))
    return steps


def _verify_hint(name: str, release: Release) -> str:
    """`verify` alone expects the submodule's HEAD, which a rollback just took off the target."""
    if release.commit:
        return f"check it with: gbdeploy verify {name} --commit {release.commit}"
    return f"check it with: gbdeploy status {name} (this release recorded no commit to verify)"


def inspect_command(paths: Paths) -> str:
    """Read-only: the lock, the journal, the kept releases and the current binary's sha256."""
    return "\n".join(
        [
            layout.prelude(paths),
            '[ -e "$L" ] && held',
            "journal",
            layout.releases_lines(),
            'if [ -f "$B" ] && [ -f "$S" ] && [ "$(cut -d" " -f2- "$S")" = "$(stat_of "$B")" ];'
            ' then echo "current $(cut -d" " -f1 "$S")"',
            'elif [ -f "$B" ]; then echo "current $(sha_of "$B")"; else echo "current none"; fi',
        ]
    )


# --- helpers
def _release_name(sha256: str | None, releases: list[Release]) -> str:
    """A binary as a person knows it: its commit when a kept release records one."""
    if not sha256:
        return "nothing (no binary)"
    commit = next((r.commit for r in releases if r.sha256 == sha256 and r.commit), None)
    return commit[:12] if commit else f"sha256 {sha256[:12]}"


def _describe_local(local: Path, run: Deployment) -> str:
    if not local.is_file():
        return "not built yet"
    return f"{human_bytes(local.stat().st_size)}, sha256 {(run.sha256 or '?')[:12]}"


class _StepProgress(transfer.TerminalProgress):
    """The upload's progress, drawn over its step's header `→ upload … ` on a terminal."""

    def line(self, done: int, total: int, elapsed: float) -> str:
        rate = done / elapsed if elapsed > 0 else 0.0
        return (
            f"→ {self.label} … {human_bytes(done)} / {human_bytes(total)} ({human_bytes(rate)}/s) "
        )


def close_quietly(remote: Remote) -> None:
    """Close, ignoring what a dead or interrupted connection raises while closing."""
    with suppress(OSError, EOFError, paramiko.SSHException):
        remote.close()
    with suppress(OSError, EOFError, paramiko.SSHException):
        remote.connection.client.close()


def _transport_active(remote: Remote) -> bool:
    transport = remote.connection.transport
    return bool(transport is not None and transport.is_active())


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return str(text).strip().splitlines()[0] if str(text).strip() else type(error).__name__


def _message(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return str(text).strip()


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a CI container without a passwd entry for its uid
        return f"uid{os.getuid()}"
