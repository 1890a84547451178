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
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from gbdeploy_sandbox import sandbox as sandbox_module
from gbdeploy_sandbox.gitworld import git
from tests.forgejo_schema import exchange_violations

pytestmark = pytest.mark.slow


def make_sandbox(
    placement: str,
    monkeypatch: pytest.MonkeyPatch,
    forgejo_schema,
    share_runner_venvs,
    version: str = "16.0.0",
) -> Iterator:
    directory = Path(sandbox_module.tempfile.mkdtemp(prefix="gbdeploy-e2e-"))
    box = sandbox_module.create(directory, placement=placement, forge_version=version)
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
    problems = exchange_violations(forgejo_schema, box.forge.exchanges)
    assert not problems, "Forgejo API violations:\n" + "\n".join(problems)


@pytest.fixture
def sandbox(
    gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch, forgejo_schema, share_runner_venvs
) -> Iterator:
    yield from make_sandbox("root", monkeypatch, forgejo_schema, share_runner_venvs)


@pytest.fixture
def component_sandbox(
    gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch, forgejo_schema, share_runner_venvs
) -> Iterator:
    yield from make_sandbox("component", monkeypatch, forgejo_schema, share_runner_venvs)


def health(box) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{box.port}/health", timeout=5) as answer:
        return json.loads(answer.read())


def developer_commit(box, message: str = "A change", **files: str) -> str:
    world = box.git
    world.switch_submodule_to_branch()
    for name, text in files.items():
        (world.submodule / name).parent.mkdir(parents=True, exist_ok=True)
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
    # as host mode runs it: gbdeploy installed from the committed wheel and hash lock (no
    # gbdeploy on the daemon's PATH), in a checkout removed once the job was done
    job = sandbox.jobs[runs[0].id]
    install = job.step("Install gbdeploy (pinned)")
    assert install.status == "success" and "provided by the runner" not in install.output
    assert list((sandbox.directory / "runner" / "work").iterdir()) == []


@pytest.fixture
def v13_sandbox(
    gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch, forgejo_schema, share_runner_venvs
) -> Iterator:
    yield from make_sandbox(
        "root", monkeypatch, forgejo_schema, share_runner_venvs, version="13.0.0"
    )


def test_a_release_against_forgejo_13_says_what_it_does_to_concurrency(v13_sandbox, run_gbdeploy):
    commit = developer_commit(v13_sandbox)

    result = run_gbdeploy("release", "botserver")

    assert result.code == 0, result.text
    assert "Forgejo 13.0.0 runs a component's deploys side by side" in result.text
    assert "target's lock refuses the second deploy" in result.text
    assert health(v13_sandbox)["commit"] == commit[:7]


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


def test_private_submodules_are_beyond_the_job_tokens_reach(sandbox, run_gbdeploy):
    sandbox.forge.repository("GeneralBots/botserver").private = True
    before = health(sandbox)["commit"]
    developer_commit(sandbox)

    result = run_gbdeploy("release", "botserver")

    assert result.code == 3, result.text
    assert "the job token may not read a private repository (HTTP 403)" in result.text
    assert health(sandbox)["commit"] == before


def test_a_run_that_never_appears_is_dispatched(sandbox, run_gbdeploy, monkeypatch):
    sandbox.forge.push_workflows = lambda before, sha, ref: []  # the push starts nothing
    monkeypatch.setenv("GBDEPLOY_RELEASE_APPEAR_TIMEOUT", "1")
    commit = developer_commit(sandbox)

    result = run_gbdeploy("release", "botserver")

    assert result.code == 0, result.text
    assert [(r.event, r.trigger_event) for r in sandbox.forge.runs] == [("", "workflow_dispatch")]
    assert health(sandbox)["commit"] == commit[:7]


def test_a_run_that_does_not_finish_in_time_exits_4_and_says_how_to_resume(
    sandbox, run_gbdeploy, monkeypatch
):
    release_runner = threading.Event()
    sandbox.forge.executor = lambda run: "success" if release_runner.wait(60) else "failure"
    monkeypatch.setenv("GBDEPLOY_RELEASE_TIMEOUT", "2")  # a window the run is held past
    developer_commit(sandbox)

    try:
        result = run_gbdeploy("release", "botserver")
    finally:
        release_runner.set()

    assert result.code == 4, result.text
    run_id = sandbox.forge.runs[0].id
    assert "gbdeploy release botserver" in [line.strip() for line in result.text.splitlines()]
    assert f"(it pushes nothing new, waits for run {run_id} and verifies)" in result.text


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
    running = health(sandbox)["commit"]
    developer_commit(sandbox)
    refs_before = sandbox.git.refs()

    result = run_gbdeploy("release", "botserver")

    assert result.code == 2, result.text
    assert "nothing was pushed" in result.text
    assert sandbox.git.refs() == refs_before  # no remote, no clone moved
    assert health(sandbox)["commit"] == running


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


def test_release_with_dispatch_follows_the_push_run_instead_of_deploying_twice(
    sandbox, run_gbdeploy
):
    commit = developer_commit(sandbox)

    result = run_gbdeploy("release", "botserver", "--dispatch")

    assert result.code == 0, result.text
    assert "not dispatching botserver.yaml: it runs on a push to main" in result.out
    assert [r.trigger_event for r in sandbox.forge.runs] == ["push"]
    assert sandbox.forge.requests("/dispatches", method="POST")[0].json["ref"] == ""  # the probe
    assert health(sandbox)["commit"] == commit[:7]


def test_dispatch_after_everything_is_pushed_runs_the_workflow_again(sandbox, run_gbdeploy):
    commit = developer_commit(sandbox, "Break the build", **{"service.c": "not C\n"})
    assert run_gbdeploy("release", "botserver").code == 3
    git(sandbox.git.root, "checkout", "--quiet", "--", ".")  # nothing left to commit
    fixed = sandbox.directory / "git" / "work" / "gb" / "botserver" / "service.c"
    assert fixed.read_text() == "not C\n" and commit

    retry = run_gbdeploy("release", "botserver", "--dispatch")

    assert retry.code == 3, retry.text  # the same broken commit, built again by the dispatch
    assert "not dispatching" not in retry.out
    assert [r.trigger_event for r in sandbox.forge.runs] == ["push", "workflow_dispatch"]


def test_dispatch_after_a_rejected_root_push_follows_the_push_run_of_the_retry(
    sandbox, run_gbdeploy
):
    commit = developer_commit(sandbox)
    sandbox.git.reject_pushes("alm", "gb")
    assert run_gbdeploy("release", "botserver", "--dispatch").code == 1  # root commit made, kept
    sandbox.git.accept_pushes("alm", "gb")

    retry = run_gbdeploy("release", "botserver", "--dispatch")

    assert retry.code == 0, retry.text
    assert "not dispatching botserver.yaml" in retry.out  # the retry's root push starts the run
    assert [r.trigger_event for r in sandbox.forge.runs] == ["push"]  # deployed once
    assert health(sandbox)["commit"] == commit[:7]


def test_a_read_only_token_with_dispatch_is_refused_before_any_push(sandbox, run_gbdeploy):
    sandbox.forge.tokens[sandbox.token] = {"read:repository"}
    refs_before = sandbox.git.refs()
    developer_commit(sandbox)

    result = run_gbdeploy("release", "botserver", "--dispatch")

    assert result.code == 2, result.text
    assert "may read GeneralBots/gb but not dispatch" in result.text
    assert "nothing was pushed" in result.text and "write:repository" in result.text
    after = sandbox.git.refs()
    assert {k: v for k, v in after.items() if not k.startswith("work/")} == {
        k: v for k, v in refs_before.items() if not k.startswith("work/")
    }
    assert sandbox.forge.runs == []


def test_a_read_only_token_without_push_run_stops_instead_of_dispatching(
    sandbox, run_gbdeploy, monkeypatch
):
    sandbox.forge.tokens[sandbox.token] = {"read:repository"}
    sandbox.forge.push_workflows = lambda before, sha, ref: []  # the push starts nothing
    monkeypatch.setenv("GBDEPLOY_RELEASE_APPEAR_TIMEOUT", "1")
    developer_commit(sandbox)

    result = run_gbdeploy("release", "botserver")

    assert result.code == 4, result.text
    assert "the token may not dispatch one" in result.text
    assert [e.json["ref"] for e in sandbox.forge.requests("/dispatches")] == [""]


def test_a_workflow_in_both_placements_is_refused_before_any_push(sandbox, run_gbdeploy):
    workflow = (sandbox.git.root / ".forgejo" / "workflows" / "botserver.yaml").read_text()
    running = health(sandbox)["commit"]
    developer_commit(
        sandbox, "Add its own workflow", **{".forgejo/workflows/botserver.yaml": workflow}
    )
    refs_before = sandbox.git.refs()

    result = run_gbdeploy("release", "botserver")

    assert result.code == 2, result.text
    assert "is in both placements" in result.text and "deploying this release twice" in result.text
    assert sandbox.git.refs() == refs_before  # no remote, no clone moved
    assert sandbox.forge.runs == []
    assert health(sandbox)["commit"] == running


def test_a_dispatch_only_copy_in_the_component_repository_is_no_second_deploy(
    sandbox, run_gbdeploy
):
    workflow = yaml.safe_load(
        (sandbox.git.root / ".forgejo" / "workflows" / "botserver.yaml").read_text()
    )
    workflow.pop(True, None)  # YAML 1.1 reads the key `on` as true
    dispatch_only = yaml.safe_dump({"on": {"workflow_dispatch": None}, **workflow})
    commit = developer_commit(
        sandbox, "Add a manual workflow", **{".forgejo/workflows/botserver.yaml": dispatch_only}
    )

    result = run_gbdeploy("release", "botserver")

    assert result.code == 0, result.text
    assert health(sandbox)["commit"] == commit[:7]


def test_ctrl_c_while_waiting_says_to_run_release_again(sandbox, run_gbdeploy, mocker):
    from gbdeploy.forge.client import ForgeClient

    developer_commit(sandbox)
    mocker.patch.object(ForgeClient, "run", side_effect=KeyboardInterrupt)

    result = run_gbdeploy("release", "botserver")

    assert result.code == 130, result.text
    assert "gbdeploy release botserver" in [line.strip() for line in result.text.splitlines()]
    assert "gbdeploy wait" not in result.text


def test_verify_on_its_own_checks_the_running_commit_and_its_age(sandbox, run_gbdeploy):
    running = health(sandbox)["commit"]
    deployed = sandbox.binary.stat().st_mtime
    before = datetime.fromtimestamp(deployed - 3600, tz=timezone.utc).isoformat()
    after = datetime.fromtimestamp(deployed + 3600, tz=timezone.utc).isoformat()

    fresh = run_gbdeploy("verify", "botserver", "--commit", running, "--since", before)
    stale = run_gbdeploy("verify", "botserver", "--commit", running, "--since", after)
    wrong = run_gbdeploy("verify", "botserver", "--commit", "0badc0ffee", "--json")

    assert fresh.code == 0, fresh.text
    assert "pass  binary newer than the run" in fresh.out
    assert f"botserver is verified: {running}" in fresh.out
    assert stale.code == 1 and "verification failed: binary newer than the run" in stale.err
    assert wrong.code == 1
    checks = json.loads(wrong.out)
    assert {c["check"]: c["ok"] for c in checks}["binary contains the commit"] is False
    assert {c["check"]: c["ok"] for c in checks}["process runs the binary"] is True


def test_release_with_the_workflow_in_the_component_repository(component_sandbox, run_gbdeploy):
    box = component_sandbox
    before = health(box)["commit"]
    commit = developer_commit(box)

    plan = run_gbdeploy("release", "botserver", "--dry-run")
    assert plan.code == 0, plan.text
    assert "Forgejo API (GeneralBots/botserver, the submodule's repository" in plan.out
    assert f"/repos/GeneralBots/botserver/actions/runs?head_sha={commit}&event=push" in plan.out

    result = run_gbdeploy("release", "botserver")

    assert result.code == 0, result.text
    assert health(box)["commit"] == commit[:7] != before
    (run,) = box.forge.runs
    assert box.forge.repositories[run.repo].full_name == "GeneralBots/botserver"
    assert run.commit_sha == commit and run.status == "success"  # the submodule commit
    assert "botserver.yaml in GeneralBots/botserver" in result.out
    assert "pass  health reports the commit: status ok, commit " + commit[:7] in result.out
    runs = run_gbdeploy("runs", "--component", "botserver", "--json")
    assert runs.code == 0, runs.text
    (listed,) = json.loads(runs.out)
    assert listed["commit_sha"] == commit and listed["event"] == "push"
    waited = run_gbdeploy("wait", "--sha", commit)
    assert waited.code == 0 and "succeeded" in waited.out
    verified = run_gbdeploy("verify", "botserver")  # its run's start found where the run is
    assert verified.code == 0, verified.text
    assert "pass  binary newer than the run" in verified.out
