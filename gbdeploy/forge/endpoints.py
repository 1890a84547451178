"""Every request gbdeploy makes of Forgejo's API, described once as an `ApiRequest`, and the
`PlannedRequest` `--dry-run` shows for one. `Endpoints` builds them for one repository: the client
sends exactly what the plan prints, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

API_PREFIX = "/api/v1"
PAGE_LIMIT = 50  # Forgejo's maximum page size
READ_SCOPE = "read:repository"
WRITE_SCOPE = "write:repository"


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


@dataclass(frozen=True)
class Endpoints:
    """The requests for repository `owner/repo` at the forge `base_url` (named in messages)."""

    base_url: str
    owner: str
    repo: str

    @property
    def repo_path(self) -> str:
        return f"{self.owner}/{self.repo}"

    def _repo(self, suffix: str = "") -> str:
        owner = quote(self.owner, safe="")
        repo = quote(self.repo, safe="")
        return f"/repos/{owner}/{repo}{suffix}"

    def not_found_hint(self) -> str:
        return (
            f"check forge.url ({self.base_url}) and that {self.repo_path} exists there and the "
            "token may see it (forge.owner/forge.repo in gbdeploy.yaml, or the component's "
            f"workflow_repo; forge.owner ({self.owner}) and forge.repo "
            f"({self.repo}))"
        )

    def repository(self) -> ApiRequest:
        return ApiRequest(
            "GET",
            self._repo(),
            what=f"reading repository {self.repo_path}",
            not_found=f"repository {self.repo_path} was not found at {self.base_url}",
        )

    def version(self) -> ApiRequest:
        return ApiRequest("GET", "/version", what="reading the Forgejo version", passthrough=(404,))

    def runs(
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

    def run(self, run_id: int | str) -> ApiRequest:
        return ApiRequest(
            "GET",
            self._repo(f"/actions/runs/{run_id}"),
            what=f"reading run {run_id} of {self.repo_path}",
            not_found=f"no run with id {run_id} in {self.repo_path} (the id is the one in the "
            "API and in `gbdeploy runs`, not the #number of the web page)",
            passthrough=(404,),
        )

    def jobs(self, run_id: int | str) -> ApiRequest:
        return ApiRequest(
            "GET",
            self._repo(f"/actions/runs/{run_id}/jobs"),
            what=f"listing the jobs of run {run_id}",
            not_found=f"Forgejo lists no jobs for run {run_id} in {self.repo_path} (the jobs "
            "API needs Forgejo 16)",
        )

    def job_log(self, job_id: int | str, tail_bytes: int) -> ApiRequest:
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

    def tasks(self, page: int) -> ApiRequest:
        return ApiRequest(
            "GET",
            self._repo("/actions/tasks"),
            what=f"listing the action tasks of {self.repo_path}",
            not_found=f"repository {self.repo_path} has neither /actions/runs nor /actions/tasks "
            "(Forgejo older than v8, or Actions are disabled for it)",
            params={"limit": PAGE_LIMIT, "page": page},
        )

    def dispatch(self, workflow: str, ref: str, inputs: dict[str, str] | None = None) -> ApiRequest:
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
