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

import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path

import paramiko

from .. import freeze, provenance
from ..artifact import (
    Fingerprint,
)
from ..config import Component, Settings
from ..errors import (
    DeployFailed,
    GbdeployError,
    LockHeld,
    OperationFailed,
    PreflightError,
    RemoteError,
    UsageError,
)
from ..output import Reporter, StepProgress, human_bytes
from ..remote import far_end, transfer
from ..remote.connection import CommandResult, Remote, quote
from ..remote.session import Session, put_line
from . import engine, layout
from .engine import Command, Step, Undo
from .health import ServiceChecks
from .layout import Paths
from .outcome import lock_held, outcome
from .service import service_of
from .state import (
    Facts,
    KeptRelease,
    describe_journal,
    parse_facts,
)
from .words import first_line, local_user


# --- the deployment
class Deployment(ServiceChecks):
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
        reporter.more_shared = [layout.prelude(self.paths, steps=False), far_end.probes()]
        self.token = token or secrets.token_hex(8)
        self.who = f"{local_user()}@{socket.gethostname()}"
        now = clock()
        self.started_epoch = int(now)
        self.started_at = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")
        self.sha256: str | None = None
        self.size = 0
        self.fingerprint: Fingerprint | None = None  # of the artifact, as hashed here
        self.pending_upload: transfer.PendingUpload | None = None
        self.compressed: bool | None = None  # the upload goes through zstd (see compresses)
        self.facts = Facts()
        self.unchanged = False  # the target has this binary: the steps that change it are skipped
        self.redeploy = False  # deploy --force: change it even so
        self.touched = False  # the service script began: a failure now needs a restore
        self.was_running = False
        self.restore_failed = False
        self.restored = False
        self.restored_health = ""
        self.restored_unhealthy = ""
        self.release: KeptRelease | None = None  # rollback: the release put back
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
        # The commands its steps and undos send, each one object from plan to run (see `send`);
        # the text is rendered as it is sent, from the state then.
        self.sent: list[Command] = []
        self.unlock = Command("unlock", self.unlock_command)
        self.finish = Command("finish", lambda: self.finish_command(self.finish_result()))
        self.finish_after_failure = Command(
            "finish after failure", lambda: self.finish_command(self.result_after_failure())
        )
        self.restore = Command("restore", self.restore_command)
        self.health_check = Command("check", lambda: self.state_command(health=True))
        self.state_check = Command("state", self.state_command)
        self.log_stat = Command("log size", lambda: self.log_probe().command)

    # -- connection
    @property
    def ssh_user(self) -> str:
        return self.remote.user

    def run(self, command: str, *, timeout: float = 120.0, check: bool = True) -> str:
        return self.session.run(command, timeout=timeout, check=check).stdout

    def send(self, command: Command, *, timeout: float = 120.0, check: bool = True) -> str:
        """The output of one of the plan's commands, sent (recorded in `sent`: what runs is the
        plan's own objects)."""
        self.sent.append(command)
        return self.run(command.text, timeout=timeout, check=check)

    def exchange(self, command: Command, *, timeout: float = 120.0) -> CommandResult:
        """`send` with the whole result (exit code, stderr), never raised on."""
        self.sent.append(command)
        return self.session.run(command.text, timeout=timeout, check=False)

    def drop_connection(self, error: BaseException | None = None) -> None:
        """Close the session and the connection (either may be dropped or cut mid-exchange): the
        next exchange opens fresh ones."""
        self.cancel_upload()
        self.session.close()
        self.remote.close_quietly()

    def close(self) -> None:
        self.drop_connection()

    def compresses(self, local: Path) -> bool:
        """Whether the artifact goes through zstd: decided once (it may sample the artifact), and
        the plan, the upload's channel and the session's upload all follow that decision."""
        if self.compressed is None:
            self.compressed = transfer.choose_method(self.remote, local, None) == transfer.ZSTD
        return self.compressed

    def upload_through_session(self, local: Path) -> bool:
        """The session's helper takes the file (no second channel), unless the bytes are to be
        compressed or the target has no python3."""
        return not self.compresses(local) and self.session.streams_files()

    def prepare_upload(self, local: Path) -> None:
        """When the upload needs its own channel, open it now: its receiver waits for the word
        (see `transfer.start_upload`), so the target's shell starts while the lock is taken."""
        if not self.upload_through_session(local):
            self.pending_upload = transfer.start_upload(
                self.remote, local, self.paths.new, compress=self.compresses(local)
            )

    def cancel_upload(self) -> None:
        pending, self.pending_upload = self.pending_upload, None
        if pending is not None:
            pending.cancel()

    def cut(self) -> None:
        self.remote.cut()

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
        command = Command("begin", lambda: self.begin_command(upload=upload))

        def run() -> str:
            self.facts = parse_facts(self.send(command))
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
                    self.send(self.unlock)
                    self.facts.released = True  # given back with its journal: nothing to record
                    raise
            if self.before_change is not None:
                self.before_change(self)
            same = upload and self.sha256 is not None and facts.current == self.sha256
            self.unchanged = same and not self.redeploy
            if self.commit is None:  # the same binary keeps the commit it is known by
                known = [r.commit for r in facts.releases if r.sha256 == self.sha256 and r.commit]
                self.commit = known[-1] if known else None
            if self.unchanged:
                return "unchanged, nothing to do (the target has this binary); checking health"
            if same:
                return f"{self.paths.lock}; target has this binary, redeploying (--force)"
            if facts.current is None:
                return f"{self.paths.lock}; no binary on the target yet"
            return f"{self.paths.lock}; target has {facts.current[:12]}"

        # The undo: record the result and unlock when the lock is ours; else the unlock (which
        # removes only a lock holding this deploy's token).
        return Step(
            "lock",
            [command],
            run,
            Undo(
                [self.finish_after_failure, self.unlock],
                self.unlock_after_failure,
                shown=lambda: self.facts.acquired,
            ),
            summary=f"take {self.paths.lock} (atomic), journal, preflight, compare sha256",
        )

    def unlock_command(self) -> str:
        return (
            f"grep -q -F -e {quote(self.token)} -- {quote(self.paths.holder)} && "
            f"rm -f -- {quote(self.paths.journal)} && rm -rf -- {quote(self.paths.lock)}"
        )

    def lock_held(self) -> LockHeld:
        return lock_held(self)

    def unlock_after_failure(self) -> None:
        if not self.facts.acquired or self.facts.released:  # not held, or given back already
            with suppress(GbdeployError):
                self.run_again_if_dropped(self.unlock, check=False)
            return
        try:
            self.run_again_if_dropped(self.finish_after_failure)
        except GbdeployError as error:
            removal = quote(self.remote.wrap(layout.remove_lock_command(self.paths)))
            self.reporter.say(
                f"  warning: could not record the result and remove the lock {self.paths.lock}: "
                f"{first_line(error)}\n  remove it by hand once no deploy runs: "
                f"ssh {self.target.ssh} {removal}"
            )

    def result_after_failure(self) -> str:
        if self.on_target == "kept":
            return "ok"
        if not self.touched:
            return _FAILED_RESULTS[0]
        return _FAILED_RESULTS[2] if self.restore_failed else _FAILED_RESULTS[1]

    def run_again_if_dropped(
        self, command: Command | str, *, timeout: float = 120.0, check: bool = True
    ) -> str:
        if isinstance(command, str):
            command = Command.fixed(command)
        try:
            return self.send(command, timeout=timeout, check=check)
        except RemoteError:
            if self.remote.alive:
                raise
            self.drop_connection()
            return self.send(command, timeout=timeout, check=check)

    def finish_result(self) -> str:
        return "unchanged" if self.unchanged else "ok"

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
        hash_command = Command.fixed(f'{layout.prelude(self.paths)}\nsha_of "$N"', "hash B.new")
        uploaded = Command.fixed(f"{layout.prelude(self.paths)}\nphase uploaded", "uploaded")

        def upload() -> str:
            progress = StepProgress("upload", self.reporter.stream, end_line=False)
            pending, self.pending_upload = self.pending_upload, None
            try:
                if pending is None and self.upload_through_session(local):
                    result = transfer.upload_through(
                        self.session, local, new, progress=progress, known=self.fingerprint
                    )
                else:
                    if pending is None:
                        pending = transfer.start_upload(
                            self.remote, local, new, compress=self.compresses(local)
                        )
                    result = pending.send(progress=progress, known=self.fingerprint)
            except (GbdeployError, OSError, EOFError, paramiko.SSHException) as error:
                dropped = not self.remote.alive
                why = "the connection dropped" if dropped else (str(error) or type(error).__name__)
                raise RemoteError(
                    f"upload of {local} to {self.remote.description}:{new} failed: {why}",
                    hint=f"check the connection, and that {self.paths.directory} on the target "
                    f"is writable and has room for {human_bytes(self.size)} "
                    f"(`df -h {quote(self.paths.directory)}`), then deploy again",
                ) from None
            got = result.remote_sha256
            if got is None:  # the target could not hash while writing: one more pass there
                got = self.send(hash_command, timeout=300).strip()
            if got != self.sha256:
                raise DeployFailed(
                    f"the upload at {new} has sha256 {got or 'none'}, the artifact has "
                    f"{self.sha256}: the copy is damaged"
                )
            if not self.touched:
                self.send(uploaded)
            rate = result.size / result.seconds if result.seconds > 0 else 0.0
            return (
                f"{human_bytes(result.size)} in {result.seconds:.1f}s ({human_bytes(rate)}/s, "
                f"{human_bytes(result.bytes_sent)} on the wire, {result.method}), "
                f"sha256 {got[:12]} matches"
            )

        remove = Command.fixed(layout.remove_new_command(self.paths), "remove B.new")
        decided = self.compresses(local) if local.is_file() else None
        channel = transfer.upload_plan(local, new, compress=decided, remote=self.remote)
        if decided is False:
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
        sha256 = self.sha256
        command = Command(
            name,
            lambda: layout.service_command(
                self.paths,
                self.component,
                self.ssh_user,
                sha256=sha256,
                token=self.token,
                name=name,
                source=source,
                stop=stop,
                start=start,
            ),
        )
        command.render()  # a config mistake in it (run_as, env) is refused as the step is built
        self.service_names.append(name)

        def run() -> str:
            self.touched = True
            if start:
                self.log_offset = self.log_size()
            note = (
                f"{name} still running on the target (a stop waits up to "
                f"{self.component.stop_timeout:g}s for SIGTERM before SIGKILL)"
            )
            with self.progress(note):
                result = self.exchange(command, timeout=self.component.stop_timeout + 60)
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
                    self.restore, timeout=2 * self.component.stop_timeout + 120
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

        # The undo waits for the restored binary as the health step does (its checks).
        restored = [self.restore, self.health_check, self.state_check]
        return Step(
            name,
            [self.log_stat, command] if start else [command],
            run,
            Undo(restored, self.guard_restore(undo), restores_service=True),
            summary=_SERVICE_SUMMARY[(stop, start)],
        )

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
                self.restored_unhealthy = first_line(error)
                return
            raise

    # -- health
    def finish_step(self) -> Step:
        def run() -> str:
            out = self.send(self.finish)
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
            [self.finish],
            run,
            summary="keep the release, append the deploy log, end the journal, unlock",
        )

    def outcome(self, undone: engine.Undone) -> GbdeployError:
        return outcome(self, undone)

    def execute(self, steps: list[Step]) -> None:
        try:
            engine.execute(
                steps,
                self.reporter,
                interrupts=lambda: engine.interrupts_abort(self.cut),
                before_undo=self.drop_connection,
                cause=first_line,
            )
        except engine.Undone as undone:
            raise self.outcome(undone) from None


_FAILED_RESULTS = ("failed, nothing changed", "failed, rolled back", "failed, restore failed")

_SERVICE_SUMMARY = {
    (True, True): "keep B.prev → stop (exact path) → swap → chown → start, in one script",
    (True, False): "keep B.prev → stop (exact path), in one script",
    (False, True): "swap → chown → start, in one script",
}
