"""Finding the CI run of a pushed commit, dispatching one when needed, and waiting for it.

Every wait runs on the client's clock and sleep, so tests drive it with a fake clock. Forgejo
facts of real Forgejo that shape it: a dispatched run has an empty `event` (`trigger_event` says
`workflow_dispatch`), so it is found by commit, not by event filter; before v12 `/tasks` lists a
run only once a runner took it, so "no run appeared" there never means "none exists" and nothing
is dispatched on that ground; a run nobody takes stays `waiting` forever when no runner has its
label; a run of a workflow without `concurrency:` is cancelled by the next push's run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import (
    CIRunFailed,
    ForgeAuthError,
    ForgeNotFound,
    ForgeUnavailable,
    UsageError,
    WaitTimeout,
)
from ..output import Reporter
from .client import ForgeClient
from .endpoints import PAGE_LIMIT, PlannedRequest
from .models import DISPATCH_EVENT, Run, printable

LOG_TAIL_LINES = 40


def format_seconds(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


@dataclass(frozen=True)
class RunSearch:
    """Which run `release` looks for: `workflow` in the client's repository, for `sha`."""

    sha: str
    workflow: str
    ref: str
    dispatch: bool  # dispatch at once instead of waiting for the push run


def planned_requests(client: ForgeClient, search: RunSearch) -> list[PlannedRequest]:
    """The requests `release` makes after its pushes, in order (each poll shown once), built by
    the very methods that send them."""
    plan = [
        client.plan(
            client.endpoints.repository(),
            "check the API answers and the token is accepted (before any push)",
        )
    ]
    dispatch = client.endpoints.dispatch(search.workflow, search.sha)
    plan.append(
        client.plan(
            client.endpoints.dispatch(search.workflow, ""),
            "may the token dispatch? asked before any push, and nothing is dispatched: "
            "400 = yes (the ref is empty), 403 = a read-only token"
            + (" (refused: nothing pushed)" if search.dispatch else ""),
        )
    )
    if search.dispatch:
        plan.append(client.plan(dispatch, "dispatch the workflow and take the run id it returns"))
    else:
        plan.append(
            client.plan(
                client.endpoints.runs(head_sha=search.sha, event="push", limit=PAGE_LIMIT, page=1),
                f"poll until the push run of {search.sha[:12]} appears",
            )
        )
        plan.append(
            client.plan(
                dispatch,
                "only if no push run appears in time (and the server has /runs): dispatch",
            )
        )
    plan.append(client.plan(client.endpoints.run("{run_id}"), "poll the run until it finishes"))
    plan.append(
        client.plan(
            client.endpoints.jobs("{run_id}"),
            "if it fails: find the failed job, then GET /actions/jobs/{id}/logs (Range)",
        )
    )
    return plan


def find_run(
    client: ForgeClient,
    sha: str,
    workflow: str,
    *,
    appear_timeout: float,
    dispatch: bool,
    ref: str,
    reporter: Reporter,
    poll_interval: float = 5.0,
    inputs: dict[str, str] | None = None,
    may_dispatch: bool = True,
) -> Run:
    """The run of `workflow` for commit `sha`: the push run once it appears, else (after
    `appear_timeout`, or at once with `dispatch`) a run dispatched on `ref` — unless the token
    may not dispatch (`may_dispatch`)."""
    if not dispatch:
        deadline = client.clock() + appear_timeout
        reporter.say(
            f"waiting for the push run of {workflow} for {sha[:12]} in {client.repo_path} …"
        )
        while True:
            found = _newest_run(client, sha, workflow, cause="push", branch=ref)
            if found:
                reporter.say(f"found {found.label}: {found.status} {found.html_url}".rstrip())
                return found
            now = client.clock()
            if now >= deadline:
                break
            client.sleep(min(poll_interval, deadline - now))
        if client.uses_tasks():
            raise WaitTimeout(
                f"no run of {workflow} for {sha[:12]} is listed after "
                f"{format_seconds(appear_timeout)}; this server (before Forgejo 12) lists a run "
                "only once a runner has taken it, so one may be waiting for a runner: not "
                "dispatching another, which could deploy twice",
                hint=f"look at the Actions page of {client.repo_path}, then "
                f"`gbdeploy wait --sha {sha}`",
            )
        if not may_dispatch:
            raise WaitTimeout(
                f"no push run of {workflow} for {sha[:12]} appeared in {client.repo_path} within "
                f"{format_seconds(appear_timeout)}, and the token may not dispatch one",
                hint="check the workflow's push trigger (and `[skip ci]` in the commit message); "
                "dispatch it from the Actions page, or release again with a token that has "
                "scope write:repository",
            )
        reporter.say(
            f"no push run of {workflow} for {sha[:12]} appeared within "
            f"{format_seconds(appear_timeout)}: dispatching {workflow} at {sha[:12]} (the "
            f"commit itself, not {ref}, which may have moved)"
        )
    return dispatch_run(
        client,
        sha,
        workflow,
        ref=ref,
        reporter=reporter,
        inputs=inputs,
        appear_timeout=appear_timeout,
        poll_interval=poll_interval,
    )


def _newest_run(
    client: ForgeClient, sha: str, workflow: str, *, cause: str, branch: str | None = None
) -> Run | None:
    """The newest run of `workflow` for `sha` started by `cause` (on `branch`, when the forge
    names the run's branch: the same commit pushed to another branch runs that branch's jobs).
    Dispatched runs are listed without an event filter: their `event` is empty."""
    short = branch.removeprefix("refs/heads/") if branch else None
    event = cause if cause == "push" else None
    page = client.runs(head_sha=sha, event=event, limit=PAGE_LIMIT)
    matching = [
        r
        for r in page.runs
        if r.commit_sha == sha
        and (r.cause == cause or (r.source == "tasks" and not r.cause))
        and (not r.workflow_id or r.workflow_id == workflow)
        and (short is None or not r.ref or r.ref == short)
    ]
    return max(matching, key=lambda r: r.id) if matching else None


def dispatch_run(
    client: ForgeClient,
    sha: str,
    workflow: str,
    *,
    ref: str,
    reporter: Reporter,
    inputs: dict[str, str] | None = None,
    appear_timeout: float = 120.0,
    poll_interval: float = 5.0,
) -> Run:
    """Dispatch `workflow` at commit `sha` itself (Forgejo takes a commit SHA as `ref`), so a
    branch `ref` that moved meanwhile cannot build other code; return its run (found by commit
    when the server does not return run info, before v11)."""
    legacy = client.uses_tasks()
    dispatched = client.dispatch(workflow, sha, inputs)
    if dispatched is not None and dispatched.id and not legacy:
        run = client.run(dispatched.id)
        reporter.say(f"dispatched {run.label}: {run.html_url}".rstrip())
        return run
    deadline = client.clock() + appear_timeout
    while True:
        found = _newest_run(client, sha, workflow, cause=DISPATCH_EVENT)
        if found:
            reporter.say(f"dispatched {found.label}: {found.html_url}".rstrip())
            return found
        now = client.clock()
        if now >= deadline:
            raise WaitTimeout(
                f"dispatched {workflow} at {sha[:12]}, but its run did not show up "
                f"within {format_seconds(appear_timeout)}",
                hint=f"find it with `gbdeploy runs`, then `gbdeploy wait RUN_ID`, or "
                f"`gbdeploy wait --sha {sha}`",
            )
        client.sleep(min(poll_interval, deadline - now))


def wait_for_run(
    client: ForgeClient,
    run_id: int,
    *,
    timeout: float,
    poll_interval: float,
    reporter: Reporter,
    heartbeat: float = 30.0,
    max_interval: float = 30.0,
    pickup_timeout: float | None = None,
    runner_label: str | None = None,
    resume: str | None = None,
    resume_note: str = "",
) -> Run:
    """Poll run `run_id` until it finishes: a line per status change and a heartbeat line every
    `heartbeat` seconds. Still `waiting` after `pickup_timeout`: say that no runner with its
    label has taken it (and keep waiting). Success → the Run; failure → CIRunFailed with the
    failed job's log tail (or the newer run that superseded it); `timeout` → WaitTimeout;
    Ctrl-C → the resume hint, then KeyboardInterrupt (CI goes on)."""
    resume = resume or f"gbdeploy wait {run_id}"
    started = client.clock()
    deadline = started + timeout
    interval = max(poll_interval, 0.0)
    cap = max(poll_interval, min(max_interval, 4 * poll_interval))
    last_status: str | None = None
    last_line = started
    last_error: str | None = None
    unclaimed: str | None = None  # said once the run waited past pickup_timeout
    run: Run | None = None
    try:
        while True:
            try:
                run = client.run(run_id)
                last_error = None
            except ForgeUnavailable as error:
                last_error = error.message
                reporter.say(f"  forge not answering ({error.message}); still waiting")
            now = client.clock()
            elapsed = format_seconds(now - started)
            if run is not None and run.status != last_status:
                before = f"{last_status} → " if last_status else ""
                reporter.say(f"{run.label}: {before}{run.status} ({elapsed})")
                last_status = run.status
                last_line = now
                interval = poll_interval
            elif now - last_line >= heartbeat:
                reporter.say(f"  … still {last_status or 'unknown'} ({elapsed})")
                last_line = now
            if run is not None and run.finished:
                break
            if (
                unclaimed is None
                and run is not None
                and run.status == "waiting"
                and pickup_timeout is not None
                and now - started >= pickup_timeout
            ):
                unclaimed = _unclaimed(client, run, runner_label, now - started)
                reporter.say(f"  {unclaimed}")
            if now >= deadline:
                state = f"still {last_status}" if last_status else "not seen"
                why = f"; last error: {last_error}" if last_error else ""
                stuck = f"; {unclaimed}" if unclaimed and last_status == "waiting" else ""
                raise WaitTimeout(
                    f"gave up waiting after {format_seconds(timeout)}: run {run_id} is "
                    f"{state}{why}{stuck}. CI goes on without us",
                    hint=f"look at {run.html_url if run else 'the Actions page'}, or resume with"
                    f"{_resume_lines(resume, resume_note)}",
                )
            until_heartbeat = max(last_line + heartbeat - now, 0.1)
            client.sleep(min(interval, until_heartbeat, max(deadline - now, 0.0)))
            interval = min(interval * 1.5, cap)
    except KeyboardInterrupt:
        reporter.say(
            f"interrupted: CI run {run_id} goes on; resume with{_resume_lines(resume, resume_note)}"
        )
        raise
    if run.succeeded:
        return run
    if run.status == "cancelled":
        newer = superseding_run(client, run)
        if newer is not None:
            version = client.server_version()
            ignores = version.major is not None and version.major < 13
            raise CIRunFailed(
                f"CI {run.label} was cancelled: the newer {newer.label} (commit "
                f"{newer.commit_sha[:12]}, {newer.status}) of the same workflow superseded it, "
                + (
                    f"as Forgejo {version.text} does whatever the workflow says (it ignores "
                    "`concurrency:`)"
                    if ignores
                    else "as Forgejo does for a workflow without `concurrency: {group, "
                    "cancel-in-progress: false}`"
                ),
                hint=f"follow the newer run with `gbdeploy wait {newer.id}`; "
                + (
                    "upgrade Forgejo to v14 to queue deploys, and release one commit at a time "
                    "until then"
                    if ignores
                    else "render the workflow again (`gbdeploy workflows`) so later pushes queue "
                    "instead of cancelling (Forgejo v14 or later)"
                ),
            )
    raise CIRunFailed(
        f"CI {run.label} finished with status {run.status}" + _failure_details(client, run),
        hint=f"open {run.html_url or 'the Actions page of ' + client.repo_path}, fix the cause, "
        "then release again",
    )


def _resume_lines(command: str, note: str) -> str:
    """The resume command on a line of its own, to be pasted as it is; what it does below."""
    return f":\n    {command}" + (f"\n  ({note})" if note else "")


def _unclaimed(client: ForgeClient, run: Run, label: str | None, waited: float) -> str:
    """Why a run may still wait: no runner with its `runs-on` label took it."""
    labels: list[str] = []
    if run.source == "runs":
        try:
            labels = sorted({lab for job in client.jobs(run.id) for lab in job.runs_on})
        except (ForgeUnavailable, ForgeNotFound, ForgeAuthError, UsageError):
            labels = []
    shown = ", ".join(labels) or label or "?"
    return (
        f"{run.label} is still waiting after {format_seconds(waited)}: no runner with label "
        f"{shown} has taken it (is one registered and online? it may also be busy, or the run "
        "may queue behind another of its concurrency group)"
    )


def superseding_run(client: ForgeClient, run: Run) -> Run | None:
    """The newest later run of the same workflow and cause that cancelled `run`, if any."""
    try:
        for other in client.iter_runs(max_pages=2):
            if (
                other.id > run.id
                and other.workflow_id == run.workflow_id
                and other.cause == run.cause
                and (not run.ref or not other.ref or other.ref == run.ref)
            ):
                return other
    except (ForgeUnavailable, ForgeNotFound, ForgeAuthError, UsageError):
        return None
    return None


def _failure_details(client: ForgeClient, run: Run) -> str:
    """The failed job's name and log tail, or why they are not available."""
    if run.source == "tasks":
        return "\n  (this server, before Forgejo 16, has no job log API: see the run's page)"
    try:
        jobs = client.jobs(run.id)
        failed = [j for j in jobs if j.status in ("failure", "cancelled")] or [
            j for j in jobs if j.status != "success"
        ]
        if not failed:
            return ""
        job = failed[0]
        tail = client.job_log(job.id)
    except (ForgeUnavailable, ForgeNotFound, ForgeAuthError, UsageError) as error:
        return f"\n  (could not fetch the failed job's log: {error.message})"
    lines = printable(tail).splitlines()[-LOG_TAIL_LINES:]
    body = "\n".join(f"  | {line}" for line in lines) or "  | (the log is empty)"
    return f"\n  job {job.name!r} ({job.status}), last lines of its log:\n{body}"
