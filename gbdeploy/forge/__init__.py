"""Forgejo Actions, split like httpx: the requests (`endpoints`), how they travel (`transport`),
typed answers (`models`), the client (`client`) with its fallback for servers before v12
(`legacy_tasks`), finding and waiting for runs (`waiting`), and where a component's workflow
runs (`placement`). The `runs` and `wait` commands live in `gbdeploy.runs`."""

from .client import ForgeClient, token_variable
from .endpoints import ApiRequest, PlannedRequest
from .models import DispatchedRun, Job, Run, RunPage, parse_time
from .placement import WorkflowHome, workflow_home
from .waiting import RunSearch, dispatch_run, find_run, planned_requests, wait_for_run

__all__ = [
    "ApiRequest",
    "DispatchedRun",
    "ForgeClient",
    "Job",
    "PlannedRequest",
    "Run",
    "RunPage",
    "RunSearch",
    "WorkflowHome",
    "dispatch_run",
    "find_run",
    "parse_time",
    "planned_requests",
    "token_variable",
    "wait_for_run",
    "workflow_home",
]
