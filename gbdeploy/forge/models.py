"""The typed answers of Forgejo's Actions API, read defensively from whatever the server sent.

The API is Forgejo's own (not GitHub's): an `ActionRun` carries its result in `status`, its head
commit in `commit_sha` and its web number in `index_in_repo`; a dispatched run has an empty
`event` and `trigger_event: workflow_dispatch`; unset times come back as the epoch *in the
server's time zone* (`1969-12-31T19:00:00-05:00` is unset too). Servers older than v12 have no
`/runs`: a run is then assembled from the `/tasks` entries of its jobs, and its `id` is its run
number. Every parser here turns a wrong type, a huge number or a broken time into "unknown"
rather than an exception: a hostile or broken server gives a clear error later, never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

PENDING = frozenset({"unknown", "waiting", "running", "blocked"})
FINISHED = frozenset({"success", "failure", "cancelled", "skipped"})
DISPATCH_EVENT = "workflow_dispatch"
# Anything before 1971 is the epoch in some time zone: Forgejo's "not set".
_UNSET_BEFORE = datetime(1971, 1, 1, tzinfo=timezone.utc)
# Longer than any CI run could last; a larger `duration` is junk.
_MAX_DURATION = timedelta(days=3650)
_MAX_ID = 2**63 - 1  # Forgejo's ids are int64
# Terminal control sequences (ANSI CSI/OSC) and other control characters: a server's text must
# not drive the user's terminal.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)
_RFC3339 = re.compile(
    r"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?(?P<tz>Z|z|[+-]\d\d:\d\d)$"
)


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
    trigger_event: str = ""
    ref: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "success"

    @property
    def cause(self) -> str:
        """What started it: `push`, `workflow_dispatch`, … (dispatched runs have no `event`)."""
        return self.event or self.trigger_event

    @property
    def label(self) -> str:
        """How the user sees it: `run 345 botserver.yaml (#12 in the web UI)`; the id first, as
        `gbdeploy wait RUN_ID` takes it. A run seen only through `/tasks` has no id to show."""
        if self.source == "tasks":
            return f"run #{self.index_in_repo} {self.workflow_id}".rstrip()
        return f"run {self.id} {self.workflow_id} (#{self.index_in_repo} in the web UI)".replace(
            "  ", " "
        )

    def elapsed(self, now: datetime) -> timedelta | None:
        if self.duration is not None and self.finished:
            return self.duration
        if self.started is None:
            return None
        end = self.stopped or now
        return max(end - self.started, timedelta(0))

    def as_json(self) -> dict[str, Any]:
        """A plain mapping for `--json` output (times as RFC 3339 UTC, duration in seconds)."""
        data = asdict(self)
        for key in ("created", "started", "stopped"):
            value = data[key]
            data[key] = value.isoformat().replace("+00:00", "Z") if value else None
        data["duration"] = self.duration.total_seconds() if self.duration is not None else None
        data["event"] = self.cause
        return data


@dataclass(frozen=True)
class Job:
    id: int
    run_id: int
    name: str
    status: str
    attempt: int
    task_id: int
    runs_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class DispatchedRun:
    id: int
    run_number: int
    jobs: list[str]


@dataclass(frozen=True)
class RunPage:
    runs: list[Run]
    total_count: int


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 in any zone (Go writes up to 9 fraction digits) → aware UTC datetime; the epoch
    in any zone, impossible dates and junk → None."""
    if not isinstance(value, str):
        return None
    match = _RFC3339.match(value.strip())
    if not match:
        return None
    frac = (match["frac"] or "0")[:6].ljust(6, "0")
    tz = "+00:00" if match["tz"] in ("Z", "z") else match["tz"]
    try:
        parsed = datetime.fromisoformat(f"{match['base']}.{frac}{tz}").astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None
    return None if parsed < _UNSET_BEFORE else parsed


def as_int(value: Any) -> int:
    """A non-negative int64 from the server, or 0 for anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_ID:
        return value
    return 0


def as_str(value: Any) -> str:
    """Text from the server, without control characters (a newline stays)."""
    return printable(value) if isinstance(value, str) else ""


def printable(text: str) -> str:
    """`text` without terminal escape sequences and control characters (tabs and newlines
    stay), as it is shown to the user."""
    return _CONTROL.sub("", text)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in as_list(value) if isinstance(item, dict)]


def as_status(value: Any) -> str:
    """One of Forgejo's statuses, exactly; anything else is `unknown` (still pending)."""
    return value if isinstance(value, str) and value in PENDING | FINISHED else "unknown"


def parse_duration(nanoseconds: Any) -> timedelta | None:
    """Forgejo's `duration` (nanoseconds); None when absent, zero or beyond belief."""
    if isinstance(nanoseconds, bool) or not isinstance(nanoseconds, int | float):
        return None
    if not 0 < nanoseconds < _MAX_DURATION.total_seconds() * 1e9:
        return None
    return timedelta(microseconds=nanoseconds / 1000)


def run_from_api(data: dict[str, Any]) -> Run:
    return Run(
        id=as_int(data.get("id")),
        status=as_status(data.get("status")),
        commit_sha=as_str(data.get("commit_sha")),
        workflow_id=as_str(data.get("workflow_id")),
        index_in_repo=as_int(data.get("index_in_repo")),
        event=as_str(data.get("event")),
        trigger_event=as_str(data.get("trigger_event")),
        ref=as_str(data.get("prettyref")),
        title=as_str(data.get("title")),
        html_url=as_str(data.get("html_url")),
        created=parse_time(data.get("created")),
        started=parse_time(data.get("started")),
        stopped=parse_time(data.get("stopped")),
        duration=parse_duration(data.get("duration")),
    )


def job_from_api(data: dict[str, Any]) -> Job:
    return Job(
        id=as_int(data.get("id")),
        run_id=as_int(data.get("run_id")),
        name=as_str(data.get("name")),
        status=as_status(data.get("status")),
        attempt=as_int(data.get("attempt")),
        task_id=as_int(data.get("task_id")),
        runs_on=tuple(as_str(label) for label in as_list(data.get("runs_on")) if as_str(label)),
    )


def run_from_tasks(tasks: list[dict[str, Any]]) -> Run:
    """One run from the `/tasks` entries of its jobs (latest attempt of each job wins)."""
    latest: dict[str, dict[str, Any]] = {}
    for task in sorted(tasks, key=lambda t: as_int(t.get("id"))):
        latest[as_str(task.get("name"))] = task
    jobs = list(latest.values())
    statuses = [as_status(t.get("status")) for t in jobs]
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
        id=as_int(first.get("run_number")),
        status=status,
        commit_sha=as_str(first.get("head_sha")),
        workflow_id=as_str(first.get("workflow_id")),
        index_in_repo=as_int(first.get("run_number")),
        event=as_str(first.get("event")),
        ref=as_str(first.get("head_branch")),
        title=as_str(first.get("display_title")),
        html_url=as_str(first.get("url")),
        created=parse_time(first.get("created_at")),
        started=begin,
        stopped=stopped,
        duration=(stopped - begin) if stopped and begin else None,
        source="tasks",
    )


def runs_from_tasks(tasks: Iterable[dict[str, Any]]) -> list[Run]:
    by_number: dict[int, list[dict[str, Any]]] = {}
    for task in tasks:
        by_number.setdefault(as_int(task.get("run_number")), []).append(task)
    runs = [run_from_tasks(group) for group in by_number.values()]
    return sorted(runs, key=lambda r: r.id, reverse=True)
