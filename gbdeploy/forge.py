"""Not built yet."""

from __future__ import annotations

from typing import Any

from .errors import NotBuilt


def run_runs(*args: Any, **kwargs: Any) -> None:
    raise NotBuilt("`runs` is not built yet in this version of gbdeploy")


def run_wait(*args: Any, **kwargs: Any) -> None:
    raise NotBuilt("`wait` is not built yet in this version of gbdeploy")
