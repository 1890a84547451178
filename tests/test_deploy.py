"""The deploy step, rollback and status against a real sshd, real processes and real files."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

from gbdeploy import deploy
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
from gbdeploy.errors import DeployFailed, LockHeld, RestoreFailed
from gbdeploy.output import Reporter
from gbdeploy.testing.procs import executable_of, kill_pids, pids_running, pids_under, wait_for
from gbdeploy.testing.service import Fault, build_service
from gbdeploy.testing.sshd import free_port
from gbdeploy.transfer import file_sha256

OLD, NEW = "aaaaaaa1111", "bbbbbbb2222"


class Artifacts:
    """Stand-in service binaries, compiled once per (commit, fault, size) for the session."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.built: dict[tuple[str, Fault, int], Path] = {}

    def __call__(self, commit: str, fault: Fault = Fault.NONE, pad_to: int = 0) -> Path:
        key = (commit, fault, pad_to)
        if key not in self.built:
            out = self.directory / f"{commit}-{fault.name.lower()}-{pad_to}" / "botserver"
            self.built[key] = build_service(
                out, commit, fault=fault, pad_to=pad_to, compressible_padding=False
            )
        return self.built[key]


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Artifacts:
    return Artifacts(tmp_path_factory.mktemp("artifacts"))


@dataclasses.dataclass
class World:
    sshd: object
    root: Path
    user: str
    port: int
    lxc: str | None = None

    @property
    def binary(self) -> Path:
        return self.root / "opt/gbo/bin/botserver"

    @property
    def log(self) -> Path:
        return self.root / "opt/gbo/logs/error.log"

    def component(self, **changes) -> Component:
        base = Component(
            name="botserver",
            binary=str(self.binary),
            user=self.user,
            start="./botserver --noconsole",
            run_as="runuser -u {user} --",
            log=str(self.log),
            restart=Restart("process"),
            health=f"http://localhost:{self.port}/health",
            env={"PORT": str(self.port)},
            stop_timeout=5.0,
            health_timeout=15.0,
        )
        return dataclasses.replace(base, **changes)

    def settings(self, **changes) -> Settings:
        return Settings(
            forge=ForgeSettings(url="http://127.0.0.1:9", owner="o", repo="r"),
            git=GitSettings("main", ["origin"], ["alm"], "m"),
            ssh=SshSettings(config=str(self.sshd.ssh_config)),
            release=ReleaseSettings(),
            targets={"system": Target("system", self.sshd.alias, lxc=self.lxc)},
            components={"botserver": self.component(**changes)},
            doctor=DoctorSettings(),
            maintenance=MaintenanceSettings(),
        )

    def deploy(self, artifact: Path, *, out: io.StringIO | None = None, **options):
        changes = options.pop("component", {})
        options.setdefault("commit", NEW)
        return deploy.run_deploy(
            self.settings(**changes),
            "botserver",
            Reporter(stream=out if out is not None else io.StringIO()),
            artifact=str(artifact),
            **options,
        )

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def running(self) -> list[int]:
        return pids_running(self.binary)

    def deploy_log(self) -> list[dict]:
        path = Path(f"{self.binary}.deploys.log")
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def world(sshd, remote_root, service_user):
    """A target directory under remote_root, its own port; every process started from it is
    stopped by pid afterwards."""
    (remote_root / "opt/gbo/bin").mkdir(parents=True)
    (remote_root / "opt/gbo/logs").mkdir(parents=True)
    w = World(sshd, remote_root, service_user, free_port())
    yield w
    kill_pids(pids_under(remote_root))


def deployed(world: World, artifacts: Artifacts, commit: str = OLD) -> str:
    """Deploy `commit` as the running service (the state before the scenario); its sha256."""
    artifact = artifacts(commit)
    world.deploy(artifact, commit=commit)
    assert world.health()["commit"] == commit
    return file_sha256(artifact)


# --- happy paths ----------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["staged", "seed"])
def test_deploy_replaces_the_running_process(world, artifacts, strategy):
    old_sha = deployed(world, artifacts)
    old_pids = world.running()
    out = io.StringIO()

    world.deploy(artifacts(NEW), strategy=strategy, out=out)

    assert world.health()["commit"] == NEW
    assert file_sha256(world.binary) == file_sha256(artifacts(NEW))
    assert file_sha256(Path(f"{world.binary}.prev")) == old_sha
    pids = world.running()
    assert len(pids) == 1 and pids[0] not in old_pids
    assert Path(f"/proc/{pids[0]}").stat().st_uid == Path(world.binary).stat().st_uid
    assert Path(world.binary).owner() == world.user
    assert os.stat(world.binary).st_mode & 0o777 == 0o755
    assert not Path(f"{world.binary}.lock").exists()
    assert not Path(f"{world.binary}.new").exists()
    entry = world.deploy_log()[-1]
    assert entry["result"] == "ok" and entry["strategy"] == strategy and entry["commit"] == NEW
    assert entry["sha256"] == file_sha256(artifacts(NEW))
    assert "→ health … ok" in out.getvalue()


def test_first_deploy_to_an_empty_target(world, artifacts):
    world.deploy(artifacts(OLD), commit=OLD)
    assert world.health()["commit"] == OLD
    assert not Path(f"{world.binary}.prev").exists()
    assert world.deploy_log()[-1]["result"] == "ok"
