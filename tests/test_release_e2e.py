"""The whole `release`, from push to verified deploy, against the sandbox's real parts: bare git
remotes, the Forgejo emulator whose runner runs the rendered workflow's steps (so the real
`gbdeploy deploy` runs over the loopback sshd), and the stand-in service answering its health URL.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gbdeploy_sandbox import sandbox as sandbox_module
from gbdeploy_sandbox.gitworld import git
from tests.forgejo_schema import exchange_violations

pytestmark = pytest.mark.slow


@pytest.fixture
def sandbox(gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch, forgejo_schema) -> Iterator:
    directory = Path(sandbox_module.tempfile.mkdtemp(prefix="gbdeploy-e2e-"))
    box = sandbox_module.create(directory)
    for key, value in box.environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GBDEPLOY_RELEASE_POLL_INTERVAL", "0.2")
    monkeypatch.chdir(box.git.root)
    try:
        yield box
    finally:
        box.close()
        shutil.rmtree(directory, ignore_errors=True)
    problems = exchange_violations(forgejo_schema, box.forge.exchanges)
    assert not problems, "Forgejo API violations:\n" + "\n".join(problems)


def health(box) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{box.port}/health", timeout=5) as answer:
        return json.loads(answer.read())


def developer_commit(box, message: str = "A change", **files: str) -> str:
    world = box.git
    world.switch_submodule_to_branch()
    for name, text in files.items():
        (world.submodule / name).write_text(text)
        git(world.submodule, "add", name)
    if files:
        git(world.submodule, "commit", "--quiet", "-m", message)
        return git(world.submodule, "rev-parse", "HEAD")
    return world.commit_in_submodule(message, filename="VERSION")


def test_release_pushes_builds_deploys_and_verifies_the_new_commit(sandbox, run_gbdeploy):
    before = health(sandbox)["commit"]
    commit = developer_commit(sandbox)

    result = run_gbdeploy("release", "botserver")

    assert result.code == 0, result.text
    assert health(sandbox)["commit"] == commit[:7] != before
    assert sandbox.git.pointer("alm") == commit
    assert "pass  health reports the commit: status ok, commit " + commit[:7] in result.out
    assert "pass  process runs the binary" in result.out
    runs = sandbox.forge.runs
    assert [r.status for r in runs] == ["success"]
    assert runs[0].commit_sha == sandbox.git.ref("alm", "gb")
    assert sandbox.token not in result.text


def test_a_failed_ci_run_exits_3_with_the_build_error_and_the_old_service_untouched(
    sandbox, run_gbdeploy
):
    before = health(sandbox)["commit"]
    developer_commit(sandbox, "Break the build", **{"service.c": "this is not C\n"})

    result = run_gbdeploy("release", "botserver")

    assert result.code == 3, result.text
    assert "service.c" in result.text  # the compiler's complaint, from the job log's tail
    assert "failure" in result.text
    assert health(sandbox)["commit"] == before


def test_a_run_that_never_appears_is_dispatched(sandbox, run_gbdeploy, monkeypatch):
    sandbox.forge.push_workflows = lambda before, sha, ref: []  # the push starts nothing
    monkeypatch.setenv("GBDEPLOY_RELEASE_APPEAR_TIMEOUT", "1")
    commit = developer_commit(sandbox)

    result = run_gbdeploy("release", "botserver")

    assert result.code == 0, result.text
    assert [r.event for r in sandbox.forge.runs] == ["workflow_dispatch"]
    assert health(sandbox)["commit"] == commit[:7]


def test_a_run_that_does_not_finish_in_time_exits_4_and_says_how_to_resume(
    sandbox, run_gbdeploy, monkeypatch
):
    release_runner = threading.Event()
    sandbox.forge.executor = lambda run: "success" if release_runner.wait(60) else "failure"
    monkeypatch.setenv("GBDEPLOY_RELEASE_TIMEOUT", "2")
    developer_commit(sandbox)

    try:
        result = run_gbdeploy("release", "botserver")
    finally:
        release_runner.set()

    assert result.code == 4, result.text
    run_id = sandbox.forge.runs[0].id
    assert f"gbdeploy wait {run_id}" in result.text


def test_a_bad_token_exits_2_and_pushes_nothing(sandbox, run_gbdeploy, monkeypatch):
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", "not-the-token-7f3a")
    refs_before = sandbox.git.refs()
    commit = developer_commit(sandbox)

    result = run_gbdeploy("release", "botserver")

    assert result.code == 2, result.text
    assert "not-the-token-7f3a" not in result.text
    assert "GBDEPLOY_FORGE_TOKEN" in result.text
    refs_after = sandbox.git.refs()
    remote_refs = {k: v for k, v in refs_after.items() if "remotes/" in k or ".git" in k}
    assert remote_refs == {k: v for k, v in refs_before.items() if k in remote_refs}
    assert commit not in remote_refs.values()
    assert sandbox.forge.runs == []


def test_forge_errors_that_recover_do_not_stop_the_release(sandbox, run_gbdeploy):
    sandbox.forge.fail_next(2)  # the first requests, before any push, answer 500
    commit = developer_commit(sandbox)

    result = run_gbdeploy("release", "botserver")

    assert result.code == 0, result.text
    assert health(sandbox)["commit"] == commit[:7]


def test_a_forge_that_keeps_failing_stops_the_release_before_any_push(sandbox, run_gbdeploy):
    sandbox.forge.fail_next(1000)
    commit = developer_commit(sandbox)

    result = run_gbdeploy("release", "botserver")

    assert result.code == 2, result.text
    assert "nothing was pushed" in result.text
    assert sandbox.git.ref("alm", "botserver") != commit


def test_a_run_that_succeeds_without_deploying_fails_verification_naming_the_check(
    sandbox, run_gbdeploy, monkeypatch
):
    sandbox.forge.executor = lambda run: "success"  # CI said yes, but deployed nothing
    an_hour_ago = time.time() - 3600  # when the binary in production was deployed
    os.utime(sandbox.binary, (an_hour_ago, an_hour_ago))
    monkeypatch.setenv("GBDEPLOY_RELEASE_VERIFY_TIMEOUT", "1")
    developer_commit(sandbox)

    result = run_gbdeploy("release", "botserver")

    assert result.code == 1, result.text
    assert "verification failed: binary newer than the run" in result.text
    assert "FAIL  binary contains the commit" in result.text
    assert "FAIL  health reports the commit" in result.text


def test_release_with_dispatch_verifies_even_when_the_push_run_deployed_first(
    sandbox, run_gbdeploy
):
    # The push starts the workflow too; by the time the dispatched run deploys, the binary is
    # already the new one, so that run keeps it (no upload) and verification must still pass.
    commit = developer_commit(sandbox)

    result = run_gbdeploy("release", "botserver", "--dispatch")

    assert result.code == 0, result.text
    assert sorted(r.event for r in sandbox.forge.runs) == ["push", "workflow_dispatch"]
    assert health(sandbox)["commit"] == commit[:7]
