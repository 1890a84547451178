"""The runner-side deploy step, `rollback` and `status`, over SSH.

    layout      the target's paths and the exact shell scripts that change it
    session     many commands over one ssh channel
    engine      steps, execute, undo (a transaction; knows nothing of ssh)
    service     how a service stops, starts, is seen running (process, systemd)
    deployment  one deploy, rollback or recovery: its state and its steps
    health      whether what it started runs and answers healthy (part of a Deployment)
    state       what the target has: lock, journal, kept releases (parsed)
    outcome     how a failure is told
    command     `deploy`: the steps in order, the plan, the run
    rollback    `rollback` and `deploy --recover`
    status      `status` and `status --json`

Importing `gbdeploy.deploy.layout` (as `verify` does) loads none of the deploy machinery: the
names below are loaded on first use.
"""

from __future__ import annotations

from typing import Any

# How a deploy puts the new binary in place (see `command.py`), one list for the command line
# and the rendered workflows.
STRATEGIES = ("staged", "seed")

_NAMES = {
    "find_artifact": "command",
    "run_deploy": "command",
    "run_rollback": "rollback",
    "Paths": "layout",
    "ComponentStatus": "status",
    "format_status": "status",
    "gather_status": "status",
    "run_status": "status",
}


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_NAMES[name]}"), name)
