"""Two processes of one binary path on two ports, as during a switch, over the real sshd: the one
on a port is found by that port, and stopping it by pid leaves the other serving."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gbdeploy.config import SshSettings, Target
from gbdeploy.remote.connection import Remote
from gbdeploy.switch_process import (
    drain_command,
    parse_pids,
    serving_pid_command,
    stop_pid_command,
)
from gbdeploy_sandbox.procs import executable_of, kill_pids, pids_running, wait_for
from gbdeploy_sandbox.service import Fault
from gbdeploy_sandbox.sshd import LoopbackSshd, free_port
from tests.deploy_world import NEW, OLD, Artifacts


@dataclass
class Pair:
    remote: Remote
    binary: Path
    ports: list[int]
    pids: list[int]

    def serving(self, port: int) -> list[int]:
        return parse_pids(self.remote.run(serving_pid_command(str(self.binary), port)).stdout)

    def stop(self, pid: int, timeout: float = 5.0) -> str:
        return self.remote.run(stop_pid_command(str(self.binary), pid, timeout)).stdout.strip()


def start(binary: Path, port: int, user: str) -> None:
    subprocess.Popen(
        ["runuser", "-u", user, "--", str(binary)],
        env={**os.environ, "PORT": str(port)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert wait_for(lambda: answers(port))


def answers(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return answer.read().decode()
    except OSError:
        return None


def install(artifact: Path, binary: Path, user: str) -> None:
    """The new binary renamed over the old one's path, as a deploy does."""
    staged = binary.with_name(binary.name + ".new")
    shutil.copyfile(artifact, staged)
    staged.chmod(0o755)
    shutil.chown(staged, user=user)
    staged.rename(binary)


@pytest.fixture
def pair(
    sshd: LoopbackSshd, remote_root: Path, artifacts: Artifacts, service_user: str, request
) -> Iterator[Pair]:
    fault = getattr(request, "param", Fault.NONE)
    binary = remote_root / "opt/gbo/bin/botserver"
    binary.parent.mkdir(parents=True)
    ports = [free_port(), free_port()]
    install(artifacts(OLD, fault), binary, service_user)
    start(binary, ports[0], service_user)
    install(artifacts(NEW), binary, service_user)  # the old one now runs `botserver (deleted)`
    start(binary, ports[1], service_user)
    remote = Remote(Target("system", sshd.alias), SshSettings(config=str(sshd.ssh_config)))
    try:
        yield Pair(remote, binary, ports, sorted(pids_running(binary)))
    finally:
        remote.close()
        kill_pids(pids_running(binary))


def test_each_port_names_the_process_serving_it(pair: Pair):
    old, new = pair.serving(pair.ports[0]), pair.serving(pair.ports[1])
    assert len(old) == len(new) == 1 and old != new
    assert sorted(old + new) == pair.pids
    assert executable_of(old[0]) == f"{pair.binary} (deleted)"
    assert executable_of(new[0]) == str(pair.binary)


def test_a_free_port_or_another_programs_port_names_no_process(pair: Pair):
    assert pair.serving(free_port()) == []
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        assert pair.serving(other.getsockname()[1]) == []


def test_stopping_the_old_pid_leaves_the_new_one_serving(pair: Pair):
    (old,) = pair.serving(pair.ports[0])
    assert pair.stop(old) == f"stopped {old}"
    assert answers(pair.ports[0]) is None
    assert NEW in (answers(pair.ports[1]) or "")
    assert pids_running(pair.binary) == pair.serving(pair.ports[1])


@pytest.mark.parametrize("pair", [Fault.IGNORE_TERM], indirect=True)
def test_an_old_process_that_ignores_term_is_killed_after_the_timeout(pair: Pair):
    (old,) = pair.serving(pair.ports[0])
    assert pair.stop(old, timeout=0.3) == f"killed {old}"
    assert NEW in (answers(pair.ports[1]) or "")


def test_a_pid_that_no_longer_runs_the_binary_is_left_alone(pair: Pair):
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert pair.stop(other.pid) == f"none {other.pid}"
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    assert sorted(pids_running(pair.binary)) == pair.pids


def test_the_drain_ends_when_nothing_is_connected_and_is_bounded_otherwise(pair: Pair):
    port = pair.ports[0]
    assert pair.remote.run(drain_command(port, 30.0)).stdout.strip() == "drained"
    with socket.create_connection(("127.0.0.1", port)):  # a request still being served
        held = pair.remote.run(drain_command(port, 0.5)).stdout.strip()
    assert held == "drain timed out with 1 connections"
