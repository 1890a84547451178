"""Forgejo's REST API for one repository: the calls a command makes, sent with retries and
answered with typed models (models.py) or with the error of errors.py that says what to do next.

Every request is an `ApiRequest` from `Endpoints` (endpoints.py); `send` sends it and `plan`
shows it, token hidden, for `--dry-run`. The httpx client, its TLS verification and the deadline
on a whole answer are transport.py's; servers before Forgejo 12 are read through legacy_tasks.py.
`ForgeClient` takes an httpx transport (the test seam), a clock and a sleep.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx

from ..config import TOKEN_VARIABLES, ForgeSettings
from ..errors import (
    ConfigError,
    ForgeAuthError,
    ForgeNotFound,
    ForgeUnavailable,
    UsageError,
    redact,
)
from .endpoints import PAGE_LIMIT, WRITE_SCOPE, ApiRequest, Endpoints, PlannedRequest
from .legacy_tasks import numbered_run, read_tasks, runs_page
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
)
from .transport import Overdue, http_client, read_before_deadline
from .version import ForgeVersion

LOG_TAIL_BYTES = 6000

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def token_variable() -> str | None:
    """The name (never the value) of the environment variable the token came from."""
    for variable in TOKEN_VARIABLES:
        if os.environ.get(variable, "").strip():
            return variable
    return None


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
        self.endpoints = Endpoints(base, settings.owner, settings.repo)
        self._http = http_client(settings, base, transport)

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
        return self.endpoints.repo_path

    def server_version(self) -> ForgeVersion:
        """The forge's version (asked once); unknown ("") when it does not say."""
        if self._version is None:
            try:
                response = self.send(self.endpoints.version())
                data = response.json() if response.status_code == 200 else {}
            except (ForgeUnavailable, ForgeAuthError, UsageError, ValueError):
                data = {}
            text = data.get("version") if isinstance(data, dict) else None
            self._version = ForgeVersion(text if isinstance(text, str) else "")
        return self._version

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
        try:
            read_before_deadline(response, lambda: self.clock() > deadline)
        except Overdue:
            raise ForgeUnavailable(
                f"Forgejo at {self.base_url} did not finish answering to {request.what} within "
                f"forge.timeout ({self.settings.timeout:g} s): it sends too slowly",
                hint="check the server and the network between, or raise forge.timeout",
            ) from None
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
                f"{request.not_found or what} (404{said})", hint=self.endpoints.not_found_hint()
            )
        if status >= 500:
            raise ForgeUnavailable(f"Forgejo answered HTTP {status} to {what}{said}")
        raise UsageError(f"Forgejo refused {what} (HTTP {status}{said})")

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
        request = self.endpoints.repository()
        return self._object(self.send(request), request.what)

    def check_write_scope(self, workflow: str) -> None:
        """Whether the token may dispatch, asked without dispatching anything.

        `permissions.push` is the *user's* access and ignores the token's scopes, so it cannot
        say. A dispatch with an empty ref is answered by the scope middleware (403) when the
        token lacks write:repository, else by the handler (400: the ref is required): no run
        is ever made."""
        request = replace(self.endpoints.dispatch(workflow, ""), passthrough=(400, 403, 404, 500))
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
        request = self.endpoints.dispatch(workflow, ref, inputs)
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
            return runs_page(self._tasks(), head_sha=head_sha, event=event, limit=limit, page=page)
        request = self.endpoints.runs(head_sha=head_sha, event=event, limit=limit, page=page)
        response = self.send(request)
        if response.status_code == 404:
            self._switch_to_tasks()
            return runs_page(self._tasks(), head_sha=head_sha, event=event, limit=limit, page=page)
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

    def _tasks(self) -> list[dict[str, Any]]:
        return read_tasks(
            self.endpoints, lambda request: self._object(self.send(request), request.what)
        )

    def run(self, run_id: int) -> Run:
        request = self.endpoints.run(int(run_id))
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
        hint = self.endpoints.not_found_hint()
        return numbered_run(self._tasks(), run_number, not_found=not_found, hint=hint)

    def jobs(self, run_id: int) -> list[Job]:
        request = self.endpoints.jobs(int(run_id))
        data = self._json(self.send(request), request.what)
        return [job_from_api(j) for j in as_dicts(data)]

    def job_log(self, job_id: int, tail_bytes: int = LOG_TAIL_BYTES) -> str:
        """The last `tail_bytes` of a job's log (a suffix `Range`; cut here if it is ignored)."""
        response = self.send(self.endpoints.job_log(int(job_id), tail_bytes))
        if response.status_code == 416:  # an empty log has no suffix to give
            return ""
        content = response.content
        if response.status_code == 200:
            content = content[-tail_bytes:]
        return content.decode("utf-8", errors="replace")


def newest_first(runs: list[Run]) -> list[Run]:
    """Runs by `id`, highest first: never the order a server happened to send."""
    return sorted(runs, key=lambda run: run.id, reverse=True)


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
