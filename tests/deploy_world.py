"""A deploy target under a temp directory, reached over the loopback sshd, with the stand-in
service: what the deploy tests share (fixtures `world` and `artifacts` are in conftest.py)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from gbdeploy import deploy
from gbdeploy.artifact import file_sha256
from gbdeploy.config import Component, ForgeSettings, Settings
from gbdeploy.output import Reporter
from gbdeploy_sandbox.procs import pids_running, wait_for
from gbdeploy_sandbox.service import Fault, build_service
from gbdeploy_sandbox.settings import standin_component, target_settings

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
        base = standin_component(
            self.binary,
            self.log,
            self.user,
            self.port,
            workflow="botserver.yaml",
            health_timeout=30.0,  # a bound on a poll: generous for a loaded machine
            health_settle=0.2,
        )
        return dataclasses.replace(base, **changes)

    def settings(self, forge: ForgeSettings | None = None, **changes) -> Settings:
        return target_settings(self.sshd, self.component(**changes), lxc=self.lxc, forge=forge)

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
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=10) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def running(self) -> list[int]:
        return pids_running(self.binary)

    def deploy_log(self) -> list[dict]:
        path = Path(f"{self.binary}.deploys.log")
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def deployed(world: World, artifacts: Artifacts, commit: str = OLD, fault=Fault.NONE) -> str:
    """Install and start `commit` by hand (the state before the scenario); its sha256."""
    artifact = artifacts(commit, fault)
    shutil.copyfile(artifact, world.binary)
    world.binary.chmod(0o755)
    shutil.chown(world.binary, user=world.user)
    with open(world.log, "ab") as log:
        subprocess.Popen(
            ["runuser", "-u", world.user, "--", str(world.binary), "--noconsole"],
            cwd=world.binary.parent,
            env={**os.environ, "PORT": str(world.port)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    assert wait_for(lambda: (world.health() or {}).get("commit") == commit)
    return file_sha256(artifact)


def snapshot(world: World) -> dict[str, tuple]:
    """Every file under the target directory with its content hash, inode and mtime."""
    files = {}
    for path in sorted(world.root.rglob("*")):
        st = path.lstat()
        digest = file_sha256(path) if path.is_file() else "dir"
        files[str(path.relative_to(world.root))] = (digest, st.st_ino, st.st_mtime_ns)
    return files


def assert_untouched(world: World, sha: str, pids: list[int], commit: str = OLD) -> None:
    assert (world.health() or {}).get("commit") == commit
    assert file_sha256(world.binary) == sha
    assert world.running() == pids
    assert not Path(f"{world.binary}.lock").exists()


def command_line(world: World, directory: Path) -> list[str]:
    """`python -m gbdeploy` of this worktree, with a gbdeploy.yaml for `world` in `directory`."""
    component = world.component()
    fields = ("binary", "user", "start", "run_as", "log", "health", "env")
    config = {
        "forge": {"url": "http://127.0.0.1:9", "timeout": 2},  # never the real forge from tests
        "ssh": {"config": str(world.sshd.ssh_config)},
        "targets": {"system": {"ssh": world.sshd.alias}},
        "components": {
            "botserver": {
                **{name: getattr(component, name) for name in fields},
                "stop_timeout": component.stop_timeout,
                "health_timeout": component.health_timeout,
                "health_settle": component.health_settle,
            }
        },
    }
    (directory / "gbdeploy.yaml").write_text(json.dumps(config))
    return [sys.executable, "-m", "gbdeploy"]


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


# A `gbdeploy` process whose stdout is a terminal that stalls at the upload's first progress draw
# (as one whose operator pressed Ctrl-S): the upload waits inside that draw, mid-way, until a
# signal ends the wait. Loaded by Python at start (sitecustomize) when GBTEST_STALL_MARKER is set.
STALLING_TERMINAL = """\
import os, sys, time


class StallingTerminal:
    def __init__(self, stream, marker):
        self.stream, self.marker, self.stalled = stream, marker, False

    def isatty(self):
        return True

    def write(self, text):
        if not self.stalled and text.startswith("\\r→ upload"):
            self.stalled = True
            open(self.marker, "w").close()
            for _ in range(1200):  # the deploy's SIGTERM handler raises out of this wait
                time.sleep(0.05)
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


if os.environ.get("GBTEST_STALL_MARKER"):
    sys.stdout = StallingTerminal(sys.stdout, os.environ["GBTEST_STALL_MARKER"])
"""


def stalled_mid_upload(
    world: World, directory: Path, artifact: Path, strategy: str
) -> subprocess.Popen[str]:
    """`gbdeploy deploy --artifact ARTIFACT` (big enough to draw progress) as its own process,
    returned once its upload is stalled mid-way (see STALLING_TERMINAL)."""
    site = directory / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(STALLING_TERMINAL)
    marker = directory / "stalled-mid-upload"
    env = {
        **cli_env(),
        "PYTHONPATH": f"{site}{os.pathsep}{cli_env()['PYTHONPATH']}",
        "GBTEST_STALL_MARKER": str(marker),
        "NO_COLOR": "1",
    }
    options = ("--artifact", str(artifact), "--strategy", strategy)
    process = subprocess.Popen(
        [*command_line(world, directory), "deploy", "botserver", *options],
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if not wait_for(marker.exists, deadline_seconds=120):
        process.kill()
        raise AssertionError(f"the upload never started: {process.communicate(timeout=60)}")
    return process
