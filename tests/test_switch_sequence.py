"""The switch's sequence from its parts, before the deploy layer runs it: under steady load through
a real Caddy, the new binary started on the idle port beside the old one, healthy there, Caddy
switched (backup, validated write, reload) and confirmed from its running config, the old
process stopped by its pid — twice, there and back, with 0 failed requests; and a new binary
that never gets healthy leaves Caddy and the old service as they were, with 0 failed requests.
(The start here is the test's own `runuser`; the deploy layer's start recipe replaces it.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gbdeploy.caddy_switch import CaddySwitch
from gbdeploy.config import SshSettings, Target
from gbdeploy.remote.connection import Remote
from gbdeploy.switch_process import (
    drain_command,
    parse_pids,
    serving_pid_command,
    stop_pid_command,
)
from gbdeploy_sandbox.load import Load
from gbdeploy_sandbox.procs import kill_pids, pids_running, wait_for
from gbdeploy_sandbox.proxy import LoopbackCaddy
from gbdeploy_sandbox.service import Fault
from gbdeploy_sandbox.sshd import LoopbackSshd, free_port
from tests.deploy_world import NEW, OLD, Artifacts

THIRD = "ccccccc3333"
DRAIN = 10.0  # at most: the drain ends once nothing is connected to the old port


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return json.loads(answer.read())
    except OSError:
        return None


@dataclass
class Target_:
    remote: Remote
    binary: Path
    user: str
    caddy: LoopbackCaddy
    live: int
    idle: int

    def install_and_start(self, artifact: Path, port: int) -> None:
        staged = self.binary.with_name("botserver.new")
        shutil.copyfile(artifact, staged)
        staged.chmod(0o755)
        shutil.chown(staged, user=self.user)
        staged.rename(self.binary)  # the old process keeps running from `botserver (deleted)`
        subprocess.Popen(
            ["runuser", "-u", self.user, "--", str(self.binary)],
            env={**os.environ, "PORT": str(port)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def serving(self, port: int) -> list[int]:
        return parse_pids(self.remote.run(serving_pid_command(str(self.binary), port)).stdout)

    def switch(self, commit: str, artifact: Path) -> None:
        """One switch: new on the idle port, strict health there, Caddy, confirm, drain, stop the
        old one by its pid."""
        (old_pid,) = self.serving(self.live)
        self.install_and_start(artifact, self.idle)
        healthy = wait_for(
            lambda: (
                (health(self.idle) or {}).get("status") == "ok"
                and (health(self.idle) or {}).get("commit") == commit
            ),
            deadline_seconds=5,
        )
        if not healthy:
            for pid in self.serving(self.idle) or pids_running(self.binary):
                if pid != old_pid:
                    self.remote.run(stop_pid_command(str(self.binary), pid, 5.0))
            raise RuntimeError(f"{commit} is not healthy on {self.idle}: Caddy left alone")
        caddy_switch = CaddySwitch(str(self.caddy.caddyfile), "127.0.0.1", self.live, self.idle)
        caddy_switch.apply(self.remote)
        caddy_switch.confirm(self.remote)
        self.remote.run(drain_command(self.live, DRAIN))
        self.remote.run(stop_pid_command(str(self.binary), old_pid, 5.0))
        self.live, self.idle = self.idle, self.live

    def through_caddy(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.caddy.url}/health", timeout=5) as answer:
                return json.loads(answer.read())["commit"]
        except OSError:
            return None


@pytest.fixture
def target(
    sshd: LoopbackSshd, remote_root: Path, artifacts: Artifacts, service_user: str
) -> Iterator[Target_]:
    binary = remote_root / "opt/gbo/bin/botserver"
    binary.parent.mkdir(parents=True)
    live, idle = free_port(), free_port()
    caddy = LoopbackCaddy(remote_root / "proxy", upstream_port=live)
    remote = Remote(Target("system", sshd.alias), SshSettings(config=str(sshd.ssh_config)))
    made = Target_(remote, binary, service_user, caddy, live, idle)
    try:
        made.install_and_start(artifacts(OLD), live)
        assert wait_for(lambda: (health(live) or {}).get("commit") == OLD)
        caddy.start()
        yield made
    finally:
        remote.close()
        caddy.stop()
        kill_pids(pids_running(binary))


def test_there_and_back_under_load_fails_no_request(target: Target_, artifacts: Artifacts):
    original = target.caddy.caddyfile.read_text()
    other_sites = original[original.index("# another site") :]
    pid = target.caddy.pid

    with Load(f"{target.caddy.url}/health", clients=6, max_seconds=120) as load:
        assert load.wait_for_requests(50)
        for commit in (NEW, THIRD):
            target.switch(commit, artifacts(commit))
            assert target.through_caddy() == commit
            assert len(pids_running(target.binary)) == 1  # the old one is gone
            assert load.wait_for_requests(50)

    assert load.result.failed == 0, load.result.summary()
    assert {OLD, NEW, THIRD} <= set(load.result.commits)
    assert target.caddy.pid == pid and target.caddy.running()
    text = target.caddy.caddyfile.read_text()
    assert text == original  # back on the first port: the same bytes
    assert text[text.index("# another site") :] == other_sites
    assert len(list(target.caddy.caddyfile.parent.glob("config.bak-*"))) == 2


def test_a_new_binary_that_is_never_healthy_leaves_everything_as_it_was(
    target: Target_, artifacts: Artifacts
):
    before = target.caddy.caddyfile.read_bytes()
    pid = target.caddy.pid
    (old_pid,) = target.serving(target.live)

    with Load(f"{target.caddy.url}/health", clients=6, max_seconds=120) as load:
        assert load.wait_for_requests(50)
        with pytest.raises(RuntimeError, match="not healthy"):
            target.switch(NEW, artifacts(NEW, Fault.NEVER_HEALTHY))
        assert load.wait_for_requests(50)

    assert load.result.failed == 0, load.result.summary()
    assert target.caddy.caddyfile.read_bytes() == before
    assert not list(target.caddy.caddyfile.parent.glob("config.bak-*"))
    assert target.caddy.pid == pid
    assert pids_running(target.binary) == [old_pid]
    assert target.through_caddy() == OLD
