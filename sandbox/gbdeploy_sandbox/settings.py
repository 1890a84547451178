"""Settings for deploying the stand-in service (testing.service) to a LoopbackSshd target, built
directly rather than from a gbdeploy.yaml, for tests and the bench."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gbdeploy.config import (
    Component,
    DoctorSettings,
    ForgeSettings,
    GitSettings,
    MaintenanceSettings,
    ReleaseSettings,
    Restart,
    Settings,
    SshSettings,
    Target,
)

from .sshd import LoopbackSshd

# Nothing listens on the discard port: a deploy never needs the forge.
UNREACHABLE_FORGE = ForgeSettings(url="http://127.0.0.1:9", owner="o", repo="r", timeout=2)


def standin_component(
    binary: str | Path, log: str | Path, user: str, port: int, **changes: Any
) -> Component:
    """Component `botserver`: the stand-in run as a process by `user`, its health on `port`;
    `changes` replace any field."""
    base = Component(
        name="botserver",
        binary=str(binary),
        user=user,
        start="./botserver --noconsole",
        run_as="runuser -u {user} --",
        log=str(log),
        restart=Restart("process"),
        health=f"http://localhost:{port}/health",
        env={"PORT": str(port)},
        stop_timeout=5.0,
    )
    return dataclasses.replace(base, **changes)


def target_settings(
    sshd: LoopbackSshd,
    component: Component,
    *,
    lxc: str | None = None,
    forge: ForgeSettings | None = None,
) -> Settings:
    """One target, `system`, reached through `sshd` (inside container `lxc` when given), with
    one component; the forge is `forge`, else one that nothing answers."""
    return Settings(
        forge=forge or UNREACHABLE_FORGE,
        git=GitSettings("main", ["origin"], ["alm"], "m"),
        ssh=SshSettings(config=str(sshd.ssh_config)),
        release=ReleaseSettings(),
        targets={"system": Target("system", sshd.alias, lxc=lxc)},
        components={component.name: component},
        doctor=DoctorSettings(),
        maintenance=MaintenanceSettings(),
    )
