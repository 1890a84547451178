"""What a target has for one component, as the begin exchange (and `status`'s inspection) report
it: the lock and its holder, an interrupted deploy's journal, the kept releases, the current
binary; the scripts that print it are `layout.begin_command` and `inspect_command` below."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field

from .. import freeze
from ..errors import PreflightError
from . import layout
from .layout import Paths


# --- what the begin exchange found
@dataclass(frozen=True)
class KeptRelease:
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
    releases: list[KeptRelease] = field(default_factory=list)
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
            if (
                len(parts) == 3
                and layout.SHA256.fullmatch(parts[0])
                and layout.COMMIT.fullmatch(parts[1])
            ):
                commit = None if parts[1] == "unknown" else parts[1]
                facts.releases.append(KeptRelease(parts[0], commit, parts[2]))
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
    # strategy switch (deploy/switch.py): the old process serves until `switched`
    "placing": "a switch: it was putting the new binary in place beside the running one",
    "switching": "a switch: it was changing the Caddyfile on the proxy",
    "reloaded": "a switch: it had reloaded Caddy, not yet confirmed on the new port",
    "switched": "a switch: Caddy dials the new process; the old one was still to be stopped",
    "draining": "a switch: Caddy dials the new process; the old one was draining",
    "old-stopped": "a switch: the old process was stopped; only the end was missing",
    "recovered": "a recovery had made everything agree with the port Caddy dials",
}


def describe_journal(journal: list[dict[str, object]]) -> str:
    if not journal:
        return "no journal (an older gbdeploy, or it was killed while taking the lock)"
    first, last = journal[0], journal[-1]
    phase = str(last.get("phase", "?"))
    what = f"{first.get('action', 'deploy')} of commit {first.get('commit') or 'unknown'}"
    meaning = _PHASE_MEANING.get(phase, "unknown phase")
    return f"{what}, last phase `{phase}` at {last.get('time', '?')}: {meaning}"


def choose_release(facts: Facts, to: str | None) -> KeptRelease:
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


def running_release(facts: Facts) -> str:
    if facts.current is None:
        return "no binary"
    known = [r.commit for r in facts.releases if r.sha256 == facts.current and r.commit]
    return f"commit {known[-1] if known else 'unknown'} (sha256 {facts.current[:12]})"


def holder_alive(holder: dict[str, object] | None) -> int | None:
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


def inspect_command(paths: Paths) -> str:
    """Read-only: the lock, the journal, the kept releases and the current binary's sha256."""
    return f"{layout.prelude(paths)}\ninspect_target"


def release_name(sha256: str | None, releases: list[KeptRelease]) -> str:
    """A binary as a person knows it: its commit when a kept release records one."""
    if not sha256:
        return "nothing (no binary)"
    commit = next((r.commit for r in releases if r.sha256 == sha256 and r.commit), None)
    return commit[:12] if commit else f"sha256 {sha256[:12]}"
