"""The command line against a real target (the loopback sshd, the stand-in service): what an
operator reads and the exit code they get from `rollback`, `deploy`, `status` and `history`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deploy_world import NEW, OLD, command_line


@pytest.fixture
def project(world, tmp_path: Path, gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A gbdeploy.yaml for `world` in the current directory."""
    directory = tmp_path / "project"
    directory.mkdir()
    command_line(world, directory)
    monkeypatch.chdir(directory)
    return directory


@pytest.fixture
def terminal(mocker):
    """A person at a terminal, who answers each question with what `answers` holds."""
    mocker.patch("gbdeploy.cli.is_terminal", return_value=True)
    return mocker.patch("builtins.input")


# --- confirmations (issue 23, item 4) -------------------------------------------------------------
def test_rollback_asks_with_the_commits_it_goes_from_and_to_and_a_no_is_exit_0(
    world, artifacts, project, terminal, run_gbdeploy
):
    world.deploy(artifacts(OLD), commit=OLD)
    world.deploy(artifacts(NEW), commit=NEW)
    terminal.return_value = "n"

    result = run_gbdeploy("rollback", "botserver")

    assert result.code == 0, result.text
    question = terminal.call_args.args[0]
    assert f"roll back botserver from {NEW} to {OLD} on " in question
    assert "nothing done" in result.err
    assert world.health()["commit"] == NEW  # nothing changed
    assert [e["action"] for e in world.deploy_log()] == ["deploy", "deploy"]

    terminal.return_value = "y"
    done = run_gbdeploy("rollback", "botserver")
    assert done.code == 0, done.text
    assert world.health()["commit"] == OLD
    # item 5: `verify` alone would expect the submodule's HEAD; the hint names the commit.
    assert f"gbdeploy verify botserver --commit {OLD}" in done.out


# --- hints (issue 23, item 5) ---------------------------------------------------------------------
def test_a_refused_lock_says_who_holds_it_and_undoes_nothing_it_does_not_hold(
    world, artifacts, project, run_gbdeploy
):
    world.deploy(artifacts(OLD), commit=OLD)
    lock = Path(f"{world.binary}.lock")
    lock.mkdir()
    (lock / "holder").write_text(json.dumps({"holder": "ci@runner-7", "pid": 4242}) + "\n")

    result = run_gbdeploy("deploy", "botserver", "--artifact", str(artifacts(NEW)))

    assert result.code == 1, result.text
    assert "another deploy holds the lock" in result.err and "ci@runner-7" in result.err
    assert "undo" not in result.text
    assert lock.is_dir() and "ci@runner-7" in (lock / "holder").read_text()  # still theirs


def test_ctrl_c_in_a_deploy_is_undone_without_telling_to_fix_a_cause(
    world, artifacts, project, run_gbdeploy, mocker
):
    world.deploy(artifacts(OLD), commit=OLD)
    from gbdeploy.deploy.deployment import Deployment

    real = Deployment.wait_until_up
    calls = []

    def interrupted_once(self):
        calls.append(self)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the new binary's health is awaited
        return real(self)

    mocker.patch.object(Deployment, "wait_until_up", interrupted_once)

    result = run_gbdeploy("deploy", "botserver", "--artifact", str(artifacts(NEW)))

    assert result.code == 1, result.text
    assert "interrupted" in result.err and "rolled back" in result.err
    assert "fix the cause" not in result.text
    assert world.health()["commit"] == OLD
