"""`gbdeploy demo`: what a newcomer runs first, as a real program."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gbdeploy_sandbox import sandbox as sandbox_module
from gbdeploy_sandbox import sshd as sshd_module
from gbdeploy_sandbox.procs import pids_under

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def demo_process(*args: str, ignoring_interrupts: bool = False) -> subprocess.Popen[str]:
    """`gbdeploy demo ARGS` as its own process; `ignoring_interrupts`: started with SIGINT and
    SIGQUIT ignored, as a shell starts a background job (`cmd &` without job control)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    for name in list(env):
        if name.startswith(("GBDEPLOY_", "FORGEJO_")):
            del env[name]
    command = [sys.executable, "-m", "gbdeploy", "demo", *args]
    if ignoring_interrupts:  # an ignored signal stays ignored across exec
        command = ["sh", "-c", 'trap "" INT QUIT; exec "$@"', "sh", *command]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def sandbox_directory(output: str) -> Path:
    found = re.search(r"(/\S+/gbdeploy-sandbox-[^/\s]+)/", output)
    assert found, output
    return Path(found[1])


def test_demo_releases_for_real_and_leaves_nothing_behind():
    process = demo_process()
    output, _ = process.communicate(timeout=300)

    assert process.returncode == 0, output
    released = re.search(r"released and verified: botserver ([0-9a-f]{7}) is live", output)
    assert released, output
    assert f"pass  health reports the commit: status ok, commit {released[1]}" in output
    assert re.search(r"success\s+Deploy botserver", output)
    directory = sandbox_directory(output)
    assert not directory.exists()
    assert pids_under(directory) == []


@pytest.fixture
def demo_in_process(gbdeploy_env, run_gbdeploy, mocker, share_runner_venvs):
    """`gbdeploy demo ARGS` run in this process, its (real) sandbox's runner finding gbdeploy
    installed as a runner that ran a job before does: the variants of the demo each release for
    real, and the fresh install is the demo above's. (exit code, output)."""
    create = sandbox_module.create

    def create_sharing_the_runners_venvs(*args, **kwargs):
        box = create(*args, **kwargs)
        share_runner_venvs(box.runner_home)
        return box

    mocker.patch.object(sandbox_module, "create", side_effect=create_sharing_the_runners_venvs)

    def run(*args: str) -> tuple[int, str]:
        result = run_gbdeploy("demo", *args)
        return result.code, result.text

    return run


def test_demo_with_the_workflow_in_the_component_repository(demo_in_process):
    code, output = demo_in_process("--placement", "component")

    assert code == 0, output
    assert "workflow in the botserver repository" in output
    assert re.search(
        r"find the CI run of [0-9a-f]{12} \(botserver.yaml in GeneralBots/botserver\)", output
    )
    assert re.search(r"released and verified: botserver [0-9a-f]{7} is live", output)
    assert not sandbox_directory(output).exists()


def test_demo_releases_into_a_container_through_sudo_and_incus(demo_in_process):
    code, output = demo_in_process("--container")

    assert code == 0, output
    assert "botserver in the container system, entered with sudo incus" in output
    assert "in container system (sudo incus exec system -- …)" in output
    assert re.search(r"success\s+Deploy botserver", output)
    assert re.search(r"released and verified: botserver [0-9a-f]{7} is live", output)
    directory = sandbox_directory(output)
    assert not directory.exists() and pids_under(directory) == []


def test_demo_refuses_an_unknown_placement():
    process = demo_process("--placement", "elsewhere")
    output, _ = process.communicate(timeout=60)

    assert process.returncode == 2
    assert "--placement: expected root or component" in output


def test_demo_keep_stays_up_until_interrupted_then_cleans_up():
    # Started with SIGINT ignored, as from a script's `cmd &`: Ctrl-C must end it all the same.
    process = demo_process("--keep", ignoring_interrupts=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "the sandbox stays up until you press Ctrl-C" in line:
            break
    output = "".join(lines)
    directory = sandbox_directory(output)
    try:
        assert directory.is_dir()
        assert pids_under(directory), "the released service should still run"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.terminate()  # its SIGTERM cleans the sandbox up; a test must not leave it
            rest, _ = process.communicate(timeout=60)
            rest = "(Ctrl-C did not end it; SIGTERM did)\n" + rest
    assert process.returncode == 0, output + rest
    assert not directory.exists()
    assert pids_under(directory) == []


def test_demo_without_sshd_says_how_to_install_it(run_gbdeploy, mocker):
    mocker.patch.object(sshd_module, "SSHD_CANDIDATES", ())
    mocker.patch.object(sshd_module.shutil, "which", return_value=None)
    mkdtemp = mocker.patch.object(sandbox_module.tempfile, "mkdtemp")

    result = run_gbdeploy("demo")

    assert result.code == 2
    assert "apt-get install -y openssh-server" in result.err
    mkdtemp.assert_not_called()  # refused before anything was made


def test_a_sandbox_whose_sshd_cannot_start_leaves_no_directory(tmp_path, mocker):
    mocker.patch.object(
        sshd_module.LoopbackSshd, "start", side_effect=RuntimeError("sshd did not start")
    )
    directory = tmp_path / "sandbox"
    directory.mkdir()

    with pytest.raises(RuntimeError, match="sshd did not start"):
        sandbox_module.create(directory)

    assert not directory.exists()


def test_demo_without_node_says_how_to_install_it(run_gbdeploy, mocker):
    real_which = shutil.which
    mocker.patch.object(
        sandbox_module.shutil,
        "which",
        side_effect=lambda name, **kw: (
            None if name in ("node", "nodejs") else real_which(name, **kw)
        ),
    )
    made = mocker.patch.object(sandbox_module.tempfile, "mkdtemp")

    result = run_gbdeploy("demo")

    assert result.code == 2
    assert "runs actions/checkout with it" in result.err
    assert "apt-get install -y nodejs" in result.err
    made.assert_not_called()  # refused before anything was made
