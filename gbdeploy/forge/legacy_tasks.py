"""Runs on Forgejo before v12, which has no `/actions/runs`: read from `/actions/tasks` (one entry
per attempt of a job, no filters), assembled into runs by `models.runs_from_tasks`, then filtered
and paged here. Such a server lists a run only once a runner has taken one of its jobs, and the
run's id is its run number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ForgeNotFound
from .endpoints import ApiRequest, Endpoints
from .models import Run, RunPage, as_dicts, as_int, run_from_tasks, runs_from_tasks

MAX_TASK_PAGES = 4


def read_tasks(
    endpoints: Endpoints,
    read: Callable[[ApiRequest], dict[str, Any]],
    max_pages: int = MAX_TASK_PAGES,
) -> list[dict[str, Any]]:
    """The task entries of the newest `max_pages` pages; `read` sends a request and returns the
    JSON object it was answered with."""
    tasks: list[dict[str, Any]] = []
    for page in range(1, max_pages + 1):
        data = read(endpoints.tasks(page))
        entries = as_dicts(data.get("workflow_runs"))
        tasks.extend(entries)
        if not entries or len(tasks) >= as_int(data.get("total_count")):
            break
    return tasks


def runs_page(
    tasks: list[dict[str, Any]], *, head_sha: str | None, event: str | None, limit: int, page: int
) -> RunPage:
    """One page of the runs in `tasks`, filtered here: `/tasks` takes no filters."""
    runs = [
        r
        for r in runs_from_tasks(tasks)
        if (not head_sha or r.commit_sha == head_sha) and (not event or r.event == event)
    ]
    start = (page - 1) * limit
    return RunPage(runs=runs[start : start + limit], total_count=len(runs))


def numbered_run(tasks: list[dict[str, Any]], run_number: int, *, not_found: str, hint: str) -> Run:
    """The run numbered `run_number`, from the entries of its jobs."""
    jobs = [t for t in tasks if as_int(t.get("run_number")) == run_number]
    if not jobs:
        raise ForgeNotFound(
            f"{not_found}; this server (before Forgejo 12) lists runs only once a runner "
            f"has picked them up, by run number",
            hint=hint,
        )
    return run_from_tasks(jobs)
