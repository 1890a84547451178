"""`release` through the whole sandbox (sshd, git remotes, the Forgejo emulator, the emulated
runner running the rendered workflow): what the operator is told after it, and what the deploy
record keeps of who released and which CI run deployed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_release_e2e import developer_commit, health, make_sandbox

pytestmark = pytest.mark.slow


@pytest.fixture
def sandbox(
    gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch, forgejo_schema, share_runner_venvs
) -> Iterator:
    yield from make_sandbox("root", monkeypatch, forgejo_schema, share_runner_venvs)


def test_after_a_failed_ci_run_the_hint_verifies_what_still_runs(sandbox, run_gbdeploy):
    before = health(sandbox)["commit"]
    developer_commit(sandbox, "Break the build", **{"service.c": "this is not C\n"})

    result = run_gbdeploy("release", "botserver")

    assert result.code == 3, result.text
    assert f"gbdeploy verify botserver --commit {before}" in result.err
    assert run_gbdeploy("verify", "botserver", "--commit", before).code == 0


def test_history_of_a_release_names_the_person_and_the_ci_run(sandbox, run_gbdeploy):
    """The root pointer commit carries the releaser's git identity; the runner's job env the
    run (GITHUB_RUN_ID, GITHUB_RUN_NUMBER, GITHUB_SERVER_URL, GITHUB_REPOSITORY, GITHUB_ACTOR)."""
    import json

    from gbdeploy_sandbox.gitworld import git

    git(sandbox.git.root, "config", "user.name", "Ana Lima")
    git(sandbox.git.root, "config", "user.email", "ana@example.org")
    commit = developer_commit(sandbox)
    assert run_gbdeploy("release", "botserver").code == 0

    result = run_gbdeploy("history", "botserver", "--json")

    assert result.code == 0, result.text
    newest = json.loads(result.out)["entries"][0]
    assert newest["commit"] == commit and newest["current"]
    assert newest["released_by"] == {
        "git": "Ana Lima <ana@example.org>",
        "forge_user": "GeneralBots",
    }
    [run] = sandbox.forge.runs
    assert newest["ci_run"]["id"] == run.id and newest["ci_run"]["number"] == run.index
    assert newest["ci_run"]["url"] == f"{sandbox.forge.url}/GeneralBots/gb/actions/runs/{run.index}"
    table = run_gbdeploy("history", "botserver").out
    assert "Ana Lima <ana@example.org> (forge: GeneralBots)" in table and f"#{run.index}" in table


@pytest.fixture
def container_sandbox(
    gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch, forgejo_schema, share_runner_venvs
):
    from gbdeploy_sandbox import sandbox as sandbox_module

    directory = Path(sandbox_module.tempfile.mkdtemp(prefix="gbdeploy-e2e-"))
    box = sandbox_module.create(directory, container=True)
    share_runner_venvs(box.runner_home)
    for key, value in box.environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GBDEPLOY_RELEASE_POLL_INTERVAL", "0.2")
    monkeypatch.chdir(box.git.root)
    try:
        yield box
    finally:
        box.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_a_release_into_a_container_goes_through_sudo_and_incus(container_sandbox, run_gbdeploy):
    from gbdeploy_sandbox.procs import pids_running

    box = container_sandbox
    commit = developer_commit(box)

    result = run_gbdeploy("release", "botserver")

    assert result.code == 0, result.text
    assert health(box)["commit"] == commit[:7]
    [pid] = pids_running(box.binary)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"INCUS_STANDIN_CONTAINER=system" in environ  # started inside the container
    logged = (box.directory / "host" / "sudo.log").read_text().splitlines()
    assert logged and all("COMMAND=incus exec system -- sh -c " in line for line in logged)


def test_a_quiet_release_says_its_final_line_only(sandbox, run_gbdeploy):
    commit = developer_commit(sandbox)

    result = run_gbdeploy("-q", "release", "botserver")

    assert result.code == 0, result.text
    [run] = sandbox.forge.runs
    [line] = result.out.splitlines()
    assert line.startswith(f"released botserver {commit[:7]}: CI run {run.id} ")
    assert "success, verified on pragmatismo-system" in line
    assert line.endswith(f"({sandbox.forge.url}/GeneralBots/gb/actions/runs/{run.index})")
