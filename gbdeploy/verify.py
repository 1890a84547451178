"""Post-deploy verification: is the binary on the target the new one, and is it what runs?

Facts are gathered from the target in one pass (`gather`), then judged by pure functions
(`judge`), so every check is testable on its own and reports what it saw.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .config import Component, Settings
from .deploy.layout import Paths
from .errors import UsageError, VerificationFailed
from .output import Reporter
from .remote.connection import Remote
from .remote.probes import (
    Runner,
    health_probe,
    probe_contains,
    probe_last_line,
    probe_processes,
    probe_stat,
)

MIN_COMMIT_DIGITS = 7
# mtimes are read in whole seconds, and the forge's clock is not the target's.
CLOCK_TOLERANCE = timedelta(seconds=2)


@dataclass(frozen=True)
class TargetFacts:
    """What the target showed about a component's binary and service."""

    mtime: datetime | None  # None: no binary at the path
    owner: str | None
    contains_commit: bool
    processes: list[tuple[int, str]]  # (pid, user) of processes running exactly the binary
    health: dict[str, Any] | None  # the health URL's JSON, None when it did not answer
    health_error: str = ""
    last_deploy: dict[str, Any] | None = None  # the last line of the target's deploy log


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
    """Every post-deploy check, in order: freshness, commit bytes, owner, process, health."""
    results: list[CheckResult] = []
    if facts.mtime is None:
        results.append(CheckResult("binary", False, f"no file at {component.binary}"))
    elif since is not None:
        results.append(_judge_freshness(facts, expected_commit, since))
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


def _judge_freshness(facts: TargetFacts, expected_commit: str, since: datetime) -> CheckResult:
    """The binary was written by this run; or, when the run found the very same binary already
    there and skipped the upload, the target's deploy log says this run confirmed it."""
    assert facts.mtime is not None
    name = "binary newer than the run"
    mtime = facts.mtime.isoformat(timespec="seconds")
    start = since.isoformat(timespec="seconds")
    if facts.mtime >= since - CLOCK_TOLERANCE:
        return CheckResult(name, True, f"mtime {mtime} ≥ {start}")
    record = facts.last_deploy or {}
    try:
        recorded = datetime.fromisoformat(str(record.get("time", "")))
    except ValueError:
        recorded = None
    if (
        record.get("action") == "deploy"
        and record.get("result") in ("ok", "unchanged")
        and commits_match(expected_commit, str(record.get("commit") or ""))
        and recorded is not None
        and recorded >= since - CLOCK_TOLERANCE
    ):
        when = recorded.isoformat(timespec="seconds")
        return CheckResult(
            name, True, f"mtime {mtime} (same binary kept), confirmed by the deploy of {when}"
        )
    return CheckResult(name, False, f"mtime {mtime} older than the run's start {start}")


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
    raise_for_failed(component, results)
    return results


def raise_for_failed(component: Component, results: list[CheckResult]) -> None:
    """VerificationFailed naming the first failed check, if any failed."""
    failed = [r for r in results if not r.ok]
    if failed:
        first = failed[0]
        raise VerificationFailed(
            f"{component.name}: verification failed: {first.check}: {first.saw}",
            check=first.check,
            hint=_hint(first.check, component),
        )


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


def gather(remote: Runner, component: Component, expected_commit: str) -> TargetFacts:
    """One look at the target: the binary, the processes running it, the health URL."""
    stat = probe_stat(component.binary).run(remote)
    if stat is None:
        return TargetFacts(None, None, False, [], None, "no binary")
    contains = probe_contains(component.binary, expected_commit[:MIN_COMMIT_DIGITS]).run(remote)
    processes = [(p.pid, p.user) for p in probe_processes(component.binary).run(remote)]
    last_deploy = _json_object(probe_last_line(Paths(component.binary).deploy_log).run(remote))
    if component.switch is not None:  # the health URL of the port that serves now
        from .switch_process import live_port, serving_ports

        serving = serving_ports(
            lambda command: remote.run(command).stdout, component.binary, component.switch.ports
        )
        live = live_port(serving, ((last_deploy or {}).get("switch") or {}).get("live"))
        component = component.on_port(live if live is not None else component.switch.ports[0])
    probe = health_probe(component)
    health = probe.run(remote) if probe is not None else None
    return TargetFacts(
        last_deploy=last_deploy,
        mtime=datetime.fromtimestamp(stat.mtime, tz=timezone.utc),
        owner=stat.owner,
        contains_commit=bool(contains),
        processes=processes,
        health=health.data if health is not None and health.http_status is not None else None,
        health_error=health.describe() if health is not None else "",
    )


def _json_object(line: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(line or "")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def verify_deployed(
    settings: Settings,
    component: Component,
    commit: str,
    *,
    since: datetime | None,
    timeout: float,
    reporter: Reporter,
) -> list[CheckResult]:
    """Verify over ssh, retrying until `timeout`; prints each check with what it saw."""
    expected = normalize_commit(commit)
    target = settings.target_of(component)
    with (
        reporter.step(f"verify {component.name} {expected[:MIN_COMMIT_DIGITS]} on {target.ssh}"),
        Remote(target, settings.ssh) as remote,
    ):
        return verify_until(
            lambda: gather(remote, component, expected),
            component,
            expected,
            since,
            timeout=timeout,
            reporter=reporter,
        )


def expected_commit_of(settings: Settings, component: Component) -> str:
    """The submodule commit the root repository records: what the last release pushed."""
    from .git_repos import GitCommand, find_root, run_git

    try:
        root = find_root(None, settings.project_dir)
    except UsageError as error:
        raise UsageError(
            f"no expected commit: {error.message}",
            hint=f"pass --commit SHA (the {component.submodule or component.name} commit that "
            "should run), or run from the root repository",
        ) from None
    result = run_git(GitCommand(root, ("rev-parse", f"HEAD:{component.submodule}")))
    if not result.ok:
        raise UsageError(
            f"cannot read the {component.submodule} pointer in {root}: {result.stderr.strip()}",
            hint="pass --commit SHA",
        )
    return result.stdout.strip()


def run_start_of(settings: Settings, component: Component, commit: str) -> datetime | None:
    """When the newest successful run of the component's workflow for `commit` started, where
    the workflow runs in the component's repository (its runs carry the submodule commit); None
    when unknown."""
    from .errors import GbdeployError
    from .forge.client import ForgeClient
    from .runs import home_of

    try:
        home = home_of(settings, component)
        if home.placement != "component":
            return None
        with ForgeClient(home.forge(settings.forge), retries=1, retry_budget=5.0) as client:
            for run in client.iter_runs(max_pages=2):
                if (
                    run.workflow_id == component.workflow
                    and run.succeeded
                    and commits_match(commit, run.commit_sha)
                ):
                    return run.started
    except GbdeployError:
        return None
    return None


def run_verify(
    settings: Settings,
    component: str,
    reporter: Reporter,
    *,
    commit: str | None = None,
    since: str | None = None,
    as_json: bool = False,
) -> None:
    chosen = settings.component(component)
    expected = commit or expected_commit_of(settings, chosen)
    moment = parse_since(since)
    if moment is None and chosen.workflow_repo != "root":
        moment = run_start_of(settings, chosen, normalize_commit(expected))
    if as_json:
        normalized = normalize_commit(expected)
        with Remote(settings.target_of(chosen), settings.ssh) as remote:
            results = judge(chosen, normalized, moment, gather(remote, chosen, normalized))
        reporter.say(json.dumps([asdict(r) for r in results], indent=2))
        raise_for_failed(chosen, results)
        return
    verify_deployed(
        settings,
        chosen,
        expected,
        since=moment,
        timeout=0.0,  # one look; `release` is the one that waits for a starting service
        reporter=reporter,
    )
    reporter.say(f"{chosen.name} is verified: {expected[:MIN_COMMIT_DIGITS]} runs on its target")
