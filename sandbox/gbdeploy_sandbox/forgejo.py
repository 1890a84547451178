"""A Forgejo stand-in on 127.0.0.1: the Actions API gbdeploy uses, served over real HTTP.

No Forgejo can run here, so this answers like one (its source and its swagger description): runs are
`ActionRun` objects (`status` carries the result, `commit_sha`, `index_in_repo`), unset times are
the epoch in the server's time zone (`zone`), lists page by `total_count` with no Link or
X-Total-Count header, tokens are taken from `Authorization: token X` or `Bearer X` and refused in
the query string, and servers before v12 (`version="11.0.0"`) have no `/runs`. Where the real one
is harsh, so is this:

- several repositories (`add_repository`), each private or not: an anonymous GET of a private one
  is 404, an anonymous POST 401 (403 everywhere with `require_signin`); the job token of a run
  may read only its own repository and public ones (`job_token_may_read`);
- a token's scopes are checked before the handler (403 `token does not have at least one of
  required scope(s)`), and `permissions.push` is the *user's* access, whatever the scopes;
- concurrency as each version has it (`version` "12.0.0", "13.0.0", "14.0.0", "16.0.0"): up to
  v12 `concurrency:` is ignored and a push run cancels the unfinished push runs of its
  repository + ref + workflow, whatever the workflow says; v13 reads it, but `cancel-in-progress:
  false` is no limit (runs of the group go side by side); from v14 a later run of the group stays
  `waiting`, and no runner gets it, until the one before is done (without a group: no limit);
- `/runs` lists newest first (`id DESC`) from v15; v12-v14 have no ORDER BY: oldest first;
- dispatch takes a branch, a tag, a full `refs/…` ref or a known commit SHA as `ref`;
- the runner takes a job only when its `runs-on` is among `runner_labels` (default `docker`,
  forgejo-runner's registration default): otherwise the run stays `waiting`;
- dispatched runs have an empty `event` and `trigger_event: workflow_dispatch`; dispatch answers
  500 for an unknown workflow, an unknown short ref or an invalid workflow, 404 for an unknown
  full `refs/…` ref, and runs a workflow without `on: workflow_dispatch` all the same;
- a push whose head commit message holds `[skip ci]` (or the other skip strings) starts nothing;
- `/tasks` lists a job only once a runner has picked it up.

Runs come from `on_push(sha, ref=...)` (or `POST /_emulator/push` from a git hook) and from the
dispatch API. Each run's life is driven either by a `Script` — deterministic, advanced by how
many API answers have shown the run (never by wall time) — or by an `executor` callback that a
worker thread calls like a runner would (the demo's emulated runner runs the workflow's steps
in it and writes the job log through `ExecutorContext.log`).

    with ForgejoEmulator(token="t0k", workflows=["botserver.yaml"]) as forge:
        forge.on_push(sha, ref="refs/heads/main", script=Script("failure", log="boom"))
        ForgeSettings(url=forge.url, owner=forge.owner, repo=forge.repo, token=Secret("t0k"))
"""

from __future__ import annotations

import json
import queue
import re
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from gbdeploy.config import ForgeSettings, Secret

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DISPATCH = "workflow_dispatch"
SKIP_CI = ("[skip ci]", "[ci skip]", "[no ci]", "[skip actions]", "[actions skip]")
DEFAULT_RUNNER_LABELS = ("docker",)
FINISHED = ("success", "failure", "cancelled", "skipped")
STATUSES = (
    "unknown",
    "waiting",
    "running",
    "success",
    "failure",
    "cancelled",
    "skipped",
    "blocked",
)
PAGE_MAX = 50
PAGE_DEFAULT = 30
READ = "read:repository"
WRITE = "write:repository"


@dataclass
class Script:
    """A scripted run: `waiting` for the first `waiting_reads` answers that show it, `running` for
    the next `running_reads`, then `status` with `log` as its job's log. `hold=True`: stays
    waiting until `emulator.finish()`."""

    status: str = "success"
    waiting_reads: int = 1
    running_reads: int = 1
    log: str = "build ok\ndeploy ok\n"
    hold: bool = False


@dataclass(frozen=True)
class Concurrency:
    """A workflow's `concurrency:` as Forgejo reads it (`cancel_in_progress` None: not said)."""

    group: str | None
    cancel_in_progress: bool | None

    @classmethod
    def of(cls, workflow: dict[str, Any] | None) -> Concurrency | None:
        spec = (workflow or {}).get("concurrency")
        if isinstance(spec, str):
            return cls(spec, None)
        if isinstance(spec, dict):
            cancel = spec.get("cancel-in-progress")
            return cls(
                str(spec["group"]) if spec.get("group") else None,
                None if cancel is None else cancel is not False and cancel != "false",
            )
        return None


@dataclass
class Repository:
    owner: str
    name: str
    workflows: dict[str, dict[str, Any] | None]  # file name → parsed workflow (None: unknown)
    private: bool = True
    refs: dict[str, str] = field(default_factory=dict)
    commits: set[str] = field(default_factory=set)  # every commit pushed or set as a ref
    next_index: int = 0

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def key(self) -> str:
        return self.full_name.lower()


@dataclass
class EmulatedJob:
    id: int
    run_id: int
    name: str
    runs_on: list[str] = field(default_factory=lambda: list(DEFAULT_RUNNER_LABELS))
    status: str = "waiting"
    attempt: int = 1
    task_id: int = 0
    log: bytearray = field(default_factory=bytearray)
    started: datetime | None = None
    updated: datetime | None = None


@dataclass
class EmulatedRun:
    id: int
    index: int
    repo: str  # Repository.key
    workflow: str
    commit_sha: str
    ref: str
    event: str  # "" for a dispatched run, as Forgejo stores it
    trigger_event: str
    title: str
    created: datetime
    status: str = "waiting"
    started: datetime | None = None
    stopped: datetime | None = None
    jobs: list[EmulatedJob] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    script: Script | None = None
    reads: int = 0
    hidden_for: int = 0  # list requests still to answer without this run
    concurrency: Concurrency | None = None
    cancelled_by: int | None = None
    group: str = ""  # the concurrency group Forgejo computed for it
    mode: str = "unlimited"  # cancel | queue | unlimited
    queued: bool = False  # waits behind an unfinished run of its group

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass
class Exchange:
    """One request the emulator received and what it answered (`status` None: dropped)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # Authorization shown as `<scheme> ***`
    body: bytes
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def response_json(self) -> Any:
        return json.loads(self.response_body) if self.response_body else None


@dataclass
class ExecutorContext:
    """What an executor gets: the run's facts and a way to write its job log."""

    emulator: ForgejoEmulator
    run_id: int
    run_number: int
    workflow: str
    commit_sha: str
    ref: str
    event: str  # what started it: push or workflow_dispatch
    inputs: dict[str, str]
    repository: str = ""  # OWNER/NAME the run belongs to

    def log(self, text: str) -> None:
        self.emulator.append_log(self.run_id, text)

    @property
    def cancelled(self) -> bool:
        return self.emulator.run(self.run_id).status == "cancelled"


Executor = Callable[[ExecutorContext], str]


class _Reply(Exception):
    """Raised inside a route to answer at once."""

    def __init__(
        self,
        status: int,
        body: Any = None,
        *,
        text: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.text = text
        self.headers = headers or {}


def parse_workflow(text: str) -> dict[str, Any]:
    """A workflow file as Forgejo would read it (`on` stays `on`); ValueError when invalid."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"invalid workflow: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict) or not data["jobs"]:
        raise ValueError("invalid workflow: no jobs")
    if True in data and "on" not in data:  # YAML 1.1 reads the key `on` as true
        data["on"] = data.pop(True)
    return data


def _runs_on(job: Any) -> list[str]:
    labels = job.get("runs-on") if isinstance(job, dict) else None
    if isinstance(labels, str):
        return [labels]
    if isinstance(labels, list):
        return [str(label) for label in labels]
    return list(DEFAULT_RUNNER_LABELS)


class ForgejoEmulator:
    def __init__(
        self,
        *,
        owner: str = "GeneralBots",
        repo: str = "gb",
        token: str = "emulator-token",
        scopes: Iterable[str] = (WRITE,),
        version: str = "16.0.0",
        workflows: Iterable[str] | dict[str, str] = ("botserver.yaml", "botui.yaml"),
        jobs: Iterable[str] = ("deploy",),
        appear_after: int = 0,
        executor: Executor | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        zone: tzinfo = timezone.utc,
        private: bool = True,
        require_signin: bool = False,
        runner_labels: Iterable[str] = DEFAULT_RUNNER_LABELS,
    ) -> None:
        self.owner = owner
        self.repo = repo
        self.tokens: dict[str, set[str]] = {token: set(scopes)}
        self.version = version
        self.job_names = list(jobs)
        self.appear_after = appear_after
        self.executor = executor
        self.now = now
        self.zone = zone
        self.require_signin = require_signin
        self.runner_labels = set(runner_labels)
        self.repositories: dict[str, Repository] = {}
        self.exchanges: list[Exchange] = []
        self.on_exchange: Callable[[Exchange], None] | None = None
        # Which workflows a push reported to /_emulator/push starts: (before, sha, ref) -> names;
        # `push_workflows_of[repo key]` for the other repositories.
        self.push_workflows: Callable[[str, str, str], Iterable[str]] | None = None
        self.push_workflows_of: dict[str, Callable[[str, str, str], Iterable[str]]] = {}
        self._runs: dict[int, EmulatedRun] = {}
        self._jobs: dict[int, EmulatedJob] = {}
        self._next = {"run": 100, "job": 500, "task": 900}
        self._faults: list[str] = []  # "500", "503", "drop" ... consumed one per request
        self._lock = threading.RLock()
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self.add_repository(owner, repo, workflows=workflows, private=private)

    # ---- lifecycle

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ForgejoEmulator:
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        serve = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="forgejo-emulator",
            daemon=True,
        )
        runner = threading.Thread(target=self._runner, name="forgejo-emulator-runner", daemon=True)
        self._threads = [serve, runner]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> ForgejoEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what tests and the sandbox drive

    def add_repository(
        self,
        owner: str,
        name: str,
        *,
        workflows: Iterable[str] | dict[str, str] = (),
        private: bool = True,
    ) -> Repository:
        """A repository with its workflow files: names only, or name → YAML text (then its
        `concurrency`, `runs-on` and validity count)."""
        parsed: dict[str, dict[str, Any] | None] = {}
        if isinstance(workflows, dict):
            for file, text in workflows.items():
                try:
                    parsed[file] = parse_workflow(text)
                except ValueError:
                    parsed[file] = {"invalid": True}
        else:
            parsed = dict.fromkeys(workflows)
        repository = Repository(owner, name, parsed, private)
        with self._lock:
            self.repositories[repository.key] = repository
        return repository

    def repository(self, full_name: str | None = None) -> Repository:
        key = (full_name or f"{self.owner}/{self.repo}").lower()
        return self.repositories[key]

    @property
    def workflows(self) -> list[str]:
        """The workflow files of the first repository."""
        return list(self.repository().workflows)

    def set_workflow(self, file: str, text: str, *, repo: str | None = None) -> None:
        with self._lock:
            try:
                self.repository(repo).workflows[file] = parse_workflow(text)
            except ValueError:
                self.repository(repo).workflows[file] = {"invalid": True}

    def add_token(self, token: str, scopes: Iterable[str]) -> None:
        with self._lock:
            self.tokens[token] = set(scopes)

    def job_token_may_read(self, run_id: int, full_name: str) -> bool:
        """A run's automatic token reads its own repository and public ones, nothing else."""
        with self._lock:
            own = self._runs[run_id].repo
            other = self.repositories.get(full_name.lower())
            return full_name.lower() == own or (other is not None and not other.private)

    def on_push(
        self,
        sha: str,
        *,
        ref: str = "refs/heads/main",
        workflows: Iterable[str] | None = None,
        title: str | None = None,
        message: str | None = None,
        script: Script | None = None,
        appear_after: int | None = None,
        repo: str | None = None,
    ) -> list[int]:
        """A push of `sha` to `ref` of `repo` (default: the first repository): one run per
        workflow (default: all), event `push`; none when the head commit's `message` holds one
        of Forgejo's skip strings (case matters, as in Forgejo)."""
        with self._lock:
            repository = self.repository(repo)
            repository.refs[_full_ref(ref)] = sha
            repository.commits.add(sha)
            if any(skip in (message or "") for skip in SKIP_CI):
                return []
            names = repository.workflows if workflows is None else workflows
            return [
                self._create_run(
                    repository,
                    workflow,
                    sha=sha,
                    ref=_full_ref(ref),
                    event="push",
                    title=title or f"Push {sha[:10]} to {ref.removeprefix('refs/heads/')}",
                    script=script,
                    appear_after=self.appear_after if appear_after is None else appear_after,
                )
                for workflow in names
            ]

    def forge_settings(
        self, token: str | None = None, *, timeout: float = 5.0, repo: str | None = None
    ) -> ForgeSettings:
        """Settings for a client of this emulator (its first token unless `token` is given;
        `token=""` for none)."""
        token = next(iter(self.tokens)) if token is None else token
        repository = self.repository(repo)
        return ForgeSettings(
            url=self.url,
            owner=repository.owner,
            repo=repository.name,
            timeout=timeout,
            token=Secret(token) if token else None,
        )

    def set_ref(self, ref: str, sha: str, *, repo: str | None = None) -> None:
        with self._lock:
            self.repository(repo).refs[_full_ref(ref)] = sha
            self.repository(repo).commits.add(sha)

    def fail_next(self, count: int, status: int = 500) -> None:
        """The next `count` API requests answer `status` (an Internal Server Error body)."""
        with self._lock:
            self._faults.extend([str(status)] * count)

    def drop_next(self, count: int) -> None:
        """The next `count` API requests get their connection closed with no answer."""
        with self._lock:
            self._faults.extend(["drop"] * count)

    def run(self, run_id: int) -> EmulatedRun:
        with self._lock:
            return self._runs[run_id]

    @property
    def runs(self) -> list[EmulatedRun]:
        with self._lock:
            return sorted(self._runs.values(), key=lambda r: r.id)

    def job_log(self, job_id: int) -> str:
        with self._lock:
            return self._jobs[job_id].log.decode("utf-8", errors="replace")

    def append_log(self, run_id: int, text: str) -> None:
        with self._lock:
            job = self._runs[run_id].jobs[0]
            job.log.extend(text.encode())
            job.updated = self.now()

    def start_run(self, run_id: int) -> None:
        with self._lock:
            self._start(self._runs[run_id])

    def finish(self, run_id: int, status: str, log: str | None = None) -> None:
        """Finish a run (a held script, or any run) with `status`."""
        with self._lock:
            run = self._runs[run_id]
            self._start(run)
            if log:
                self.append_log(run_id, log)
            self._finish(run, status)

    def requests(self, path_contains: str = "", method: str | None = None) -> list[Exchange]:
        with self._lock:
            return [
                e
                for e in self.exchanges
                if path_contains in e.path and (method is None or e.method == method)
            ]

    # ---- run life

    def _create_run(
        self,
        repository: Repository,
        workflow: str,
        *,
        sha: str,
        ref: str,
        event: str,
        title: str,
        script: Script | None,
        appear_after: int,
        inputs: dict[str, str] | None = None,
    ) -> int:
        self._next["run"] += 1
        repository.next_index += 1
        spec = repository.workflows.get(workflow) or {}
        run = EmulatedRun(
            id=self._next["run"],
            index=repository.next_index,
            repo=repository.key,
            workflow=workflow,
            commit_sha=sha,
            ref=ref,
            event="" if event == DISPATCH else event,
            trigger_event=event,
            title=title,
            created=self.now(),
            inputs=dict(inputs or {}),
            script=script if script is not None or self.executor else Script(),
            hidden_for=appear_after,
            concurrency=Concurrency.of(spec),
        )
        specs = spec.get("jobs") if isinstance(spec.get("jobs"), dict) else None
        names = list(specs) if specs else self.job_names
        for name in names:
            self._next["job"] += 1
            labels = _runs_on(specs[name]) if specs else list(DEFAULT_RUNNER_LABELS)
            job = EmulatedJob(id=self._next["job"], run_id=run.id, name=name, runs_on=labels)
            run.jobs.append(job)
            self._jobs[job.id] = job
        self._runs[run.id] = run
        self._apply_concurrency(run)
        if run.status == "waiting":
            self._offer(run)
        return run.id

    def _configure_concurrency(self, run: EmulatedRun) -> None:
        """Forgejo's group and mode for a new run: an explicit group (its `github.workflow`,
        `github.ref` and `github.event_name` evaluated) or `<ref>_<workflow>_<event>__auto`;
        `cancel-in-progress` unsaid cancels on push only, true cancels, false queues behind the
        group (from v14; v13: no limit), false without a group sets no limit. Before v13 only the
        push default exists."""
        spec = run.concurrency if self.major >= 13 else None
        group = spec.group if spec is not None else None
        for name, value in (
            ("workflow", run.workflow),
            ("ref", run.ref),
            ("event_name", run.trigger_event),
        ):
            for context in ("github", "forgejo", "forge"):
                group = group and re.sub(
                    r"\$\{\{\s*" + context + r"\." + name + r"\s*\}\}", value, group
                )
        run.group = group or f"{run.ref}_{run.workflow}_{run.trigger_event}__auto"
        cancel = spec.cancel_in_progress if spec is not None else None
        if cancel is None:
            run.mode = "cancel" if run.trigger_event == "push" else "unlimited"
        elif cancel:
            run.mode = "cancel"
        else:
            run.mode = "queue" if group and self.major >= 14 else "unlimited"

    def _apply_concurrency(self, run: EmulatedRun) -> None:
        """A new run and the unfinished runs of its group (Forgejo's services/actions)."""
        self._configure_concurrency(run)
        if run.mode == "unlimited":
            return
        others = [
            r
            for r in self._runs.values()
            if r is not run and not r.finished and r.repo == run.repo and r.group == run.group
        ]
        if run.mode == "queue":
            run.queued = bool(others)  # still `waiting`, but no runner is given it
            return
        for other in others:
            other.cancelled_by = run.id
            self._finish(other, "cancelled")

    def _unblock(self, finished: EmulatedRun) -> None:
        """The oldest run queued behind `finished`'s group goes to the runner."""
        group = [
            r
            for r in self._runs.values()
            if r.repo == finished.repo and r.group == finished.group and not r.finished
        ]
        queued = sorted((r for r in group if r.queued), key=lambda r: r.id)
        if queued and not any(not r.queued for r in group):
            queued[0].queued = False
            self._offer(queued[0])

    def _takes(self, run: EmulatedRun) -> bool:
        """The runner takes a job only when its `runs-on` labels are all among the runner's, and
        its run does not wait behind another of its concurrency group."""
        return not run.queued and all(set(job.runs_on) <= self.runner_labels for job in run.jobs)

    def _offer(self, run: EmulatedRun) -> None:
        if run.script is None and self._takes(run):
            self._queue.put(run.id)

    def _start(self, run: EmulatedRun) -> None:
        if run.status != "waiting":
            return
        run.status = "running"
        run.started = self.now()
        for job in run.jobs:
            self._next["task"] += 1
            job.task_id = self._next["task"]
            job.status = "running"
            job.started = job.updated = run.started

    def _finish(self, run: EmulatedRun, status: str) -> None:
        if status not in FINISHED:
            raise ValueError(f"not a finished status: {status!r}")
        if run.finished:
            return  # e.g. cancelled while its executor still ran
        run.status = status
        run.stopped = self.now()
        for job in run.jobs:
            job.status = status
            job.updated = run.stopped
        self._unblock(run)

    def _observe(self, run: EmulatedRun) -> None:
        """An answer shows this run: a scripted run moves on by one read (a run no runner may
        take, or one queued behind another, stays where it is)."""
        script = run.script
        if script is None or script.hold or run.finished:
            return
        if not self._takes(run):
            return
        run.reads += 1
        if run.reads > script.waiting_reads:
            self._start(run)
        if run.reads > script.waiting_reads + script.running_reads:
            if script.log:
                run.jobs[0].log.extend(script.log.encode())
            self._finish(run, script.status)

    def _runner(self) -> None:
        """One runner: takes queued runs in order and hands each to the executor."""
        while True:
            run_id = self._queue.get()
            if run_id is None:
                return
            with self._lock:
                run = self._runs[run_id]
                if run.status != "waiting":
                    continue  # cancelled before a runner took it
                self._start(run)
                context = ExecutorContext(
                    self,
                    run.id,
                    run.index,
                    run.workflow,
                    run.commit_sha,
                    run.ref,
                    run.trigger_event,
                    dict(run.inputs),
                    self.repositories[run.repo].full_name,
                )
            try:
                assert self.executor is not None
                status = self.executor(context)
            except Exception:  # the runner reports a crashed step as a failed job
                context.log(traceback.format_exc())
                status = "failure"
            with self._lock:
                self._finish(run, status if status in FINISHED else "failure")

    # ---- HTTP

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Exchange:
        split = urlsplit(target)
        path = unquote(split.path)
        exchange = Exchange(
            method=method,
            path=path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=_redacted(headers),
            body=body,
        )
        with self._lock:
            fault = self._faults.pop(0) if self._faults and path.startswith("/api/") else None
            if fault == "drop":
                exchange.status = None
            elif fault is not None:
                self._answer(exchange, int(fault), {"message": "emulated server error", "url": ""})
            else:
                try:
                    reply = self._route(method, path, exchange.query, headers, body)
                except _Reply as answer:
                    reply = answer
                self._answer(exchange, reply.status, reply.body, text=reply.text)
                exchange.response_headers.update(reply.headers)
            self.exchanges.append(exchange)
        if self.on_exchange is not None:
            self.on_exchange(exchange)
        return exchange

    def _answer(
        self, exchange: Exchange, status: int, body: Any, *, text: str | None = None
    ) -> None:
        exchange.status = status
        if text is not None:
            exchange.response_headers["Content-Type"] = "text/plain; charset=utf-8"
            exchange.response_body = text.encode()
        elif body is not None:
            exchange.response_headers["Content-Type"] = "application/json;charset=utf-8"
            exchange.response_body = json.dumps(body).encode()

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> _Reply:
        if path == "/_emulator/push" and method == "POST":
            data = json.loads(body or b"{}")
            ref = data.get("ref", "refs/heads/main")
            repository = self.repository(data.get("repo"))
            choose = self.push_workflows_of.get(repository.key)
            if choose is None and repository.key == self.repository().key:
                choose = self.push_workflows
            workflows = None
            if choose is not None:  # e.g. the workflows' `paths:` filters
                workflows = list(choose(data.get("before", ""), data["sha"], ref))
            ids = self.on_push(
                data["sha"],
                ref=ref,
                title=data.get("title"),
                message=data.get("message"),
                workflows=workflows,
                repo=repository.full_name,
            )
            return _Reply(201, {"runs": ids})
        if path == "/api/v1/version" and method == "GET":
            return _Reply(200, {"version": self.version})
        match = re.fullmatch(r"/api/v1/repos/([^/]+)/([^/]+)(/.*)?", path)
        if not match:
            raise _Reply(404, self._not_found())
        scopes = self._authorize(method, headers, query)
        repository = self.repositories.get(f"{match[1]}/{match[2]}".lower())
        if repository is None or (scopes is None and repository.private):
            raise _Reply(404, self._not_found())  # anonymous: a private repository is not there
        rest = match[3] or ""
        if rest == "" and method == "GET":
            self._need(scopes, READ)
            return _Reply(200, self._repository_json(repository))
        routes: list[tuple[str, str, int, Callable[..., _Reply]]] = [
            ("GET", r"/actions/runs", 12, self._list_runs),
            ("GET", r"/actions/runs/(\d+)", 12, self._get_run),
            ("GET", r"/actions/runs/(\d+)/jobs", 16, self._list_jobs),
            ("GET", r"/actions/jobs/(\d+)/logs", 16, self._job_logs),
            ("GET", r"/actions/tasks", 8, self._list_tasks),
            ("POST", r"/actions/workflows/([^/]+)/dispatches", 8, self._dispatch),
        ]
        for verb, pattern, since, route in routes:
            found = re.fullmatch(pattern, rest)
            if found and verb == method and self.major >= since:
                self._need(scopes, WRITE if verb == "POST" else READ)
                return route(
                    *found.groups(),
                    repository=repository,
                    query=query,
                    headers=headers,
                    body=body,
                )
        raise _Reply(404, self._not_found())

    def _authorize(
        self, method: str, headers: dict[str, str], query: dict[str, list[str]]
    ) -> set[str] | None:
        """The token's scopes; None for an anonymous read (allowed on public repositories)."""
        if any(name in query for name in ("token", "access_token")):
            raise _Reply(401, {"message": "token in query string is not accepted", "url": ""})
        value = headers.get("authorization", "")
        if not value:
            if self.require_signin:
                raise _Reply(403, {"message": "Only signed in user is allowed", "url": ""})
            if method != "GET":
                raise _Reply(401, {"message": "token is required", "url": ""})
            return None
        scheme, _, token = value.partition(" ")
        if scheme.lower() not in ("token", "bearer") or token.strip() not in self.tokens:
            raise _Reply(401, {"message": "user does not exist [uid: 0, name: ]", "url": ""})
        return self.tokens[token.strip()]

    def _need(self, scopes: set[str] | None, scope: str) -> None:
        if scopes is None and scope == READ:
            return  # anonymous read of a public repository
        scopes = scopes or set()
        if scope in scopes or (scope == READ and WRITE in scopes):
            return
        raise _Reply(
            403,
            {
                "message": f"token does not have at least one of required scope(s): [{scope}]",
                "url": "",
            },
        )

    def _not_found(self) -> dict[str, Any]:
        return {"errors": [], "message": "The target couldn't be found.", "url": ""}

    # ---- routes

    def _visible_runs(self, repository: Repository) -> list[EmulatedRun]:
        """In the order `/runs` lists them: newest first from v15, oldest first before."""
        return sorted(
            (r for r in self._runs.values() if r.hidden_for <= 0 and r.repo == repository.key),
            key=lambda r: -r.id if self.major >= 15 else r.id,
        )

    def _count_list_request(self, repository: Repository) -> None:
        for run in self._runs.values():
            if run.hidden_for > 0 and run.repo == repository.key:
                run.hidden_for -= 1

    def _run_of(self, repository: Repository, run_id: str) -> EmulatedRun:
        run = self._runs.get(int(run_id))
        if run is None or run.hidden_for > 0 or run.repo != repository.key:
            raise _Reply(404, self._not_found())
        return run

    def _list_runs(
        self, *, repository: Repository, query: dict[str, list[str]], **_: Any
    ) -> _Reply:
        page, limit = _paging(query)
        statuses = query.get("status", [])
        for status in statuses:
            if status not in STATUSES:
                raise _Reply(400, {"message": f"unknown status: {status}", "url": ""})
        runs = self._visible_runs(repository)
        self._count_list_request(repository)
        events = query.get("event", [])
        heads = query.get("head_sha", [])
        numbers = query.get("run_number", [])
        refs = query.get("ref", []) if self.major >= 15 else []
        workflows = query.get("workflow_id", []) if self.major >= 15 else []
        selected = [
            r
            for r in runs
            if (not statuses or r.status in statuses)
            and (not events or r.event in events)
            and (not heads or r.commit_sha == heads[0])
            and (not numbers or str(r.index) == numbers[0])
            and (not refs or r.ref == refs[0])
            and (not workflows or r.workflow == workflows[0])
        ]
        shown = selected[(page - 1) * limit : page * limit]
        for run in shown:
            self._observe(run)
        return _Reply(
            200, {"workflow_runs": [self._run_json(r) for r in shown], "total_count": len(selected)}
        )

    def _get_run(self, run_id: str, *, repository: Repository, **_: Any) -> _Reply:
        run = self._run_of(repository, run_id)
        self._observe(run)
        return _Reply(200, self._run_json(run))

    def _list_jobs(self, run_id: str, *, repository: Repository, **_: Any) -> _Reply:
        run = self._run_of(repository, run_id)
        return _Reply(200, [self._job_json(j) for j in run.jobs])

    def _job_logs(
        self, job_id: str, *, repository: Repository, headers: dict[str, str], **_: Any
    ) -> _Reply:
        job = self._jobs.get(int(job_id))
        if job is None or job.task_id == 0 or self._runs[job.run_id].repo != repository.key:
            raise _Reply(404, self._not_found())
        content = bytes(job.log)
        wanted = _byte_range(headers.get("range", ""), len(content))
        if wanted is None:
            return _Reply(200, text=content.decode("utf-8", errors="replace"))
        start, end = wanted
        return _Reply(
            206,
            text=content[start : end + 1].decode("utf-8", errors="replace"),
            headers={"Content-Range": f"bytes {start}-{end}/{len(content)}"},
        )

    def _list_tasks(
        self, *, repository: Repository, query: dict[str, list[str]], **_: Any
    ) -> _Reply:
        page, limit = _paging(query)
        runs = self._visible_runs(repository)
        self._count_list_request(repository)
        for run in runs:  # a task exists only once a runner took the job: observe waiting runs too
            self._observe(run)
        tasks = [
            (job, run)
            for run in runs
            for job in sorted(run.jobs, key=lambda j: -j.task_id)
            if job.task_id
        ]
        tasks.sort(key=lambda pair: -pair[0].task_id)
        shown = tasks[(page - 1) * limit : page * limit]
        return _Reply(
            200,
            {
                "workflow_runs": [self._task_json(job, run) for job, run in shown],
                "total_count": len(tasks),
            },
        )

    def _dispatch(self, workflow: str, *, repository: Repository, body: bytes, **_: Any) -> _Reply:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise _Reply(422, {"message": "invalid JSON body", "url": ""}) from None
        ref = data.get("ref") or ""
        if not ref:
            raise _Reply(400, {"message": "ref is required", "url": ""})
        if ref.startswith("refs/"):
            sha = repository.refs.get(ref)
            if sha is None:
                raise _Reply(404, self._not_found())
        elif re.fullmatch(r"[0-9a-f]{40}", ref):
            sha = ref if ref in repository.commits else None
        else:
            sha = repository.refs.get(f"refs/heads/{ref}") or repository.refs.get(
                f"refs/tags/{ref}"
            )
        if workflow not in repository.workflows:
            raise _Reply(500, {"message": f"workflow {workflow!r} not found", "url": ""})
        if sha is None:
            raise _Reply(500, {"message": f"ref {ref!r} not found", "url": ""})
        if (repository.workflows[workflow] or {}).get("invalid"):
            raise _Reply(500, {"message": f"workflow {workflow!r} is invalid", "url": ""})
        run_id = self._create_run(
            repository,
            workflow,
            sha=sha,
            ref=ref if ref == sha else _full_ref(ref),
            event=DISPATCH,
            title=workflow.rsplit(".", 1)[0],
            script=None,
            appear_after=0,
            inputs={str(k): str(v) for k, v in (data.get("inputs") or {}).items()},
        )
        if not data.get("return_run_info") or self.major < 11:
            return _Reply(204)
        run = self._runs[run_id]
        return _Reply(
            201, {"id": run.id, "run_number": run.index, "jobs": [j.name for j in run.jobs]}
        )

    # ---- JSON shapes (swagger definitions)

    def _html(self, repository: Repository, suffix: str = "") -> str:
        return f"{self.url}/{repository.full_name}{suffix}"

    def _user_json(self, repository: Repository) -> dict[str, Any]:
        return {
            "id": 1,
            "login": repository.owner,
            "full_name": repository.owner,
            "html_url": f"{self.url}/{repository.owner}",
        }

    def _repository_json(self, repository: Repository) -> dict[str, Any]:
        return {
            "id": 1,
            "name": repository.name,
            "full_name": repository.full_name,
            "owner": self._user_json(repository),
            "default_branch": "main",
            "empty": False,
            "private": repository.private,
            "has_actions": True,
            "html_url": self._html(repository),
            "clone_url": self._html(repository, ".git"),
            # The *user's* access: a read-only token still shows push (token scopes are not
            # looked at here).
            "permissions": {"admin": False, "push": True, "pull": True},
        }

    def _time(self, value: datetime | None) -> str:
        """RFC 3339 in the server's zone; unset is the epoch in that zone."""
        moment = (value or EPOCH).astimezone(self.zone)
        text = moment.strftime("%Y-%m-%dT%H:%M:%S%z")
        if text.endswith("+0000"):
            return text[:-5] + "Z"
        return f"{text[:-2]}:{text[-2:]}"

    def _run_json(self, run: EmulatedRun) -> dict[str, Any]:
        repository = self.repositories[run.repo]
        end = run.stopped or self.now()
        duration = int((end - run.started).total_seconds() * 1e9) if run.started else 0
        updated = max(t for t in (run.created, run.started, run.stopped) if t)
        return {
            "id": run.id,
            "index_in_repo": run.index,
            "ScheduleID": 0,
            "approved_by": 0,
            "commit_sha": run.commit_sha,
            "workflow_id": run.workflow,
            "event": run.event,
            "trigger_event": run.trigger_event,
            "event_payload": "{}",
            "prettyref": run.ref.removeprefix("refs/heads/"),
            "title": run.title,
            "status": run.status,
            "html_url": self._html(repository, f"/actions/runs/{run.index}"),
            "is_fork_pull_request": False,
            "is_ref_deleted": False,
            "need_approval": False,
            "created": self._time(run.created),
            "updated": self._time(updated),
            "started": self._time(run.started),
            "stopped": self._time(run.stopped),
            "duration": duration,
            "trigger_user": self._user_json(repository),
        }

    def _job_json(self, job: EmulatedJob) -> dict[str, Any]:
        return {
            "id": job.id,
            "run_id": job.run_id,
            "repo_id": 1,
            "owner_id": 1,
            "name": job.name,
            "needs": [],
            "runs_on": list(job.runs_on),
            "task_id": job.task_id,
            "status": job.status,
            "attempt": job.attempt,
            "handle": f"job-{job.id}-{job.attempt}",
        }

    def _task_json(self, job: EmulatedJob, run: EmulatedRun) -> dict[str, Any]:
        repository = self.repositories[run.repo]
        return {
            "id": job.task_id,
            "name": job.name,
            "head_branch": run.ref.removeprefix("refs/heads/"),
            "head_sha": run.commit_sha,
            "run_number": run.index,
            "event": run.event,
            "display_title": run.title,
            "status": job.status,
            "workflow_id": run.workflow,
            "url": self._html(repository, f"/actions/runs/{run.index}"),
            "created_at": self._time(run.created),
            "updated_at": self._time(job.updated),
            "run_started_at": self._time(job.started),
        }


class _Handler(BaseHTTPRequestHandler):
    emulator: ForgejoEmulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed ACK

    def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        exchange = self.emulator.handle(self.command, self.path, headers, body)
        if exchange.status is None:
            self.close_connection = True
            return
        self.send_response(exchange.status)
        extra = exchange.response_headers
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(exchange.response_body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(exchange.response_body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


def _full_ref(ref: str) -> str:
    return ref if ref.startswith("refs/") else f"refs/heads/{ref}"


def _redacted(headers: dict[str, str]) -> dict[str, str]:
    shown = dict(headers)
    if "authorization" in shown:
        scheme = shown["authorization"].partition(" ")[0]
        shown["authorization"] = f"{scheme} ***"
    return shown


def _paging(query: dict[str, list[str]]) -> tuple[int, int]:
    try:
        page = max(int((query.get("page") or ["1"])[0]), 1)
        limit = int((query.get("limit") or [str(PAGE_DEFAULT)])[0])
    except ValueError:
        raise _Reply(400, {"message": "page and limit must be numbers", "url": ""}) from None
    return page, min(max(limit, 1), PAGE_MAX)


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The (first, last) byte of a single `Range: bytes=` request; None to send it all."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or size == 0 or (not match[1] and not match[2]):
        return None
    if not match[1]:
        return max(size - int(match[2]), 0), size - 1
    first = int(match[1])
    last = min(int(match[2]), size - 1) if match[2] else size - 1
    return (first, last) if first <= last else None
