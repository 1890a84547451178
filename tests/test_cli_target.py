"""The command line against a real target (the loopback sshd, the stand-in service): what an
operator reads and the exit code they get from `rollback`, `deploy`, `status` and `history`."""

from __future__ import annotations

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
    assert run_gbdeploy("rollback", "botserver").code == 0
    assert world.health()["commit"] == OLD
