"""How a service stops, starts and is seen running (`deploy/service.py`): the fragments and the
parser of their output without a target, and the stop by exact path over sshd."""

from __future__ import annotations

import dataclasses
import getpass
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from gbdeploy.config import Restart
from gbdeploy.deploy import service
from gbdeploy.deploy.layout import Paths, prelude
from gbdeploy.remote import probes
from gbdeploy_sandbox.procs import wait_for
from gbdeploy_sandbox.settings import standin_component
from tests.test_probes import remote, running, service_binary  # noqa: F401 (fixtures)


def component(mode: str = "process"):
    base = standin_component("/srv/bot/botserver", "/srv/bot/botserver.log", "gbuser", 8080)
    if mode == "systemd":
        return dataclasses.replace(base, restart=Restart("systemd", "bot.service"))
    return base


# --- no target ------------------------------------------------------------------------------------
def test_each_restart_mode_has_its_own_service():
    assert isinstance(service.service_of(component()), service.ProcessService)
    assert isinstance(service.service_of(component("systemd")), service.SystemdService)


def test_the_report_of_a_deploy_that_stopped_and_started():
    out = "was-running 1\nstopped 12 13\nlaunched 40\n"
    assert service.parse_report(out) == service.Report(True, "stopped 12 13", "launched 40", False)
    said = service.service_of(component()).detail(out, started=True)
    assert said == "stopped 12 13; launched 40"


def test_the_report_of_a_kill_after_the_timeout_and_of_nothing_running():
    process = service.service_of(component())
    assert process.detail("killed 7\nlaunched 9\n", started=True) == (
        "killed after SIGTERM timeout: 7; launched 9"
    )
    assert process.detail("none\nlaunched 9\n", started=True) == "was not running; launched 9"
    assert process.detail("was-running 0\n", started=False) == "was not running"
    assert process.detail("already-running\n", started=True) == "already running: nothing started"


def test_a_systemd_unit_is_started_by_systemctl_and_only_when_started():
    unit = service.service_of(component("systemd"))
    assert unit.detail("was-running 1\nnone\n", started=True) == "systemctl start bot.service"
    assert unit.detail("was-running 1\nnone\n", started=False) == ""
    assert unit.recipe("root") == "systemctl start bot.service"
    assert "systemctl stop bot.service" in unit.stop_lines()
    assert unit.log_elsewhere() == "journalctl -u bot.service"
    assert service.service_of(component()).log_elsewhere() == ""


def test_the_fragments_are_valid_sh():
    for mode in ("process", "systemd"):
        unit = service.service_of(component(mode))
        for text in (unit.stop_lines(), unit.running_lines(), unit.recipe("root")):
            checked = subprocess.run(["dash", "-n"], input=text, text=True, capture_output=True)
            assert checked.returncode == 0, checked.stderr


# --- over sshd ------------------------------------------------------------------------------------
def test_stop_terms_the_binary_and_spares_everything_else(remote, running, remote_root):  # noqa: F811
    binary, _, process = running
    assert wait_for(lambda: probes.probe_processes(str(binary)).run(remote))
    # A process whose command line holds the LITERAL path, as `pgrep -f "$b" | xargs kill` would
    # match it (the path has spaces and quotes: it is one argv word, exactly the binary's path).
    bystander = subprocess.Popen(["sh", "-c", "sleep 30", str(binary)])
    cmdline = Path(f"/proc/{bystander.pid}/cmdline")
    try:
        # until the child has exec'd, its command line is still empty
        assert wait_for(lambda: str(binary).encode() + b"\0" in cmdline.read_bytes())
        output = remote.run(service.stop_by_path_command(str(binary), 5)).stdout
        assert output.startswith("stopped ")
        assert process.wait(timeout=10) is not None
        assert bystander.poll() is None
        assert remote.run(service.stop_by_path_command(str(binary), 5)).stdout == "none\n"
    finally:
        bystander.kill()
        bystander.wait()


# --- started with default signal dispositions, by each of the two layers alone ------------------
def _ignored(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigIgn in /proc/{pid}/status")


def _bit(sig: signal.Signals) -> int:
    return 1 << (sig - 1)


@pytest.mark.parametrize("gnu_env", [True, False], ids=["gnu-env", "env-without-default-signal"])
def test_a_launched_service_keeps_sigterm_though_the_script_starting_it_ignores_it(
    tmp_path, gnu_env
):
    """The scripts that start a service ignore HUP INT TERM PIPE, and ignored signals survive
    exec. Two layers give the service its defaults back: `launch` sources the recipe in a
    subshell with the traps reset, and GNU `env --default-signal` resets INT and QUIT too (which
    `&` ignores). Each must hold alone: busybox's env and coreutils before 8.31 have no
    --default-signal (here: an `env` first on PATH that refuses it, as they do)."""
    user = getpass.getuser()
    binary = tmp_path / "botserver"
    shutil.copyfile("/bin/sleep", binary)
    binary.chmod(0o755)
    started = dataclasses.replace(
        component(),
        binary=str(binary),
        log=str(tmp_path / "botserver.log"),
        start="./botserver 600",
    )
    started = dataclasses.replace(started, user=user, env={})
    recipe = tmp_path / "recipe"
    recipe.write_text(service.service_of(started).recipe(user))
    paths = Paths(str(binary))
    Path(paths.lock).mkdir()
    shadow = tmp_path / "path"
    shadow.mkdir()
    if not gnu_env:
        (shadow / "env").write_text(
            '#!/bin/sh\ncase $1 in --default-signal*) echo "env: unknown option $1" >&2; '
            'exit 125 ;; esac\nexec /usr/bin/env "$@"\n'
        )
        (shadow / "env").chmod(0o755)
    script = "\n".join(
        ["trap '' HUP INT TERM PIPE", prelude(paths), f"launch {shlex.quote(str(recipe))}"]
    )
    ran = subprocess.run(
        ["sh", "-c", script],
        env={**os.environ, "PATH": f"{shadow}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "launched " in ran.stdout, ran.stderr
    pid = int(ran.stdout.split("launched ", 1)[1].split()[0])
    try:
        assert wait_for(lambda: os.readlink(f"/proc/{pid}/exe") == str(binary))
        ignored = _ignored(pid)
        assert ignored & (_bit(signal.SIGTERM) | _bit(signal.SIGHUP) | _bit(signal.SIGPIPE)) == 0
        if gnu_env:
            assert ignored == 0  # INT and QUIT too, which `&` had ignored
    finally:
        os.kill(pid, signal.SIGKILL)
