"""`lock`, `start|stop|restart` and `exec` over the real sshd, against the stand-in service."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from gbdeploy import freeze, service_control
from gbdeploy.artifact import file_sha256
from gbdeploy.errors import DeployFailed, LockHeld, RemoteError, UsageError
from gbdeploy.output import Reporter
from gbdeploy_sandbox.procs import wait_for
from gbdeploy_sandbox.service import Fault
from tests.deploy_world import NEW, OLD, assert_untouched, cli_env, command_line, deployed, snapshot


def lock(world, action: str, message: str | None = None, **options) -> str:
    out = io.StringIO()
    freeze.run_lock(
        world.settings(), Reporter(stream=out), "botserver", action, message=message, **options
    )
    return out.getvalue()


def control(world, action: str, **options) -> str:
    out = io.StringIO()
    service_control.run_service(
        world.settings(), Reporter(stream=out), "botserver", action, **options
    )
    return out.getvalue()


# --- lock -----------------------------------------------------------------------------------------
def test_a_frozen_component_refuses_the_next_deploy_with_the_reason(world, artifacts):
    sha = deployed(world, artifacts)
    pids = world.running()
    lock(world, "acquire", "database migration until 14:00")

    with pytest.raises(LockHeld) as refused:
        world.deploy(artifacts(NEW))

    assert refused.value.exit_code == 1
    assert "database migration until 14:00" in str(refused.value)
    assert "gbdeploy lock botserver release" in str(refused.value)
    assert_untouched(world, sha, pids)
    assert "database migration until 14:00" in lock(world, "status")


def test_a_freeze_is_never_taken_over_as_a_stale_deploy_lock(world, artifacts):
    world.deploy(artifacts(OLD), commit=OLD)  # a kept release, which --recover would put back
    sha, pids = file_sha256(world.binary), world.running()
    lock(world, "acquire", "incident 42")

    with pytest.raises(LockHeld) as refused:
        world.deploy(artifacts(NEW), recover=True)

    assert "incident 42" in str(refused.value)
    assert_untouched(world, sha, pids)
    assert "frozen" in lock(world, "status")


def test_released_the_next_deploy_goes_through(world, artifacts):
    deployed(world, artifacts)
    lock(world, "acquire", "holiday")

    said = lock(world, "release")
    world.deploy(artifacts(NEW))

    assert "holiday" in said
    assert (world.health() or {}).get("commit") == NEW
    assert "not frozen" in lock(world, "status")
    assert "nothing to release" in lock(world, "release")


def test_a_second_freeze_is_refused_and_keeps_the_first_reason(world, artifacts):
    deployed(world, artifacts)
    lock(world, "acquire", "first reason")
    with pytest.raises(LockHeld) as refused:
        lock(world, "acquire", "second reason")
    assert "first reason" in str(refused.value)
    assert "first reason" in lock(world, "status")


def test_no_freeze_while_a_deploy_holds_the_lock(world, artifacts):
    deployed(world, artifacts)
    held = Path(f"{world.binary}.lock")
    held.mkdir()
    (held / "holder").write_text('{"holder": "ci@runner", "action": "deploy", "token": "t"}\n')

    with pytest.raises(LockHeld) as refused:
        lock(world, "acquire", "too late")

    assert "ci@runner" in str(refused.value)
    assert not Path(f"{world.binary}.frozen").exists()
    assert "ci@runner" in lock(world, "status")


def test_a_reason_with_shell_characters_is_kept_as_written(world, artifacts):
    deployed(world, artifacts)
    reason = "$(touch pwned) `touch pwned` \"quoted\" 'single' ; touch pwned"
    lock(world, "acquire", reason)
    assert reason in lock(world, "status")
    with pytest.raises(LockHeld) as refused:
        world.deploy(artifacts(NEW))
    assert reason in str(refused.value)
    assert not list(world.root.rglob("pwned")) and not (Path.home() / "pwned").exists()


def test_lock_dry_runs_change_nothing(world, artifacts):
    deployed(world, artifacts)
    before = snapshot(world)
    said = lock(world, "acquire", "maybe", dry_run=True) + lock(world, "release", dry_run=True)
    assert "dry run" in said
    assert snapshot(world) == before


def test_lock_input_is_checked_before_any_connection(world):
    with pytest.raises(UsageError, match="needs a reason"):
        lock(world, "acquire", "  ")
    with pytest.raises(UsageError, match="unknown action"):
        lock(world, "freeze", "x")
    with pytest.raises(UsageError, match="one line"):
        lock(world, "acquire", "two\nlines")


# --- start / stop / restart -----------------------------------------------------------------------
def test_restart_starts_a_new_process_of_the_same_binary_and_leaves_no_trace(world, artifacts):
    sha = deployed(world, artifacts)
    before = world.running()
    log_before = world.deploy_log()

    said = control(world, "restart")

    assert wait_for(lambda: world.running() not in ([], before))
    assert set(world.running()).isdisjoint(before)
    assert (world.health() or {}).get("commit") == OLD
    assert file_sha256(world.binary) == sha
    assert world.deploy_log() == log_before
    assert not Path(f"{world.binary}.lock").exists()
    assert not Path(f"{world.binary}.journal").exists()
    assert "health" in said


def test_stop_then_start(world, artifacts):
    deployed(world, artifacts)

    control(world, "stop")
    assert world.running() == []
    assert world.health() is None

    control(world, "start")
    assert (world.health() or {}).get("commit") == OLD
    assert not Path(f"{world.binary}.lock").exists()


def test_start_of_a_running_service_starts_nothing(world, artifacts):
    deployed(world, artifacts)
    pids = world.running()
    said = control(world, "start")
    assert world.running() == pids
    assert "already running" in said


def test_a_restart_whose_service_does_not_come_up_fails_with_its_log(world, artifacts):
    deployed(world, artifacts)
    # The binary on the target was replaced by hand with one that cannot start.
    broken = artifacts(OLD, Fault.FAIL_AT_START)
    world.binary.unlink()
    shutil.copyfile(broken, world.binary)
    world.binary.chmod(0o755)

    with pytest.raises(DeployFailed) as failed:
        control(world, "restart")

    assert failed.value.exit_code == 1
    assert "cannot start" in str(failed.value)  # the service's own last log line
    assert world.running() == []
    assert not Path(f"{world.binary}.lock").exists()


def test_service_control_is_refused_while_frozen_or_locked(world, artifacts):
    sha = deployed(world, artifacts)
    pids = world.running()
    lock(world, "acquire", "hands off")
    out = io.StringIO()
    with pytest.raises(LockHeld, match="hands off"):
        service_control.run_service(world.settings(), Reporter(stream=out), "botserver", "restart")
    assert "undo" not in out.getvalue()  # nothing was taken, nothing to give back
    assert_untouched(world, sha, pids)
    lock(world, "release")

    held = Path(f"{world.binary}.lock")
    held.mkdir()
    (held / "holder").write_text('{"holder": "ci@runner", "action": "deploy", "token": "t"}\n')
    with pytest.raises(LockHeld, match="ci@runner"):
        control(world, "stop")
    assert world.running() == pids


def test_service_control_dry_run_changes_nothing(world, artifacts):
    deployed(world, artifacts)
    pids = world.running()
    before = snapshot(world)
    said = control(world, "restart", dry_run=True)
    assert "dry run" in said
    assert world.running() == pids
    assert snapshot(world) == before


# --- exec -----------------------------------------------------------------------------------------
def test_exec_runs_as_the_service_user_in_the_binary_directory(world, artifacts, capsys):
    out = io.StringIO()
    hostile = "$(touch pwned) `touch pwned` ; touch pwned"
    service_control.run_exec(
        world.settings(),
        Reporter(stream=out),
        "botserver",
        ["sh", "-c", 'id -un; pwd; echo "$PORT"; printf "%s\\n" "$1"', "sh", hostile],
    )
    user, directory, port, echoed = out.getvalue().splitlines()
    assert user == world.user
    assert directory == str(world.binary.parent)
    assert port == str(world.port)
    assert echoed == hostile
    assert not list(world.root.rglob("pwned")) and not (Path.home() / "pwned").exists()


def test_exec_failure_is_exit_1_naming_the_commands_code(world):
    with pytest.raises(RemoteError) as failed:
        service_control.run_exec(
            world.settings(), Reporter(stream=io.StringIO()), "botserver", ["sh", "-c", "exit 7"]
        )
    assert failed.value.exit_code == 1
    assert "exited 7" in str(failed.value)
    with pytest.raises(UsageError, match="no command"):
        service_control.run_exec(world.settings(), Reporter(stream=io.StringIO()), "botserver", [])


def test_the_commands_from_the_command_line(world, artifacts, tmp_path):
    deployed(world, artifacts)
    program = command_line(world, tmp_path)

    def gbdeploy(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*program, *args],
            cwd=tmp_path,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    frozen = gbdeploy("lock", "botserver", "acquire", "-m", "release freeze")
    assert frozen.returncode == 0, frozen.stderr
    refused = gbdeploy("restart", "botserver", "--yes")
    assert refused.returncode == 1
    assert "release freeze" in refused.stderr
    assert gbdeploy("lock", "botserver", "release").returncode == 0

    ran = gbdeploy("exec", "botserver", "--", "printf", "%s|", "a b", "'c'")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "a b|'c'|"
    assert gbdeploy("exec", "botserver", "--", "false").returncode == 1
    assert gbdeploy("lock", "botserver", "acquire").returncode == 2


def test_a_systemd_component_is_stopped_and_started_through_its_unit(world, artifacts, standins):
    from tests.test_deploy import systemd_unit

    unit, systemd = systemd_unit(world, standins, "./botserver --noconsole")
    world.deploy(artifacts(OLD), commit=OLD, **systemd)
    settings = world.settings(**systemd["component"])
    old_pid = standins.unit_pid(unit)

    def run(action: str) -> None:
        service_control.run_service(settings, Reporter(stream=io.StringIO()), "botserver", action)

    run("restart")
    new_pid = standins.unit_pid(unit)
    assert new_pid not in (None, old_pid) and world.running() == [new_pid]
    assert (world.health() or {}).get("commit") == OLD

    run("stop")
    assert world.running() == [] and world.health() is None
    run("start")
    assert world.running() == [standins.unit_pid(unit)]
    assert (world.health() or {}).get("commit") == OLD


def test_exec_restart_and_lock_reach_into_a_container_target(world, artifacts, standins):
    container = f"pragmatismo-system-{world.port}"
    standins.add_container(container)
    world.lxc = container
    deployed(world, artifacts)
    before = world.running()
    out = io.StringIO()
    words = ["sh", "-c", 'printf "%s|%s\\n" "$LXC_STANDIN_CONTAINER" "$1"', "sh", "it's $(here)"]

    service_control.run_exec(world.settings(), Reporter(stream=out), "botserver", words)
    control(world, "restart")
    lock(world, "acquire", "inside too")

    assert out.getvalue() == f"{container}|it's $(here)\n"
    assert world.running() and set(world.running()).isdisjoint(before)
    [pid] = world.running()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"LXC_STANDIN_CONTAINER={container}".encode() in environ
    with pytest.raises(LockHeld, match="inside too"):
        world.deploy(artifacts(NEW))
