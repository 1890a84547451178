"""The runner-side deploy step, `rollback` and `status`, over SSH.

    layout      the target's paths and the exact shell scripts that change it
    session     many commands over one ssh channel
    engine      steps, execute, undo (a transaction; knows nothing of ssh)
    deployment  deploy, rollback and recovery: every step built in one place
    status      `status` and `status --json`

Importing `gbdeploy.deploy.layout` (as `verify` does) loads none of the deploy machinery: the
names below are loaded on first use.
"""

from __future__ import annotations

from typing import Any

_NAMES = {
    "STRATEGIES": "deployment",
    "find_artifact": "deployment",
    "run_deploy": "deployment",
    "run_rollback": "deployment",
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
