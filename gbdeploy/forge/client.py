"""Forgejo's REST API for one repository: requests described once, sent with retries, answered
with typed models (models.py) or with the error of errors.py that says what to do next.

Every endpoint is an `ApiRequest` built by one method (`requests_for_*`); `send` sends it and
`PlannedRequest.of` shows it, token hidden, for `--dry-run`: the plan and the request cannot
drift apart. `ForgeClient` takes an httpx transport (the test seam), a clock and a sleep.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from ..config import TOKEN_VARIABLES, ForgeSettings, Secret
from ..errors import (
    ConfigError,
    ForgeAuthError,
    ForgeNotFound,
    ForgeUnavailable,
    UsageError,
    redact,
)
from .models import (
    DispatchedRun,
    Job,
    Run,
    RunPage,
    as_dicts,
    as_int,
    as_str,
    job_from_api,
    run_from_api,
    run_from_tasks,
    runs_from_tasks,
)
from .version import ForgeVersion

API_PREFIX = "/api/v1"
PAGE_LIMIT = 50  # Forgejo's maximum page size
READ_SCOPE = "read:repository"
WRITE_SCOPE = "write:repository"
LOG_TAIL_BYTES = 6000

Clock = Callable[[], float]
Sleep = Callable[[float], None]


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
class ApiRequest:
    """One API request, described once: what `send` sends and what `--dry-run` prints."""

    method: str
    path: str  # under /api/v1
    what: str  # "reading run 12 of GeneralBots/gb": for messages
    not_found: str = ""
    scope: str = READ_SCOPE
    params: dict[str, Any] | None = None
    json: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    ok: tuple[int, ...] = (200,)
    passthrough: tuple[int, ...] = ()


@dataclass(frozen=True)
class PlannedRequest:
    """A request as `--dry-run` shows it, with the token hidden."""

    method: str
    url: str
    headers: dict[str, str]
    body: str | None = None
    note: str = ""

    def __str__(self) -> str:
        shown = ", ".join(f"{k}: {v}" for k, v in self.headers.items())
        body = f" {self.body}" if self.body else ""
        note = f"  # {self.note}" if self.note else ""
        return f"{self.method} {self.url}{body}  [{shown}]{note}"


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
        self._version: ForgeVersion | None = None
        self._token = settings.token
        if settings.token is not None and settings.token.problem is not None:
            raise settings.token.problem
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
            verify=_verification(settings),
        )
        if settings.token:
            _warn_plain_http(base)

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

    # ---- the request descriptions

    def repository_request(self) -> ApiRequest:
        return ApiRequest(
            "GET",
            self._repo(),
            what=f"reading repository {self.repo_path}",
            not_found=f"repository {self.repo_path} was not found at {self.base_url}",
        )

    def version_request(self) -> ApiRequest:
        return ApiRequest("GET", "/version", what="reading the Forgejo version", passthrough=(404,))

    def server_version(self) -> ForgeVersion:
        """The forge's version (asked once); unknown ("") when it does not say."""
        if self._version is None:
            try:
                response = self.send(self.version_request())
                data = response.json() if response.status_code == 200 else {}
            except (ForgeUnavailable, ForgeAuthError, UsageError, ValueError):
                data = {}
            text = data.get("version") if isinstance(data, dict) else None
            self._version = ForgeVersion(text if isinstance(text, str) else "")
        return self._version

    def runs_request(
        self, *, head_sha: str | None = None, event: str | None = None, limit: int, page: int
    ) -> ApiRequest:
        params: dict[str, Any] = {}
        if head_sha:
            params["head_sha"] = head_sha
        if event:
            params["event"] = event
        params.update({"limit": min(max(limit, 1), PAGE_LIMIT), "page": max(page, 1)})
        return ApiRequest(
            "GET",
            self._repo("/actions/runs"),
            what=f"listing the runs of {self.repo_path}",
            params=params,
            passthrough=(404,),
        )

    def run_request(self, run_id: int | str) -> ApiRequest:
        return ApiRequest(
            "GET",
            self._repo(f"/actions/runs/{run_id}"),
            what=f"reading run {run_id} of {self.repo_path}",
            not_found=f"no run with id {run_id} in {self.repo_path} (the id is the one in the "
            "API and in `gbdeploy runs`, not the #number of the web page)",
            passthrough=(404,),
        )

    def jobs_request(self, run_id: int | str) -> ApiRequest:
        return ApiRequest(
            "GET",
            self._repo(f"/actions/runs/{run_id}/jobs"),
            what=f"listing the jobs of run {run_id}",
            not_found=f"Forgejo lists no jobs for run {run_id} in {self.repo_path} (the jobs "
            "API needs Forgejo 16)",
        )

    def job_log_request(self, job_id: int | str, tail_bytes: int) -> ApiRequest:
        return ApiRequest(
            "GET",
            self._repo(f"/actions/jobs/{job_id}/logs"),
            what=f"reading the log of job {job_id}",
            not_found=f"Forgejo has no log for job {job_id} in {self.repo_path} (the log API "
            "needs Forgejo 16)",
            headers={"Range": f"bytes=-{int(tail_bytes)}", "Accept": "text/plain"},
            ok=(200, 206),
            passthrough=(416,),
        )

    def tasks_request(self, page: int) -> ApiRequest:
        return ApiRequest(
            "GET",
            self._repo("/actions/tasks"),
            what=f"listing the action tasks of {self.repo_path}",
            not_found=f"repository {self.repo_path} has neither /actions/runs nor /actions/tasks "
            "(Forgejo older than v8, or Actions are disabled for it)",
            params={"limit": PAGE_LIMIT, "page": page},
        )

    def dispatch_request(
        self, workflow: str, ref: str, inputs: dict[str, str] | None = None
    ) -> ApiRequest:
        return ApiRequest(
            "POST",
            self._repo(f"/actions/workflows/{quote(workflow, safe='')}/dispatches"),
            what=f"dispatch workflow {workflow} on {ref or 'an empty ref'} in {self.repo_path}",
            scope=WRITE_SCOPE,
            not_found=f"Forgejo does not know ref {ref!r} or workflow {workflow} in "
            f"{self.repo_path}",
            json={"ref": ref, "inputs": dict(inputs or {}), "return_run_info": True},
            ok=(201, 204),
            passthrough=(400, 403, 500),
        )

    def plan(self, request: ApiRequest, note: str = "") -> PlannedRequest:
        """How `request` goes on the wire, token hidden (sends nothing)."""
        built = self._http.build_request(
            request.method, request.path, params=request.params, json=request.json
        )
        headers = {"Accept": request.headers.get("Accept", built.headers.get("Accept", ""))}
        headers.update({k: v for k, v in request.headers.items() if k != "Accept"})
        if self._token:
            headers["Authorization"] = "token ***"
        if request.json is not None:
            headers["Content-Type"] = "application/json"
        body = built.content.decode() if request.json is not None else None
        url = str(built.url).replace("%7B", "{").replace("%7D", "}")  # {run_id} placeholders
        return PlannedRequest(request.method, url, headers, body, note)

    # ---- the request machinery

    def send(self, request: ApiRequest) -> httpx.Response:
        """Send with retries (connection errors, 5xx; a POST only when it was never sent), then
        turn every unwanted answer into the error of errors.py with what to do next."""
        budget_end = self.clock() + self.retry_budget
        delay = 0.5
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._receive(request)
            except httpx.TransportError as error:
                retryable = request.method == "GET" or isinstance(
                    error, httpx.ConnectError | httpx.ConnectTimeout
                )
                failure = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                if not retryable:
                    raise ForgeUnavailable(
                        f"Forgejo at {self.base_url} did not answer to {request.what} ({failure})",
                        hint="it may or may not have been done: look at the repository's Actions"
                        " page before trying again",
                    ) from None
            else:
                status = response.status_code
                if status in request.ok or status in request.passthrough:
                    return response
                if not (status >= 500 and request.method == "GET"):
                    self.raise_for(response, request)
                failure = f"HTTP {status}{_server_message(response)}"
            if attempt > self.retries or self.clock() + delay > budget_end:
                raise ForgeUnavailable(
                    f"Forgejo at {self.base_url} did not answer to {request.what} after "
                    f"{attempt} attempts (last: {failure})",
                    hint="check that forge.url is right and the server is up, then try again",
                )
            self.sleep(delay)
            delay = min(delay * 2, 8.0)

    def _receive(self, request: ApiRequest) -> httpx.Response:
        """The whole answer within forge.timeout. httpx's timeout bounds each read, not the
        request: a server that trickles a byte at a time would hold it for as long as it likes."""
        deadline = self.clock() + self.settings.timeout
        response = self._http.send(
            self._http.build_request(
                request.method,
                request.path,
                params=request.params,
                json=request.json,
                headers=request.headers or None,
            ),
            stream=True,
        )
        response.stream = _Deadline(response.stream, lambda: self.clock() > deadline)
        try:
            response.read()
        except _Overdue:
            raise ForgeUnavailable(
                f"Forgejo at {self.base_url} did not finish answering to {request.what} within "
                f"forge.timeout ({self.settings.timeout:g} s): it sends too slowly",
                hint="check the server and the network between, or raise forge.timeout",
            ) from None
        finally:
            response.close()
        return response

    def raise_for(self, response: httpx.Response, request: ApiRequest) -> None:
        status = response.status_code
        said = _server_message(response)
        variable = token_variable()
        what = request.what
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
                    f"that has scope {request.scope}",
                )
            raise ForgeAuthError(
                f"Forgejo refused the token from {variable or 'the environment'} for {what} "
                f"(401{said})",
                hint=f"create a new token with scope {request.scope} for {self.repo_path} and "
                f"export it as {variable or TOKEN_VARIABLES[0]}",
            )
        if status == 403:
            if not self._token:
                raise ForgeAuthError(
                    f"Forgejo refused {what} without a token (403{said}: the server requires "
                    "sign-in)",
                    hint=f"export {TOKEN_VARIABLES[0]} with a token that has scope {request.scope}",
                )
            raise ForgeAuthError(
                f"the token from {variable or 'the environment'} may not {what} (403{said})",
                hint=f"the token needs scope {request.scope} and access to {self.repo_path}",
            )
        if status == 404:
            if not self._token:
                # Forgejo answers an anonymous request for a private repository with 404.
                raise ForgeNotFound(
                    f"{request.not_found or what} (404{said}) — no token was given, and Forgejo "
                    "answers 404, not 401, to an anonymous request for a private repository",
                    hint=f"export {TOKEN_VARIABLES[0]} (or {TOKEN_VARIABLES[1]}) with a token "
                    f"that has scope {request.scope}",
                )
            raise ForgeNotFound(
                f"{request.not_found or what} (404{said})", hint=self.not_found_hint()
            )
        if status >= 500:
            raise ForgeUnavailable(f"Forgejo answered HTTP {status} to {what}{said}")
        raise UsageError(f"Forgejo refused {what} (HTTP {status}{said})")

    def not_found_hint(self) -> str:
        return (
            f"check forge.url ({self.base_url}) and that {self.repo_path} exists there and the "
            "token may see it (forge.owner/forge.repo in gbdeploy.yaml, or the component's "
            f"workflow_repo; forge.owner ({self.settings.owner}) and forge.repo "
            f"({self.settings.repo}))"
        )

    def _json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except (ValueError, RecursionError):
            kind = response.headers.get("Content-Type", "no content type")
            raise ForgeUnavailable(
                f"{self.base_url} answered {what} with something that is not Forgejo's API "
                f"({kind})",
                hint="check that forge.url points at the Forgejo server itself",
            ) from None

    def _object(self, response: httpx.Response, what: str) -> dict[str, Any]:
        data = self._json(response, what)
        if not isinstance(data, dict):
            raise ForgeUnavailable(
                f"{self.base_url} answered {what} with a JSON {type(data).__name__}, not the "
                "object Forgejo's API sends",
                hint="check that forge.url points at the Forgejo server itself",
            )
        return data

    # ---- endpoints

    def check_access(self) -> dict[str, Any]:
        """The repository answers and the token is accepted for reading it."""
        request = self.repository_request()
        return self._object(self.send(request), request.what)

    def check_write_scope(self, workflow: str) -> None:
        """Whether the token may dispatch, asked without dispatching anything.

        `permissions.push` is the *user's* access and ignores the token's scopes, so it cannot
        say. A dispatch with an empty ref is answered by the scope middleware (403) when the
        token lacks write:repository, else by the handler (400: the ref is required): no run
        is ever made."""
        request = replace(self.dispatch_request(workflow, ""), passthrough=(400, 403, 404, 500))
        response = self.send(request)
        status = response.status_code
        if status == 400:
            return
        said = _server_message(response)
        if status == 404:
            raise ForgeNotFound(
                f"Forgejo at {self.base_url} has no workflow dispatch API for {self.repo_path} "
                f"(404{said}; it needs Forgejo 8, and Actions enabled for the repository)",
                hint="release without --dispatch, and let the push start the run",
            )
        if status == 403:
            raise ForgeAuthError(
                f"the token from {token_variable() or 'the environment'} may read "
                f"{self.repo_path} but not dispatch workflows there (403{said})",
                hint=f"dispatching needs a token with scope {WRITE_SCOPE} (Forgejo: Settings → "
                "Applications → Access tokens)",
            )
        if status == 500:  # an empty ref can also fail later in the handler: still past scopes
            return
        raise UsageError(
            f"Forgejo answered HTTP {status}{said} to a dispatch with an empty ref, where a "
            "write-scoped token gets 400 and a read-only one 403",
            hint="the forge may not be Forgejo, or it changed: try `--no-wait` and dispatch by "
            "hand",
        )

    def dispatch(
        self, workflow: str, ref: str, inputs: dict[str, str] | None = None
    ) -> DispatchedRun | None:
        """Start `workflow` on `ref`; the new run's id (None from servers before v11)."""
        if not ref:
            raise UsageError(f"cannot dispatch workflow {workflow}: the ref is empty")
        request = self.dispatch_request(workflow, ref, inputs)
        response = self.send(request)
        status = response.status_code
        said = _server_message(response)
        if status == 403:
            self.raise_for(response, request)
        if status == 400:
            raise UsageError(
                f"Forgejo refused to {request.what} (400{said})",
                hint="the ref must not be empty and every required `workflow_dispatch` input of "
                f"{workflow} must be given",
            )
        if status == 500:
            raise ForgeNotFound(
                f"Forgejo could not {request.what} (500{said})",
                hint=f"Forgejo answers 500 when the ref {ref!r} does not exist in "
                f"{self.repo_path}, or .forgejo/workflows/{workflow} is not on it or is not a "
                "valid workflow: push the ref and the workflow file, then try again",
            )
        if status == 204:
            return None
        data = self._object(response, request.what)
        return DispatchedRun(
            id=as_int(data.get("id")),
            run_number=as_int(data.get("run_number")),
            jobs=[as_str(j) for j in data.get("jobs") or [] if as_str(j)]
            if isinstance(data.get("jobs"), list)
            else [],
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
        request = self.runs_request(head_sha=head_sha, event=event, limit=limit, page=page)
        response = self.send(request)
        if response.status_code == 404:
            self._switch_to_tasks()
            return self._runs_from_tasks(head_sha=head_sha, event=event, limit=limit, page=page)
        self._legacy_tasks = False
        data = self._object(response, request.what)
        runs = [run_from_api(r) for r in as_dicts(data.get("workflow_runs"))]
        return RunPage(runs=newest_first(runs), total_count=as_int(data.get("total_count")))

    def iter_runs(
        self, *, head_sha: str | None = None, event: str | None = None, max_pages: int = 10
    ) -> Iterator[Run]:
        """Every run, newest (highest id) first, from at most `max_pages` pages. Forgejo before
        v15 lists `/runs` in no order (oldest first in practice), so every page read is sorted
        together; with more pages than that, the last ones are read from such a server."""
        first = self.runs(head_sha=head_sha, event=event, limit=PAGE_LIMIT, page=1)
        pages = max(1, math.ceil(first.total_count / PAGE_LIMIT))
        if pages <= max_pages:
            wanted = range(2, pages + 1)
        elif self._legacy_tasks or self.server_version().newest_first:
            wanted = range(2, max_pages + 1)
        else:
            wanted = range(pages - max_pages + 2, pages + 1)
        runs = list(first.runs)
        for page in wanted:
            result = self.runs(head_sha=head_sha, event=event, limit=PAGE_LIMIT, page=page)
            runs.extend(result.runs)
            if not result.runs:
                break
        if all(run.id for run in runs):  # a run on two pages (the list moved meanwhile) once
            runs = list({run.id: run for run in runs}.values())
        yield from newest_first(runs)

    def uses_tasks(self) -> bool:
        """Whether this server lacks `/runs` (before Forgejo 12), asking it once."""
        if self._legacy_tasks is None:
            self.runs(limit=1)
        return bool(self._legacy_tasks)

    def _switch_to_tasks(self) -> None:
        """`/runs` answered 404: either a server before v12 or a wrong owner/repo."""
        self.check_access()  # raises ForgeNotFound naming owner/repo when that is the cause
        self._legacy_tasks = True

    def _all_tasks(self, max_pages: int = 4) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        for page in range(1, max_pages + 1):
            request = self.tasks_request(page)
            data = self._object(self.send(request), request.what)
            entries = as_dicts(data.get("workflow_runs"))
            tasks.extend(entries)
            if not entries or len(tasks) >= as_int(data.get("total_count")):
                break
        return tasks

    def _runs_from_tasks(
        self, *, head_sha: str | None, event: str | None, limit: int, page: int
    ) -> RunPage:
        runs = [
            r
            for r in runs_from_tasks(self._all_tasks())
            if (not head_sha or r.commit_sha == head_sha) and (not event or r.event == event)
        ]
        start = (page - 1) * limit
        return RunPage(runs=runs[start : start + limit], total_count=len(runs))

    def run(self, run_id: int) -> Run:
        request = self.run_request(int(run_id))
        if self._legacy_tasks:
            return self._run_from_tasks(run_id, request.not_found)
        response = self.send(request)
        if response.status_code == 404:
            if self._legacy_tasks is None:
                self.runs(limit=1)  # finds out whether /runs exists at all
                if self._legacy_tasks:
                    return self._run_from_tasks(run_id, request.not_found)
            self.raise_for(response, request)
        self._legacy_tasks = False
        return run_from_api(self._object(response, request.what))

    def _run_from_tasks(self, run_number: int, not_found: str) -> Run:
        tasks = [t for t in self._all_tasks() if as_int(t.get("run_number")) == run_number]
        if not tasks:
            raise ForgeNotFound(
                f"{not_found}; this server (before Forgejo 12) lists runs only once a runner "
                f"has picked them up, by run number",
                hint=self.not_found_hint(),
            )
        return run_from_tasks(tasks)

    def jobs(self, run_id: int) -> list[Job]:
        request = self.jobs_request(int(run_id))
        data = self._json(self.send(request), request.what)
        return [job_from_api(j) for j in as_dicts(data)]

    def job_log(self, job_id: int, tail_bytes: int = LOG_TAIL_BYTES) -> str:
        """The last `tail_bytes` of a job's log (a suffix `Range`; cut here if it is ignored)."""
        response = self.send(self.job_log_request(int(job_id), tail_bytes))
        if response.status_code == 416:  # an empty log has no suffix to give
            return ""
        content = response.content
        if response.status_code == 200:
            content = content[-tail_bytes:]
        return content.decode("utf-8", errors="replace")


class _Overdue(Exception):
    """The answer did not arrive whole before the request's deadline."""


class _Deadline(httpx.SyncByteStream):
    """A response body that stops with _Overdue at the first chunk read after the deadline."""

    def __init__(
        self, stream: httpx.SyncByteStream | httpx.AsyncByteStream, overdue: Callable[[], bool]
    ) -> None:
        assert isinstance(stream, httpx.SyncByteStream)
        self._stream = stream
        self._overdue = overdue

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if self._overdue():
                raise _Overdue
            yield chunk

    def close(self) -> None:
        self._stream.close()


def newest_first(runs: list[Run]) -> list[Run]:
    """Runs by `id`, highest first: never the order a server happened to send."""
    return sorted(runs, key=lambda run: run.id, reverse=True)


_warned_plain_http: set[str] = set()  # forge URLs already warned about in this command


def _warn_plain_http(base_url: str) -> None:
    """A token over plain http to another machine travels in clear: say it once per command."""
    split = urlsplit(base_url)
    host = (split.hostname or "").lower()
    if split.scheme != "http" or base_url in _warned_plain_http:
        return
    if host == "localhost" or _is_loopback(host):
        return
    _warned_plain_http.add(base_url)
    print(
        f"warning: the forge token goes in clear over plain http to {base_url}: use "
        "https:// in forge.url, with forge.ca_file naming the CA certificate that signed the "
        "server's certificate if it is not a public one",
        file=sys.stderr,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _verification(settings: ForgeSettings) -> ssl.SSLContext | bool:
    """Certificates are always verified: against forge.ca_file when it is set."""
    if not settings.ca_file:
        return True
    path = os.path.expanduser(settings.ca_file)
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            "forge.ca_file",
            f"cannot read a CA certificate from {path}: {error}",
            hint="name a PEM file with the certificate of the CA that signed forge.url's",
        ) from None


def _server_message(response: httpx.Response) -> str:
    """`: <the server's message>` from a Forgejo error body, if it has one: the token it was sent
    hidden (a server may echo it), then cut short."""
    try:
        data = response.json()
    except (ValueError, RecursionError):
        return ""
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, str) or not message:
        return ""
    sent = response.request.headers.get("Authorization", "")
    return f": {redact(message, sent.partition(' ')[2].strip())[:300]}"
