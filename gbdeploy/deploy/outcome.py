"""How a deploy, rollback or recovery that failed is told: functions of its `Deployment`'s
state (what it touched, what the undo restored, what the target said)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DeployFailed, GbdeployError, LockHeld, OperationFailed, RestoreFailed
from ..remote import probes
from ..remote.connection import quote
from . import engine, layout
from .state import describe_journal
from .words import first_line, message

if TYPE_CHECKING:
    from .deployment import Deployment


def outcome(deployment: Deployment, undone: engine.Undone) -> GbdeployError:
    """The error a failed deploy, rollback or recovery ends with: what failed, and what the
    target was left with (untouched, rolled back, kept, taken over, or a person must act)."""
    error = undone.error
    interrupted = isinstance(error, KeyboardInterrupt)
    cause = "interrupted" if interrupted else message(error)
    again = "run it again when ready" if interrupted else "fix the cause above and run it again"
    name, paths = deployment.component.name, deployment.paths
    if deployment.restore_failed or undone.problems:
        return RestoreFailed(
            f"{deployment.action} of {name} failed ({cause}) and the previous state could NOT be "
            f"restored: {'; '.join(undone.problems) or 'see above'}.\n  State now: "
            + describe_state(deployment),
            hint=f"a person must act: put a good binary at {paths.binary} (the previous one, "
            f"if intact, is {paths.prev}; kept releases are in {paths.releases}), start it, "
            f"then check with `gbdeploy status {name}`",
        )
    what = f"{deployment.action} of {name}"
    if deployment.release is not None:
        release = deployment.release
        what += f" to release {release.commit or 'unknown'} ({release.sha256[:12]})"
    if deployment.on_target == "kept":
        return DeployFailed(
            f"{what} was interrupted ({cause}) after the new binary had passed health and "
            f"settled on the target: it runs and was kept, nothing was undone",
            hint=f"`gbdeploy status {name}` shows what runs",
        )
    if deployment.on_target == "not-ours":
        return DeployFailed(
            f"{what} was interrupted ({cause}); the target no longer holds its lock: it had "
            "finished there (or `--recover` took it over), so nothing was undone",
            hint=f"`gbdeploy status {name}` and `gbdeploy history {name}` show what runs",
        )
    if not deployment.touched:
        if isinstance(error, GbdeployError) and not isinstance(error, OperationFailed):
            return error
        if isinstance(error, GbdeployError) and (
            not deployment.facts.acquired or deployment.facts.released
        ):
            return error  # the lock was not ours: held by another, or could not be taken
        return DeployFailed(
            f"{deployment.action} of {name} failed before the service was touched ({cause}); "
            f"the running service and {paths.binary} are unchanged",
            hint=getattr(error, "hint", None) or again,
        )
    had = deployment.facts.current is not None
    if not had:
        back = f"there was no binary before, so the new one was removed from {paths.binary}"
    elif deployment.restored_unhealthy:
        back = (
            f"the binary that ran before ({(deployment.facts.current or '')[:12]}) is back and "
            f"running, but its health URL does not answer either ({deployment.restored_unhealthy})"
            f" — check `components.{name}.health`"
        )
    elif deployment.was_running:
        before = (deployment.facts.current or "")[:12]
        back = f"the binary that ran before ({before}) runs again" + (
            f" and is healthy ({deployment.restored_health})" if deployment.restored_health else ""
        )
    else:
        back = "the previous binary is back (it was not running before, so it was not started)"
    return DeployFailed(
        f"{what} failed ({cause}); rolled back: {back}",
        hint=getattr(error, "hint", None) or again,
    )


def describe_state(deployment: Deployment) -> str:
    """What is on the target right now, as far as we can still tell."""
    parts = []
    try:
        paths = deployment.paths
        for label, path in (("binary", paths.binary), ("previous", paths.prev)):
            sha = probes.probe_sha256(path).run(deployment.session)
            parts.append(f"{label} {path}: " + (f"sha256 {sha[:12]}" if sha else "MISSING"))
        procs = probes.probe_processes(deployment.component.binary).run(deployment.session)
        parts.append(
            "running: " + (", ".join(f"pid {p.pid} ({p.user})" for p in procs) or "NOTHING")
        )
    except GbdeployError as error:
        parts.append(f"(could not inspect the target: {first_line(error)})")
    return "; ".join(parts)


def lock_held(deployment: Deployment) -> LockHeld:
    """The refusal when another deploy holds the lock: who, since when, what it was doing."""
    facts, name = deployment.facts, deployment.component.name
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
    remove = quote(deployment.remote.wrap(layout.remove_lock_command(deployment.paths)))
    removal = f"ssh {deployment.target.ssh} {remove}"
    return LockHeld(
        f"{name}: another deploy holds the lock {deployment.paths.lock} on "
        f"{deployment.remote.description}: {who}"
        + (f"\n  its journal: {interrupted}" if interrupted else "")
        + "\n  nothing was changed",
        hint="wait for it to finish; if it no longer runs (it was killed), recover with "
        f"`gbdeploy deploy {name} --recover` (puts the last healthy release back and runs "
        f"it), or only remove the lock: {removal}",
    )
