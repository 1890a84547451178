"""Not built yet."""

from __future__ import annotations

from typing import Any

from .errors import NotBuilt


def run_deploy(*args: Any, **kwargs: Any) -> None:
    raise NotBuilt("`deploy` is not built yet in this version of gbdeploy")


def run_rollback(*args: Any, **kwargs: Any) -> None:
    raise NotBuilt("`rollback` is not built yet in this version of gbdeploy")


def run_status(*args: Any, **kwargs: Any) -> None:
    raise NotBuilt("`status` is not built yet in this version of gbdeploy")
