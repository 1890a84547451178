"""Post-deploy verification: is the binary on the target the new one, and is it what runs?

Facts are gathered from the target in one pass (`gather`), then judged by pure functions
(`judge`), so every check is testable on its own and reports what it saw.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .config import Component, Settings
from .errors import NotBuilt, UsageError, VerificationFailed
from .output import Reporter

MIN_COMMIT_DIGITS = 7


@dataclass(frozen=True)
class TargetFacts:
    """What the target showed about a component's binary and service."""

    mtime: datetime | None  # None: no binary at the path
    owner: str | None
    contains_commit: bool
    processes: list[tuple[int, str]]  # (pid, user) of processes running exactly the binary
    health: dict[str, Any] | None  # the health URL's JSON, None when it did not answer
    health_error: str = ""


@dataclass(frozen=True)
class CheckResult:
    check: str
    ok: bool
    saw: str


def normalize_commit(commit: str) -> str:
    commit = commit.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        raise UsageError(
            f"expected commit {commit!r} is not {MIN_COMMIT_DIGITS} to 40 hex digits",
            hint="pass --commit with the submodule's `git rev-parse --short HEAD`",
        )
    return commit


def commits_match(expected: str, seen: str) -> bool:
    """The service reports a short SHA; match as a prefix of at least 7 hex digits either way."""
    seen = seen.strip().lower()
    if len(seen) < MIN_COMMIT_DIGITS or len(expected) < MIN_COMMIT_DIGITS:
        return False
    return expected.startswith(seen) or seen.startswith(expected)


def judge(
    component: Component, expected_commit: str, since: datetime | None, facts: TargetFacts
) -> list[CheckResult]:
    """Every check of DESIGN.md's post-deploy verification, in order."""
    results: list[CheckResult] = []
    if facts.mtime is None:
        results.append(CheckResult("binary", False, f"no file at {component.binary}"))
    elif since is not None:
        fresh = facts.mtime >= since
        saw = f"mtime {facts.mtime.isoformat(timespec='seconds')}"
        saw += " ≥ " if fresh else " older than the run's start "
        results.append(
            CheckResult(
                "binary newer than the run", fresh, saw + since.isoformat(timespec="seconds")
            )
        )
    marker = expected_commit[:MIN_COMMIT_DIGITS]
    results.append(
        CheckResult(
            "binary contains the commit",
            facts.contains_commit,
            f"{marker!r} {'found' if facts.contains_commit else 'not found'} in {component.binary}",
        )
    )
    results.append(
        CheckResult(
            "binary owner",
            facts.owner == component.user,
            f"owner {facts.owner or '?'} (want {component.user})",
        )
    )
    mine = [pid for pid, user in facts.processes if user == component.user]
    others = [f"{pid} as {user}" for pid, user in facts.processes if user != component.user]
    saw = f"pid {', '.join(map(str, mine))} as {component.user}" if mine else "no process"
    if others:
        saw += f"; also {', '.join(others)}"
    results.append(CheckResult("process runs the binary", bool(mine) and not others, saw))
    if component.health:
        results.append(_judge_health(component, expected_commit, facts))
    return results


def _judge_health(component: Component, expected_commit: str, facts: TargetFacts) -> CheckResult:
    name = "health reports the commit"
    if facts.health is None:
        return CheckResult(name, False, f"{component.health} did not answer: {facts.health_error}")
    status = str(facts.health.get("status", ""))
    commit = str(facts.health.get("commit", ""))
    ok = status == "ok" and commits_match(expected_commit, commit)
    return CheckResult(name, ok, f"status {status or '?'}, commit {commit or '?'}")


def verify_until(
    gather_facts: Callable[[], TargetFacts],
    component: Component,
    expected_commit: str,
    since: datetime | None,
    *,
    timeout: float,
    reporter: Reporter,
    interval: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[CheckResult]:
    """Gather and judge until every check passes or `timeout` passes (the service may still be
    starting); print the checks of the last attempt; raise VerificationFailed naming the first
    failed check."""
    deadline = clock() + timeout
    while True:
        results = judge(component, expected_commit, since, gather_facts())
        if all(r.ok for r in results) or clock() >= deadline:
            break
        sleep(interval)
    for r in results:
        reporter.say(f"  {'pass' if r.ok else 'FAIL'}  {r.check}: {r.saw}")
    failed = [r for r in results if not r.ok]
    if failed:
        first = failed[0]
        raise VerificationFailed(
            f"{component.name}: verification failed: {first.check}: {first.saw}",
            check=first.check,
            hint=_hint(first.check, component),
        )
    return results


def _hint(check: str, component: Component) -> str:
    return {
        "binary": "the deploy step never wrote the binary: read the CI run's deploy log",
        "binary newer than the run": "the run did not deploy: read its log (`gbdeploy runs`)",
        "binary contains the commit": "the run built other code: check the submodule pointer "
        "the run checked out, and that the build embeds BOTSERVER_COMMIT",
        "binary owner": f"`gbdeploy doctor --fix` chowns it to {component.user}",
        "process runs the binary": f"`gbdeploy status {component.name}`; `gbdeploy rollback "
        f"{component.name}` puts the previous binary back",
        "health reports the commit": f"read {component.log_path} on the target; "
        f"`gbdeploy rollback {component.name}` puts the previous binary back",
    }.get(check, "")


def parse_since(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r} is not an ISO time", hint="e.g. 2026-11-27T21:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def run_verify(
    settings: Settings,
    component: str,
    reporter: Reporter,
    *,
    commit: str | None = None,
    since: str | None = None,
) -> None:
    raise NotBuilt("`verify` is not built yet in this version of gbdeploy")
