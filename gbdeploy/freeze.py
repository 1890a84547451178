"""`lock COMPONENT (acquire -m MSG | release | status)`: freeze a component's deploys with a reason.

The freeze is a marker beside the binary, `B.frozen` (one JSON line: who, when, why), never the
deploy lock `B.lock` itself: a frozen component must not look like a deploy that was killed, which
`deploy --recover` would take over. Every operation that takes the deploy lock (deploy, rollback,
recover, start, stop, restart) reads the marker while holding that lock (see `check_lines`) and
stops with the marker's reason; `acquire` writes the marker while holding the deploy lock, so a
freeze and a deploy never both begin.
"""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timezone

from .config import Component, Settings
from .deploy import layout
from .deploy.layout import Paths
from .errors import LockHeld, RemoteError, UsageError
from .output import Reporter
from .remote.connection import Remote, quote

ACTIONS = ("acquire", "release", "status")
MESSAGE_LIMIT = 500


def marker(paths: Paths) -> str:
    return f"{paths.binary}.frozen"


def check_lines(paths: Paths) -> str:
    """Preflight lines (after `bad=0`): print `frozen RECORD` and fail while the marker exists."""
    return layout.call("check_frozen", marker(paths))


class Frozen(LockHeld):
    """A deploy (or start/stop/restart) refused because the component is frozen: exit 1."""


def describe(record: dict[str, object]) -> str:
    return (
        f"by {record.get('holder', '?')} since {record.get('time', '?')}: "
        f"{record.get('message') or '(no reason given)'}"
    )


def refusal(component: str, action: str, where: str, record: dict[str, object]) -> Frozen:
    return Frozen(
        f"{component}: deploys are frozen on {where} {describe(record)}\n"
        f"  the {action} was refused; nothing was changed",
        hint=f"when it is safe again, lift the freeze: `gbdeploy lock {component} release`",
    )


def parse_record(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"message": text.strip()}


# --- the remote scripts
def acquire_command(paths: Paths, record: str, token: str) -> str:
    """Take the deploy lock (as a deploy does: built aside, renamed into place), write the
    marker, give the lock back. Prints `frozen RECORD` (it was already), `held …` (a deploy runs),
    `lockfail WHY`, or `acquired`."""
    holder = json.dumps({**json.loads(record), "action": "lock acquire", "token": token})
    return "\n".join(
        [
            layout.prelude(paths),
            f"T={quote(paths.lock_tmp(token))}",
            layout.call("freeze_take", marker(paths), holder, record),
        ]
    )


def release_command(paths: Paths) -> str:
    """Remove the marker; prints `released RECORD`, or `none` when there was no freeze."""
    return f"{layout.prelude(paths)}\n{layout.call('freeze_lift', marker(paths))}"


def status_command(paths: Paths) -> str:
    """Prints `frozen RECORD` when frozen, and `held AGE` + `holder …` when a deploy holds the
    deploy lock."""
    return f"{layout.prelude(paths)}\n{layout.call('freeze_status', marker(paths))}"


# --- the command
@dataclass(frozen=True)
class Answer:
    frozen: dict[str, object] | None
    released: dict[str, object] | None
    acquired: bool
    held: bool
    holder: dict[str, object] | None
    lockfail: str | None


def parse(stdout: str) -> Answer:
    frozen = released = holder = None
    acquired = held = False
    lockfail = None
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word == "frozen":
            frozen = parse_record(rest)
        elif word == "released":
            released = parse_record(rest)
        elif word == "acquired":
            acquired = True
        elif word == "held":
            held = True
        elif word == "holder":
            holder = parse_record(rest)
        elif word == "lockfail":
            lockfail = rest.strip() or "unknown error"
    return Answer(frozen, released, acquired, held, holder, lockfail)


def freeze_record(message: str) -> str:
    from .deploy.words import local_user

    return json.dumps(
        {
            "holder": f"{local_user()}@{socket.gethostname()}",
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "message": message,
        },
        sort_keys=True,
    )


def check_message(action: str, message: str | None) -> str | None:
    if action not in ACTIONS:
        raise UsageError(
            f"lock: unknown action {action!r} (known: {', '.join(ACTIONS)})",
            hint="e.g. gbdeploy lock botserver acquire -m 'database migration until 14:00'",
        )
    if action != "acquire":
        if message:
            raise UsageError(f"lock {action}: -m/--message goes with `acquire` only")
        return None
    text = (message or "").strip()
    if not text:
        raise UsageError(
            "lock acquire needs a reason, shown to whoever deploys next",
            hint="gbdeploy lock COMPONENT acquire -m 'why, and until when'",
        )
    if len(text) > MESSAGE_LIMIT or any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UsageError(
            f"lock acquire: the reason must be one line of at most {MESSAGE_LIMIT} characters"
        )
    return text


def command_for(paths: Paths, action: str, message: str | None) -> str:
    if action == "acquire":
        token = secrets.token_hex(8)
        return acquire_command(paths, freeze_record(message or ""), token)
    if action == "release":
        return release_command(paths)
    return status_command(paths)


def run_lock(
    settings: Settings,
    reporter: Reporter,
    component: str,
    action: str,
    *,
    message: str | None = None,
    dry_run: bool = False,
) -> None:
    comp = settings.component(component)
    message = check_message(action, message)
    paths = Paths(comp.binary)
    command = command_for(paths, action, message)
    with Remote(settings.target_of(comp), settings.ssh) as remote:
        if dry_run:
            reporter.plan(
                f"lock {comp.name} {action} on {remote.description}",
                [remote.wrap(command)] if reporter.verbose else [command],
                brief=True,
            )
            return
        answer = parse(remote.run(command).stdout)
        reporter.say(_outcome(comp, action, answer, remote.description, paths))


def _outcome(comp: Component, action: str, answer: Answer, where: str, paths: Paths) -> str:
    name = comp.name
    if answer.lockfail:
        raise RemoteError(
            f"{name}: cannot freeze on {where}: {answer.lockfail}; nothing was changed",
            hint=f"check the disk and permissions of {paths.directory}",
        )
    if action == "acquire":
        if answer.acquired:
            return f"{name}: deploys frozen on {where}; lift with `gbdeploy lock {name} release`"
        if answer.frozen is not None:
            raise Frozen(
                f"{name}: already frozen on {where} {describe(answer.frozen)}; nothing was changed",
                hint=f"`gbdeploy lock {name} release` first to freeze with another reason",
            )
        holder = answer.holder or {}
        raise LockHeld(
            f"{name}: a {holder.get('action', 'deploy')} by {holder.get('holder', '?')} holds the "
            f"deploy lock {paths.lock} on {where}; nothing was changed",
            hint="wait for it to finish, then freeze",
        )
    if action == "release":
        if answer.released is None:
            return f"{name}: not frozen on {where}; nothing to release"
        return f"{name}: freeze lifted on {where} (was {describe(answer.released)})"
    lines = [
        f"{name}: frozen on {where} {describe(answer.frozen)}"
        if answer.frozen is not None
        else f"{name}: not frozen on {where}"
    ]
    if answer.held:
        holder = answer.holder or {}
        lines.append(
            f"  the deploy lock {paths.lock} is held: {holder.get('action', 'deploy')} by "
            f"{holder.get('holder', '?')} since {holder.get('time', '?')}"
        )
    return "\n".join(lines)
