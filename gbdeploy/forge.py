"""Forgejo Actions: find the CI run of a pushed commit, dispatch a workflow, wait for a run.

The API is Forgejo's own (FACTS.md), not GitHub's: an `ActionRun` carries its result in `status`,
its head commit in `commit_sha` and its web number in `index_in_repo`; unset times come back as
1970-01-01; lists page by `total_count` (no Link header). Servers older than v12 have no `/runs`:
the client falls back to `/tasks`, where the only stable run identifier is the run number, so on
those servers a `Run.id` *is* its run number (and `gbdeploy wait N` takes that number).

`ForgeClient` takes an httpx transport (the test seam), and a clock and a sleep, so every wait can
be driven by a fake clock in tests.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import httpx

from .config import TOKEN_VARIABLES, ForgeSettings, Secret, Settings
from .errors import (
    CIRunFailed,
    ConfigError,
    ForgeAuthError,
    ForgeNotFound,
    ForgeUnavailable,
    UsageError,
    WaitTimeout,
)
from .output import Reporter

API_PREFIX = "/api/v1"
PAGE_LIMIT = 50  # Forgejo's maximum page size
PENDING = frozenset({"unknown", "waiting", "running", "blocked"})
FINISHED = frozenset({"success", "failure", "cancelled", "skipped"})
READ_SCOPE = "read:repository"
WRITE_SCOPE = "write:repository"
LOG_TAIL_BYTES = 6000
LOG_TAIL_LINES = 40

Clock = Callable[[], float]
Sleep = Callable[[float], None]


# ---------------------------------------------------------------------------- typed answers


@dataclass(frozen=True)
class Run:
    """One workflow run, from `/runs` (`source="runs"`) or assembled from `/tasks`."""

    id: int
    status: str
    commit_sha: str
    workflow_id: str
    index_in_repo: int
    event: str
    title: str
    html_url: str
    created: datetime | None
    started: datetime | None
    stopped: datetime | None
    duration: timedelta | None
    source: str = "runs"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "success"

    @property
    def label(self) -> str:
        """How the user sees it: `#12 (id 345) botserver.yaml`."""
        ident = (
            f"#{self.index_in_repo}"
            if self.source == "tasks"
            else (f"#{self.index_in_repo} (id {self.id})")
        )
        return f"run {ident} {self.workflow_id}".rstrip()

    def elapsed(self, now: datetime) -> timedelta | None:
        if self.duration is not None and self.finished:
            return self.duration
        if self.started is None:
            return None
        end = self.stopped or now
        return max(end - self.started, timedelta(0))


@dataclass(frozen=True)
class Job:
    id: int
    run_id: int
    name: str
    status: str
    attempt: int
    task_id: int


@dataclass(frozen=True)
class DispatchedRun:
    id: int
    run_number: int
    jobs: list[str]


@dataclass(frozen=True)
class RunPage:
    runs: list[Run]
    total_count: int


# ---------------------------------------------------------------------------- parsing

_UNSET_BEFORE = datetime(1971, 1, 1, tzinfo=timezone.utc)
_RFC3339 = re.compile(
    r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?(?P<tz>Z|z|[+-]\d\d:\d\d)$"
)


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 (Go writes up to 9 fraction digits) → aware datetime; 1970 and junk → None."""
    if not isinstance(value, str):
        return None
    match = _RFC3339.match(value.strip())
    if not match:
        return None
    frac = (match["frac"] or "0")[:6].ljust(6, "0")
    tz = "+00:00" if match["tz"] in ("Z", "z") else match["tz"]
    parsed = datetime.fromisoformat(f"{match['base']}.{frac}{tz}")
    return None if parsed < _UNSET_BEFORE else parsed.astimezone(timezone.utc)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def run_from_api(data: dict[str, Any]) -> Run:
    duration_ns = data.get("duration")
    return Run(
        id=_int(data.get("id")),
        status=_str(data.get("status")) or "unknown",
        commit_sha=_str(data.get("commit_sha")),
        workflow_id=_str(data.get("workflow_id")),
        index_in_repo=_int(data.get("index_in_repo")),
        event=_str(data.get("event")),
        title=_str(data.get("title")),
        html_url=_str(data.get("html_url")),
        created=parse_time(data.get("created")),
        started=parse_time(data.get("started")),
        stopped=parse_time(data.get("stopped")),
        duration=timedelta(microseconds=duration_ns / 1000) if _int(duration_ns) else None,
    )


def job_from_api(data: dict[str, Any]) -> Job:
    return Job(
        id=_int(data.get("id")),
        run_id=_int(data.get("run_id")),
        name=_str(data.get("name")),
        status=_str(data.get("status")) or "unknown",
        attempt=_int(data.get("attempt")),
        task_id=_int(data.get("task_id")),
    )


def run_from_tasks(tasks: list[dict[str, Any]]) -> Run:
    """One run from the `/tasks` entries of its jobs (latest attempt of each job wins)."""
    latest: dict[str, dict[str, Any]] = {}
    for task in sorted(tasks, key=lambda t: _int(t.get("id"))):
        latest[_str(task.get("name"))] = task
    jobs = list(latest.values())
    statuses = [_str(t.get("status")) or "unknown" for t in jobs]
    if any(s in ("failure", "cancelled") for s in statuses):
        status = next(s for s in ("failure", "cancelled") if s in statuses)
        if any(s in PENDING for s in statuses):
            status = "running"
    elif any(s in PENDING for s in statuses):
        status = "running" if any(s != "waiting" for s in statuses) else "waiting"
    elif statuses and all(s == "skipped" for s in statuses):
        status = "skipped"
    else:
        status = "success"
    first = jobs[0]
    started = [t for t in (parse_time(j.get("run_started_at")) for j in jobs) if t]
    updated = [t for t in (parse_time(j.get("updated_at")) for j in jobs) if t]
    stopped = max(updated) if status in FINISHED and updated else None
    begin = min(started) if started else None
    return Run(
        id=_int(first.get("run_number")),
        status=status,
        commit_sha=_str(first.get("head_sha")),
        workflow_id=_str(first.get("workflow_id")),
        index_in_repo=_int(first.get("run_number")),
        event=_str(first.get("event")),
        title=_str(first.get("display_title")),
        html_url=_str(first.get("url")),
        created=parse_time(first.get("created_at")),
        started=begin,
        stopped=stopped,
        duration=(stopped - begin) if stopped and begin else None,
        source="tasks",
    )


def runs_from_tasks(tasks: Iterable[dict[str, Any]]) -> list[Run]:
    by_number: dict[int, list[dict[str, Any]]] = {}
    for task in tasks:
        by_number.setdefault(_int(task.get("run_number")), []).append(task)
    runs = [run_from_tasks(group) for group in by_number.values()]
    return sorted(runs, key=lambda r: r.id, reverse=True)


# ---------------------------------------------------------------------------- the client


def token_variable() -> str | None:
    """The name (never the value) of the environment variable the token came from."""
    for variable in TOKEN_VARIABLES:
        if os.environ.get(variable, "").strip():
            return variable
    return None


class TokenAuth(httpx.Auth):
    """`Authorization: token <T>` on every request; shows itself as `***`."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"token {self._token.reveal()}"
        yield request

    def __repr__(self) -> str:
        return "TokenAuth('***')"


@dataclass(frozen=True)
class PlannedRequest:
    """A request the client would send, with the token hidden: what `--dry-run` prints."""

    method: str
    url: str
    headers: dict[str, str]
    body: str | None = None

    def __str__(self) -> str:
        shown = ", ".join(f"{k}: {v}" for k, v in self.headers.items())
        body = f" {self.body}" if self.body else ""
        return f"{self.method} {self.url}{body}  [{shown}]"


class ForgeClient:
    """Forgejo's REST API for one repository, with retries, typed answers and clear errors."""

    def __init__(
        self,
        settings: ForgeSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        retries: int = 4,
        retry_budget: float = 60.0,
    ) -> None:
        self.settings = settings
        self.sleep = sleep
        self.clock = clock
        self.retries = retries
        self.retry_budget = retry_budget
        self._legacy_tasks: bool | None = None  # None: not known yet
        self._token = settings.token
        base = settings.url.rstrip("/")
        if not re.match(r"https?://[^/]+", base):
            raise ConfigError("forge.url", f"expected http(s)://HOST[:PORT], got {settings.url!r}")
        self.base_url = base
        self._http = httpx.Client(
            base_url=base + API_PREFIX,
            timeout=httpx.Timeout(settings.timeout, connect=min(10.0, settings.timeout)),
            transport=transport,
            auth=TokenAuth(settings.token) if settings.token else None,
            headers={"Accept": "application/json", "User-Agent": "gbdeploy"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ForgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ForgeClient({self.repo_path!r} at {self.base_url!r})"

    @property
    def repo_path(self) -> str:
        return f"{self.settings.owner}/{self.settings.repo}"

    def _repo(self, suffix: str = "") -> str:
        owner = quote(self.settings.owner, safe="")
        repo = quote(self.settings.repo, safe="")
        return f"/repos/{owner}/{repo}{suffix}"

    # ---- the plan of requests (dry run)

    def planned(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
    ) -> PlannedRequest:
        request = self._http.build_request(method, path, params=params, json=json)
        headers = {"Accept": request.headers.get("Accept", "")}
        if self._token:
            headers["Authorization"] = "token ***"
        if json is not None:
            headers["Content-Type"] = "application/json"
        body = request.content.decode() if json is not None else None
        url = str(request.url).replace("%7B", "{").replace("%7D", "}")  # {run_id} placeholders
        return PlannedRequest(method, url, headers, body)

    def plan_find_and_wait(
        self, *, sha: str, workflow: str, ref: str, dispatch: bool
    ) -> list[PlannedRequest]:
        """The requests `release` makes after its pushes, in order (polls shown once)."""
        plan = [self.planned("GET", self._repo())]
        if not dispatch:
            plan.append(
                self.planned(
                    "GET",
                    self._repo("/actions/runs"),
                    params={"head_sha": sha, "event": "push", "limit": PAGE_LIMIT, "page": 1},
                )
            )
        plan.append(
            self.planned(
                "POST",
                self._repo(f"/actions/workflows/{quote(workflow, safe='')}/dispatches"),
                json={"ref": ref, "inputs": {}, "return_run_info": True},
            )
        )
        plan.append(self.planned("GET", self._repo("/actions/runs/{run_id}")))
        plan.append(self.planned("GET", self._repo("/actions/runs/{run_id}/jobs")))
        return plan

    def plan_lines(self, *, sha: str, workflow: str, ref: str, dispatch: bool) -> list[str]:
        lines: list[str] = []
        for number, request in enumerate(
            self.plan_find_and_wait(sha=sha, workflow=workflow, ref=ref, dispatch=dispatch)
        ):
            note = {
                0: "check the API answers and the token is accepted (before any push)",
                1: "poll until the push run of the root commit appears"
                if not dispatch
                else "dispatch the workflow and take the run id it returns",
            }.get(number, "")
            if not dispatch and number == 2:
                note = "only if no push run appears in time: dispatch the workflow"
            if request.url.endswith("/{run_id}"):
                note = "poll the run until it finishes"
            if request.url.endswith("/jobs"):
                note = "if it fails: find the failed job, then GET /actions/jobs/{id}/logs (Range)"
            lines.append(f"{request}" + (f"  # {note}" if note else ""))
        return lines

    # ---- the request machinery

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        not_found: str,
        scope: str = READ_SCOPE,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        passthrough: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send with retries (connection errors, 5xx; a POST only when it was never sent), then
        turn every unwanted answer into the error of errors.py with what to do next."""
        budget_end = self.clock() + self.retry_budget
        delay = 0.5
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    method, path, params=params, json=json, headers=headers
                )
            except httpx.TransportError as error:
                retryable = method == "GET" or isinstance(
                    error, httpx.ConnectError | httpx.ConnectTimeout
                )
                failure = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                if not retryable:
                    raise ForgeUnavailable(
                        f"Forgejo at {self.base_url} did not answer to {what} ({failure})",
                        hint="it may or may not have been done: look at the repository's Actions"
                        " page before trying again",
                    ) from None
            else:
                status = response.status_code
                if status in ok or status in passthrough:
                    return response
                retryable = status >= 500 and method == "GET"
                if not retryable:
                    self._raise_for(response, what=what, not_found=not_found, scope=scope)
                failure = f"HTTP {status}{_server_message(response)}"
            if attempt > self.retries or self.clock() + delay > budget_end:
                raise ForgeUnavailable(
                    f"Forgejo at {self.base_url} did not answer to {what} after {attempt} "
                    f"attempts (last: {failure})",
                    hint="check that forge.url is right and the server is up, then try again",
                )
            self.sleep(delay)
            delay = min(delay * 2, 8.0)

    def _raise_for(
        self, response: httpx.Response, *, what: str, not_found: str, scope: str
    ) -> None:
        status = response.status_code
        said = _server_message(response)
        variable = token_variable()
        if status in (301, 302, 303, 307, 308):
            where = response.headers.get("Location", "?")
            raise ConfigError(
                "forge.url",
                f"{self.base_url} redirects {what} to {where}",
                hint="set forge.url to the address the server redirects to",
            )
        if status == 401:
            if not self._token:
                raise ForgeAuthError(
                    f"Forgejo refused {what}: no token was given (401{said})",
                    hint=f"export {TOKEN_VARIABLES[0]} (or {TOKEN_VARIABLES[1]}) with a token "
                    f"that has scope {scope}",
                )
            raise ForgeAuthError(
                f"Forgejo refused the token from {variable or 'the environment'} for {what} "
                f"(401{said})",
                hint=f"create a new token with scope {scope} for {self.repo_path} and export it "
                f"as {variable or TOKEN_VARIABLES[0]}",
            )
        if status == 403:
            raise ForgeAuthError(
                f"the token from {variable or 'the environment'} may not {what} in "
                f"{self.repo_path} (403{said})",
                hint=f"the token needs scope {scope} and access to {self.repo_path}",
            )
        if status == 404:
            raise ForgeNotFound(f"{not_found} (404{said})", hint=self._not_found_hint())
        if status >= 500:
            raise ForgeUnavailable(f"Forgejo answered HTTP {status} to {what}{said}")
        raise UsageError(f"Forgejo refused {what} (HTTP {status}{said})")

    def _not_found_hint(self) -> str:
        return (
            f"check forge.url ({self.base_url}), forge.owner ({self.settings.owner}) and "
            f"forge.repo ({self.settings.repo}) in gbdeploy.yaml"
        )

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise ForgeUnavailable(
                f"{self.base_url} answered {what} with something that is not Forgejo's API "
                f"({kind})",
                hint="check that forge.url points at the Forgejo server itself",
            ) from None

    def _object(self, response: httpx.Response, what: str) -> dict[str, Any]:
        data = self._json(response, what)
        if not isinstance(data, dict):
            raise ForgeUnavailable(f"unexpected answer to {what}: {type(data).__name__}")
        return data

    # ---- endpoints

    def version(self) -> str:
        response = self._request(
            "GET", "/version", what="the version request", not_found="no Forgejo API here"
        )
        return _str(self._object(response, "the version request").get("version"))

    def check_access(self, *, write: bool = False) -> dict[str, Any]:
        """The repository answers and the token is accepted (and may push when `write`)."""
        what = f"reading repository {self.repo_path}"
        response = self._request(
            "GET",
            self._repo(),
            what=what,
            not_found=f"repository {self.repo_path} was not found at {self.base_url} (or the "
            "token may not see it)",
        )
        repo = self._object(response, what)
        permissions = repo.get("permissions") or {}
        if write and permissions and not permissions.get("push"):
            raise ForgeAuthError(
                f"the token from {token_variable() or 'the environment'} may read "
                f"{self.repo_path} but not write to it",
                hint=f"dispatching a workflow needs a token with scope {WRITE_SCOPE}",
            )
        return repo

    def dispatch(
        self, workflow: str, ref: str, inputs: dict[str, str] | None = None
    ) -> DispatchedRun | None:
        """Start `workflow` on `ref`; the new run's id (None from servers before v11)."""
        what = f"dispatch workflow {workflow} on {ref}"
        if not ref:
            raise UsageError(f"cannot {what}: the ref is empty")
        response = self._request(
            "POST",
            self._repo(f"/actions/workflows/{quote(workflow, safe='')}/dispatches"),
            what=what,
            scope=WRITE_SCOPE,
            not_found=f"Forgejo does not know workflow {workflow} in {self.repo_path}",
            json={"ref": ref, "inputs": dict(inputs or {}), "return_run_info": True},
            ok=(201, 204),
            passthrough=(400, 500),
        )
        if response.status_code == 400:
            raise UsageError(
                f"Forgejo refused to {what} (400{_server_message(response)})",
                hint="the ref must not be empty and every required `workflow_dispatch` input of "
                f"{workflow} must be given",
            )
        if response.status_code == 500:
            raise ForgeNotFound(
                f"Forgejo could not {what} (500{_server_message(response)})",
                hint=f"Forgejo answers 500 when the ref {ref!r} does not exist in "
                f"{self.repo_path} or .forgejo/workflows/{workflow} is not on it (or lacks "
                "`on: workflow_dispatch`): push the ref and the workflow file, then try again",
            )
        if response.status_code == 204:
            return None
        data = self._object(response, what)
        return DispatchedRun(
            id=_int(data.get("id")),
            run_number=_int(data.get("run_number")),
            jobs=[_str(j) for j in data.get("jobs") or []],
        )

    def runs(
        self,
        *,
        head_sha: str | None = None,
        event: str | None = None,
        limit: int = 20,
        page: int = 1,
    ) -> RunPage:
        """One page of runs, newest first. On servers without `/runs`, built from `/tasks`
        (filtered here: `/tasks` takes no filters)."""
        if self._legacy_tasks:
            return self._runs_from_tasks(head_sha=head_sha, event=event, limit=limit, page=page)
        params: dict[str, Any] = {"limit": min(limit, PAGE_LIMIT), "page": page}
        if head_sha:
            params["head_sha"] = head_sha
        if event:
            params["event"] = event
        what = f"listing the runs of {self.repo_path}"
        response = self._request(
            "GET",
            self._repo("/actions/runs"),
            what=what,
            not_found="",
            params=params,
            passthrough=(404,),
        )
        if response.status_code == 404:
            self._switch_to_tasks()
            return self._runs_from_tasks(head_sha=head_sha, event=event, limit=limit, page=page)
        self._legacy_tasks = False
        data = self._object(response, what)
        entries = data.get("workflow_runs") or []
        return RunPage(
            runs=[run_from_api(r) for r in entries if isinstance(r, dict)],
            total_count=_int(data.get("total_count")),
        )

    def iter_runs(
        self, *, head_sha: str | None = None, event: str | None = None, max_pages: int = 10
    ) -> Iterator[Run]:
        """Every run, newest first, page by page (by `total_count`) up to `max_pages`."""
        seen = 0
        for page in range(1, max_pages + 1):
            result = self.runs(head_sha=head_sha, event=event, limit=PAGE_LIMIT, page=page)
            yield from result.runs
            seen += len(result.runs)
            if not result.runs or seen >= result.total_count:
                return

    def uses_tasks(self) -> bool:
        """Whether this server lacks `/runs` (before Forgejo 12), asking it once."""
        if self._legacy_tasks is None:
            self.runs(limit=1)
        return bool(self._legacy_tasks)

    def _switch_to_tasks(self) -> None:
        """`/runs` answered 404: either a server before v12 or a wrong owner/repo."""
        self.check_access()  # raises ForgeNotFound naming owner/repo when that is the cause
        self._legacy_tasks = True

    def _tasks(self, page: int) -> tuple[list[dict[str, Any]], int]:
        what = f"listing the action tasks of {self.repo_path}"
        response = self._request(
            "GET",
            self._repo("/actions/tasks"),
            what=what,
            not_found=f"repository {self.repo_path} has neither /actions/runs nor /actions/tasks "
            "(Forgejo older than v8, or Actions are disabled for it)",
            params={"limit": PAGE_LIMIT, "page": page},
        )
        data = self._object(response, what)
        entries = [t for t in data.get("workflow_runs") or [] if isinstance(t, dict)]
        return entries, _int(data.get("total_count"))

    def _all_tasks(self, max_pages: int = 4) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        for page in range(1, max_pages + 1):
            entries, total = self._tasks(page)
            tasks.extend(entries)
            if not entries or len(tasks) >= total:
                break
        return tasks

    def _runs_from_tasks(
        self, *, head_sha: str | None, event: str | None, limit: int, page: int
    ) -> RunPage:
        runs = runs_from_tasks(self._all_tasks())
        runs = [
            r
            for r in runs
            if (not head_sha or r.commit_sha == head_sha) and (not event or r.event == event)
        ]
        start = (page - 1) * limit
        return RunPage(runs=runs[start : start + limit], total_count=len(runs))

    def run(self, run_id: int) -> Run:
        not_found = (
            f"no run with id {run_id} in {self.repo_path} (the id is the one in the API and in "
            "`gbdeploy runs`, not the #number of the web page)"
        )
        if self._legacy_tasks:
            return self._run_from_tasks(run_id, not_found)
        what = f"reading run {run_id} of {self.repo_path}"
        response = self._request(
            "GET",
            self._repo(f"/actions/runs/{int(run_id)}"),
            what=what,
            not_found=not_found,
            passthrough=(404,),
        )
        if response.status_code == 404:
            if self._legacy_tasks is None:
                self.runs(limit=1)  # finds out whether /runs exists at all
                if self._legacy_tasks:
                    return self._run_from_tasks(run_id, not_found)
            self._raise_for(response, what=what, not_found=not_found, scope=READ_SCOPE)
        self._legacy_tasks = False
        return run_from_api(self._object(response, what))

    def _run_from_tasks(self, run_number: int, not_found: str) -> Run:
        tasks = [t for t in self._all_tasks() if _int(t.get("run_number")) == run_number]
        if not tasks:
            raise ForgeNotFound(
                f"{not_found}; this server (before Forgejo 12) lists runs only once a runner "
                f"has picked them up, by run number",
                hint=self._not_found_hint(),
            )
        return run_from_tasks(tasks)

    def jobs(self, run_id: int) -> list[Job]:
        what = f"listing the jobs of run {run_id}"
        response = self._request(
            "GET",
            self._repo(f"/actions/runs/{int(run_id)}/jobs"),
            what=what,
            not_found=f"Forgejo lists no jobs for run {run_id} in {self.repo_path} (the "
            "jobs API needs Forgejo 16)",
        )
        data = self._json(response, what)
        return (
            [job_from_api(j) for j in data if isinstance(j, dict)] if isinstance(data, list) else []
        )

    def job_log(self, job_id: int, tail_bytes: int = LOG_TAIL_BYTES) -> str:
        """The last `tail_bytes` of a job's log (a suffix `Range`; cut here if it is ignored)."""
        what = f"reading the log of job {job_id}"
        response = self._request(
            "GET",
            self._repo(f"/actions/jobs/{int(job_id)}/logs"),
            what=what,
            not_found=f"Forgejo has no log for job {job_id} in {self.repo_path} (the log API "
            "needs Forgejo 16)",
            headers={"Range": f"bytes=-{int(tail_bytes)}", "Accept": "text/plain"},
            ok=(200, 206),
            passthrough=(416,),
        )
        if response.status_code == 416:  # an empty log has no suffix to give
            return ""
        content = response.content
        if response.status_code == 200:
            content = content[-tail_bytes:]
        return content.decode("utf-8", errors="replace")


def _server_message(response: httpx.Response) -> str:
    """`: <the server's message>` from a Forgejo error body, if it has one."""
    try:
        data = response.json()
    except ValueError:
        return ""
    message = data.get("message") if isinstance(data, dict) else None
    return f": {message}" if isinstance(message, str) and message else ""


# ---------------------------------------------------------------------------- finding and waiting


def _format_seconds(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


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
) -> Run:
    """The run of `workflow` for root commit `sha`: the push run once it appears, else (after
    `appear_timeout`, or at once with `dispatch`) a run dispatched on `ref`."""
    if not dispatch:
        started = client.clock()
        deadline = started + appear_timeout
        reporter.say(f"waiting for the push run of {workflow} for {sha[:12]} to appear …")
        while True:
            found = _push_run(client, sha, workflow, event="push")
            if found:
                reporter.say(f"found {found.label}: {found.status} {found.html_url}".rstrip())
                return found
            now = client.clock()
            if now >= deadline:
                break
            client.sleep(min(poll_interval, deadline - now))
        reporter.say(
            f"no push run of {workflow} for {sha[:12]} appeared within "
            f"{_format_seconds(appear_timeout)}: dispatching {workflow} on {ref}"
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


def _push_run(client: ForgeClient, sha: str, workflow: str, *, event: str) -> Run | None:
    page = client.runs(head_sha=sha, event=event, limit=PAGE_LIMIT)
    matching = [
        r
        for r in page.runs
        if r.commit_sha == sha
        and r.event == event
        and (not r.workflow_id or r.workflow_id == workflow)
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
    """Dispatch `workflow` on `ref` and return its run (found by sha when the server does not
    return run info, before v11)."""
    legacy = client.uses_tasks()
    dispatched = client.dispatch(workflow, ref, inputs)
    if dispatched is not None and dispatched.id and not legacy:
        run = client.run(dispatched.id)
        reporter.say(f"dispatched {run.label}: {run.html_url}".rstrip())
        return run
    deadline = client.clock() + appear_timeout
    while True:
        found = _push_run(client, sha, workflow, event="workflow_dispatch")
        if found:
            reporter.say(f"dispatched {found.label}: {found.html_url}".rstrip())
            return found
        now = client.clock()
        if now >= deadline:
            raise WaitTimeout(
                f"dispatched {workflow} on {ref}, but its run for {sha[:12]} did not show up "
                f"within {_format_seconds(appear_timeout)}",
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
) -> Run:
    """Poll run `run_id` until it finishes: a line per status change and a heartbeat line every
    `heartbeat` seconds. Success → the Run; failure → CIRunFailed with the failed job's log tail;
    `timeout` → WaitTimeout; Ctrl-C → the resume hint, then KeyboardInterrupt (CI goes on)."""
    resume = f"gbdeploy wait {run_id}"
    started = client.clock()
    deadline = started + timeout
    interval = max(poll_interval, 0.0)
    cap = max(poll_interval, min(max_interval, 4 * poll_interval))
    last_status: str | None = None
    last_line = started
    last_error: str | None = None
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
            elapsed = _format_seconds(now - started)
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
            if now >= deadline:
                state = f"still {last_status}" if last_status else "not seen"
                why = f"; last error: {last_error}" if last_error else ""
                raise WaitTimeout(
                    f"gave up waiting after {_format_seconds(timeout)}: run {run_id} is "
                    f"{state}{why}. CI goes on without us",
                    hint=f"{resume}   (or look at {run.html_url if run else 'the Actions page'})",
                )
            until_heartbeat = max(last_line + heartbeat - now, 0.1)
            client.sleep(min(interval, until_heartbeat, max(deadline - now, 0.0)))
            interval = min(interval * 1.5, cap)
    except KeyboardInterrupt:
        reporter.say(f"interrupted: CI run {run_id} goes on; resume waiting with `{resume}`")
        raise
    if run.succeeded:
        return run
    raise CIRunFailed(
        f"CI {run.label} finished with status {run.status}" + _failure_details(client, run),
        hint=f"open {run.html_url or 'the Actions page of ' + client.repo_path}, fix the cause, "
        "then release again",
    )


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
    lines = tail.splitlines()[-LOG_TAIL_LINES:]
    body = "\n".join(f"  | {line}" for line in lines) or "  | (the log is empty)"
    return f"\n  job {job.name!r} ({job.status}), last lines of its log:\n{body}"


# ---------------------------------------------------------------------------- tasks


def _client(settings: Settings, transport: httpx.BaseTransport | None = None) -> ForgeClient:
    return ForgeClient(settings.forge, transport=transport)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _duration(run: Run, now: datetime) -> str:
    elapsed = run.elapsed(now)
    return _format_seconds(elapsed.total_seconds()) if elapsed is not None else "-"


def format_runs_table(runs: list[Run], *, now: datetime) -> list[str]:
    header = ("ID", "#", "STATUS", "EVENT", "COMMIT", "WORKFLOW", "STARTED", "DURATION", "TITLE")
    rows = [
        (
            str(r.id) if r.source == "runs" else "-",
            f"#{r.index_in_repo}",
            r.status,
            r.event,
            r.commit_sha[:10],
            r.workflow_id,
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
    transport: httpx.BaseTransport | None = None,
) -> list[Run]:
    """`gbdeploy runs`: the newest runs of the root repository, or of one component's workflow."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    workflow = settings.component(component).workflow if component else None
    with _client(settings, transport) as client:
        runs: list[Run] = []
        for run in client.iter_runs():
            if workflow and run.workflow_id != workflow:
                continue
            runs.append(run)
            if len(runs) >= limit:
                break
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


_SHA = re.compile(r"[0-9a-fA-F]{7,40}")


def run_wait(
    settings: Settings,
    reporter: Reporter,
    *,
    run_id: int | None,
    sha: str | None,
    timeout: float | None,
    transport: httpx.BaseTransport | None = None,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> list[Run]:
    """`gbdeploy wait`: wait for one run, or for every run of a root commit."""
    if (run_id is None) == (sha is None):
        raise UsageError("give either a RUN_ID or --sha SHA", hint="find ids with `gbdeploy runs`")
    if sha is not None and not _SHA.fullmatch(sha):
        raise UsageError(f"--sha: expected 7 to 40 hex digits, got {sha!r}")
    limit = settings.release.timeout if timeout is None else timeout
    with ForgeClient(settings.forge, transport=transport, sleep=sleep, clock=clock) as client:
        if run_id is not None:
            ids = [run_id]
        else:
            assert sha is not None
            ids = [r.id for r in _runs_of_commit(client, sha.lower())]
            if not ids:
                raise ForgeNotFound(
                    f"no CI run for commit {sha} in {client.repo_path}",
                    hint="check the sha (the root repo's commit) with `gbdeploy runs`",
                )
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
            )
            reporter.say(f"{run.label} succeeded in {_duration(run, datetime.now(timezone.utc))}")
            finished.append(run)
    return finished


def _runs_of_commit(client: ForgeClient, sha: str) -> list[Run]:
    if len(sha) == 40:
        return list(client.iter_runs(head_sha=sha, max_pages=2))
    return [r for r in client.iter_runs(max_pages=4) if r.commit_sha.startswith(sha)]


__all__ = [
    "DispatchedRun",
    "ForgeClient",
    "Job",
    "PlannedRequest",
    "Run",
    "RunPage",
    "dispatch_run",
    "find_run",
    "format_runs_table",
    "parse_time",
    "run_runs",
    "run_wait",
    "wait_for_run",
]
