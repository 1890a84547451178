"""The code that runs on a target, as files (read with `importlib.resources`, shipped as package
data). Nothing here is imported on the target: the text is sent over the connection."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def text(name: str) -> str:
    """The far-end file `name` (e.g. `lib.sh`)."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def processes() -> str:
    """`procs.sh`: finding and stopping processes by executable (comment lines left out: the
    target need not read them)."""
    return _stripped(text("procs.sh"))


def probes() -> str:
    """`probes.sh`: the probes' functions (`remote/probes.py`)."""
    return _stripped(text("probes.sh"))


def logs() -> str:
    """`logs.sh`: reading a component's log (`gbdeploy/logs.py`)."""
    return _stripped(text("logs.sh"))


def proxy() -> str:
    """`proxy.sh`: changing the Caddyfile on the proxy target (`gbdeploy/caddy_switch.py`)."""
    return _stripped(text("proxy.sh"))


def doctor() -> str:
    """`doctor.sh`: what doctor's checks read, and its Caddyfile repair (`gbdeploy/doctor/`)."""
    return _stripped(text("doctor.sh"))


def library(*, steps: bool = True) -> str:
    """`procs.sh`, `lib.sh` and `steps.sh`: every function of the deploy's scripts (without
    `steps`, what its checks need: the one sent most often, every health check)."""
    files = [processes(), _stripped(text("lib.sh"))]
    return "\n".join([*files, _stripped(text("steps.sh"))] if steps else files)


@cache
def _stripped(source: str) -> str:
    return "\n".join(
        line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
