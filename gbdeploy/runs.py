"""The `runs` and `wait` commands (and the CI line of `status`): tables and JSON over the forge
package, in the repository where each component's workflow runs (`workflow_repo`)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from .config import Component, Settings
from .errors import ForgeNotFound, GbdeployError, UsageError
from .forge.client import Clock, ForgeClient, Sleep
from .forge.models import Run
from .forge.placement import WorkflowHome, workflow_home
from .forge.waiting import format_seconds, wait_for_run
from .git_repos import find_root
from .output import Reporter

_SHA = re.compile(r"[0-9a-fA-F]{7,40}")


def _root_or_none(settings: Settings) -> Path | None:
    try:
        return find_root(None, settings.project_dir)
    except GbdeployError:
        return None


def home_of(settings: Settings, component: Component) -> WorkflowHome:
    root = _root_or_none(settings) if component.workflow_repo == "component" else None
    return workflow_home(settings, component, root)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _duration(run: Run, now: datetime) -> str:
    elapsed = run.elapsed(now)
    return format_seconds(elapsed.total_seconds()) if elapsed is not None else "-"


def format_runs_table(runs: list[Run], *, now: datetime) -> list[str]:
    header = ("ID", "#", "STATUS", "EVENT", "COMMIT", "WORKFLOW", "STARTED", "DURATION", "TITLE")
    rows = [
        (
            str(r.id) if r.source == "runs" else "-",
            f"#{r.index_in_repo}",
            r.status,
            r.cause or "-",
            r.commit_sha[:10] or "-",
            r.workflow_id or "-",
            _when(r.started),
            _duration(r, now),
            r.title.splitlines()[0][:50] if r.title else "",
        )
        for r in runs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    return [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + "  " + row[-1]
        for row in [header, *rows]
    ]


def run_runs(
    settings: Settings,
    reporter: Reporter,
    *,
    component: str | None,
    limit: int,
    as_json: bool = False,
    transport: httpx.BaseTransport | None = None,
) -> list[Run]:
    """`gbdeploy runs`: the newest runs of the root repository, or of one component's workflow
    in the repository where it runs."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    chosen = settings.component(component) if component else None
    forge = home_of(settings, chosen).forge(settings.forge) if chosen else settings.forge
    workflow = chosen.workflow if chosen else None
    with ForgeClient(forge, transport=transport) as client:
        runs: list[Run] = []
        for run in client.iter_runs():
            if workflow and run.workflow_id != workflow:
                continue
            runs.append(run)
            if len(runs) >= limit:
                break
    if as_json:
        reporter.say(json.dumps([run.as_json() for run in runs], indent=2))
        return runs
    where = f"{client.repo_path}" + (f", workflow {workflow}" if workflow else "")
    if not runs:
        reporter.say(f"no CI runs in {where}")
        return runs
    reporter.say(f"CI runs of {where} at {client.base_url}, newest first:")
    for line in format_runs_table(runs, now=datetime.now(timezone.utc)):
        reporter.say(line)
    if runs[0].source == "tasks":
        reporter.say("(this server is older than Forgejo 12: runs are listed by number)")
    return runs


def _candidate_homes(settings: Settings, component: str | None) -> list[WorkflowHome]:
    """Where a run may be: the named component's repository, else the root repository and then
    every component repository that runs a workflow."""
    if component:
        return [home_of(settings, settings.component(component))]
    homes = [WorkflowHome("root", settings.forge.owner, settings.forge.repo, "forge.repo")]
    for chosen in settings.components.values():
        if chosen.workflow_repo == "root":
            continue
        try:
            home = home_of(settings, chosen)
        except UsageError:
            continue
        if home.full_name.lower() not in {h.full_name.lower() for h in homes}:
            homes.append(home)
    return homes


def run_wait(
    settings: Settings,
    reporter: Reporter,
    *,
    run_id: int | None,
    sha: str | None,
    timeout: float | None,
    component: str | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> list[Run]:
    """`gbdeploy wait`: wait for one run, or for every run of a commit (root or component)."""
    if (run_id is None) == (sha is None):
        raise UsageError("give either a RUN_ID or --sha SHA", hint="find ids with `gbdeploy runs`")
    if sha is not None and not _SHA.fullmatch(sha):
        raise UsageError(f"--sha: expected 7 to 40 hex digits, got {sha!r}")
    limit = settings.release.timeout if timeout is None else timeout
    homes = _candidate_homes(settings, component)
    for number, home in enumerate(homes, 1):
        last = number == len(homes)
        with ForgeClient(
            home.forge(settings.forge), transport=transport, sleep=sleep, clock=clock
        ) as client:
            if run_id is not None:
                try:
                    client.run(run_id)
                    ids = [run_id]
                except ForgeNotFound:
                    numbered = _run_numbered(client, run_id)
                    if numbered is None:
                        if last:
                            raise
                        continue
                    reporter.say(
                        f"run #{run_id} (its number in the web UI) of {client.repo_path} is run "
                        f"id {numbered.id}: waiting for it"
                    )
                    ids = [numbered.id]
            else:
                assert sha is not None
                ids = [r.id for r in _runs_of_commit(client, sha.lower())]
                if not ids:
                    if last:
                        where = ", ".join(h.full_name for h in homes)
                        raise ForgeNotFound(
                            f"no CI run for commit {sha} in {where}",
                            hint="check the sha (the root commit, or the submodule commit for a "
                            "workflow in the component's repository) with `gbdeploy runs`",
                        )
                    continue
            return _wait_all(client, settings, reporter, ids, limit)
    return []


def _run_numbered(client: ForgeClient, number: int) -> Run | None:
    """The run the web UI shows as `#number` (runs are listed newest first, numbers falling)."""
    for run in client.iter_runs():
        if run.index_in_repo == number and run.source == "runs":
            return run
        if run.index_in_repo < number:
            return None
    return None


def _wait_all(
    client: ForgeClient, settings: Settings, reporter: Reporter, ids: list[int], limit: float
) -> list[Run]:
    deadline = client.clock() + limit
    finished: list[Run] = []
    for ident in sorted(ids):
        remaining = max(deadline - client.clock(), 0.0)
        run = wait_for_run(
            client,
            ident,
            timeout=remaining,
            poll_interval=settings.release.poll_interval,
            reporter=reporter,
            pickup_timeout=settings.release.appear_timeout,
            runner_label=settings.workflows.runs_on,
        )
        reporter.say(f"{run.label} succeeded in {_duration(run, datetime.now(timezone.utc))}")
        finished.append(run)
    return finished


def _runs_of_commit(client: ForgeClient, sha: str) -> list[Run]:
    if len(sha) == 40:
        return list(client.iter_runs(head_sha=sha, max_pages=2))
    return [r for r in client.iter_runs(max_pages=4) if r.commit_sha.startswith(sha)]


def latest_run_line(
    settings: Settings, component: Component, *, transport: httpx.BaseTransport | None = None
) -> str:
    """The newest CI run of the component's workflow where it runs, in one line (for `status`);
    never raises."""
    return latest_run(settings, component, transport=transport)[0]


def latest_run(
    settings: Settings, component: Component, *, transport: httpx.BaseTransport | None = None
) -> tuple[str, dict[str, object] | None]:
    """The newest CI run of the component's workflow: its line, and its fields for `status
    --json` (None when there is no such run or the forge could not be read); never raises."""
    try:
        home = home_of(settings, component)
        with ForgeClient(
            home.forge(settings.forge), transport=transport, retries=1, retry_budget=5.0
        ) as client:
            for run in client.iter_runs(max_pages=2):
                if run.workflow_id == component.workflow:
                    started = run.started.isoformat(timespec="seconds") if run.started else "-"
                    line = (
                        f"{run.label}: {run.status}, commit {run.commit_sha[:10]}, started "
                        f"{started}, in {home.full_name}"
                    )
                    return line, {**run.as_json(), "repository": home.full_name}
        return f"no run of {component.workflow} among the newest runs of {home.full_name}", None
    except GbdeployError as error:
        return f"unavailable: {str(error).splitlines()[0]}", None
