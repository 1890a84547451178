"""Not built yet."""

from __future__ import annotations

from typing import Any

from .errors import NotBuilt


def run_verify(*args: Any, **kwargs: Any) -> None:
    raise NotBuilt("`verify` is not built yet in this version of gbdeploy")
