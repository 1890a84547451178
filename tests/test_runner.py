"""The emulated Forgejo runner running a rendered workflow's real `run:` steps on real git repos."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml

from gbdeploy.config import DEFAULTS, Settings
from gbdeploy.workflows import render_workflow
from gbdeploy_sandbox.githttp import GitHttpServer
from gbdeploy_sandbox.runner import (
    DAEMON_PATH,
    RunContext,
    UnsupportedWorkflow,
    is_triggered,
    run_job,
)

MAIN_C = 'const char marker[] = "commit:" COMMIT;\nint main(void) { return marker[0] == 0; }\n'
BUILD = 'mkdir -p out && cc -DCOMMIT="\\"$BOTSERVER_COMMIT\\"" -o out/botserver main.c'


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "protocol.file.allow=always", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A root repository with a `botserver` submodule holding a tiny C program."""
    for name in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(name, "t")
    for name in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(name, "t@example.invalid")
    sub = tmp_path / "botserver-src"
    sub.mkdir()
    git(sub, "init", "-q", "-b", "main")
    (sub / "main.c").write_text(MAIN_C)
    git(sub, "add", "main.c")
    git(sub, "commit", "-q", "-m", "service")
    lib = tmp_path / "botlib-src"  # botserver's sibling (components.botserver.siblings)
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    (lib / "lib.h").write_text("#define LIB 1\n")
    git(lib, "add", "lib.h")
    git(lib, "commit", "-q", "-m", "lib")
    root = tmp_path / "gb"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "submodule", "add", "-q", str(sub), "botserver")
    git(root, "submodule", "add", "-q", str(lib), "botlib")
    git(root, "commit", "-q", "-m", "add botserver and botlib")
    return root


@pytest.fixture
def stub_gbdeploy(tmp_path: Path) -> Path:
    """A `gbdeploy` on PATH that records how the deploy step called it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "deploy-call"
    script = bin_dir / "gbdeploy"
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/bash
        {{ pwd; printf '%s\\n' "$@"; echo "identity=$GBDEPLOY_SSH_IDENTITY_FILE"; }} > {record}
        cp -p "$GBDEPLOY_SSH_IDENTITY_FILE" {record}.key 2>/dev/null || true
        cp -p "$4" {record}.artifact 2>/dev/null || true
        """)
    )
    script.chmod(0o755)
    return bin_dir


def settings(build: str = BUILD, artifact: str = "out/botserver") -> Settings:
    components = {
        "botserver": {**DEFAULTS["components"]["botserver"], "build": build, "artifact": artifact},
        "botui": {"enabled": False},
    }
    # The runner's persistent disk (workflows.*) in a temp dir, not the real /opt/gbo.
    disk = Path(tempfile.gettempdir()) / "gbdeploy-test-runner-disk"
    workflows = {
        k: f"{disk}/{os.getpid()}/{k}"
        for k in ("cargo_target_dir", "sccache_dir", "cargo_home", "source_dir")
    }
    return Settings.from_mapping(
        {
            **DEFAULTS,
            "components": components,
            "workflows": {**workflows, "logs_dir": f"{disk}/logs"},
        }
    )


def context(root: Path, bin_dir: Path, **given: object) -> RunContext:
    home = bin_dir.parent / "home"
    home.mkdir(exist_ok=True)
    return RunContext(
        sha=git(root, "rev-parse", "HEAD"),
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home)},
        **given,  # type: ignore[arg-type]
    )


def test_rendered_workflow_builds_with_the_commit_and_deploys(checkout, stub_gbdeploy, tmp_path):
    workflow = tmp_path / "botserver.yaml"
    workflow.write_text(render_workflow(settings(), "botserver"))
    key = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "c2VjcmV0LWtleS1ieXRlcw==\n"
        "-----END OPENSSH PRIVATE KEY-----"
    )
    ctx = context(checkout, stub_gbdeploy, secrets={"DEPLOY_SSH_KEY": key})

    result = run_job(workflow, checkout, ctx)

    assert result.status == "success", result.log
    assert [s.exit_code for s in result.steps] == [0, 0, 0, 0, 0, 0]
    short = git(checkout / "botserver", "rev-parse", "--short", "HEAD")
    full = git(checkout / "botserver", "rev-parse", "HEAD")
    deployed = tmp_path / "deploy-call.artifact"  # the artifact as the deploy step got it
    assert f"commit:{short}".encode() in deployed.read_bytes()  # BOTSERVER_COMMIT reached it
    assert f"at commit {short}" in result.step("Build botserver").output
    call = (tmp_path / "deploy-call").read_text().splitlines()
    assert call[0] == str(checkout)  # run from the root, where gbdeploy.yaml is
    assert call[4].endswith("/gbdeploy-built/botserver")  # a copy outside the shared tree
    assert call[1:4] + call[5:10] == [
        "deploy",
        "botserver",
        "--artifact",
        "--commit",
        full,
        "--strategy",
        "staged",
        "--yes",  # on the runner's PTY nobody answers a question
    ]
    identity = call[10].removeprefix("identity=")
    held = tmp_path / "deploy-call.key"  # the key as the deploy saw it
    assert held.read_text() == key + "\n"
    assert held.stat().st_mode & 0o777 == 0o600
    assert not Path(identity).exists()  # removed when the deploy step ended
    assert "c2VjcmV0LWtleS1ieXRlcw" not in result.log  # the secret is never in the log


def test_the_deploy_key_is_gone_as_soon_as_the_deploy_step_ends(checkout, stub_gbdeploy):
    # The job's temp dir goes only when the whole job ends: a step after the deploy (one a
    # person adds, say a notification) must not find the production key there.
    workflow = yaml.safe_load(render_workflow(settings(), "botserver"))
    workflow["jobs"]["deploy"]["steps"].append(
        {"name": "After the deploy", "run": 'ls -A "$RUNNER_TEMP/gbdeploy-ssh"'}
    )
    ctx = context(checkout, stub_gbdeploy, secrets={"DEPLOY_SSH_KEY": "a-private-key"})

    result = run_job(workflow, checkout, ctx)

    assert result.ok, result.log
    assert "deploy_key" not in result.step("After the deploy").output


def test_dispatch_input_chooses_the_strategy(checkout, stub_gbdeploy, tmp_path):
    workflow = render_workflow(settings(), "botserver")
    ctx = context(
        checkout, stub_gbdeploy, event_name="workflow_dispatch", inputs={"strategy": "seed"}
    )
    result = run_job(workflow, checkout, ctx)
    assert result.ok, result.log
    call = (tmp_path / "deploy-call").read_text().splitlines()
    assert call[-3:] == ["seed", "--yes", "identity="]  # no key secret: the runner's ~/.ssh applies


def test_a_failing_build_stops_the_job(checkout, stub_gbdeploy, tmp_path):
    workflow = render_workflow(settings(build="cc -o out/botserver missing.c"), "botserver")
    result = run_job(workflow, checkout, context(checkout, stub_gbdeploy))

    assert result.status == "failure"
    build = result.step("Build botserver")
    assert build.status == "failure" and build.exit_code != 0
    assert "missing.c" in build.output
    assert [s.status for s in result.steps[3:]] == ["skipped"] * 3
    assert not (tmp_path / "deploy-call").exists()  # nothing was deployed
    assert "==> Build botserver: failure" in result.log


def test_a_build_without_its_artifact_fails_with_the_config_key(checkout, stub_gbdeploy):
    workflow = render_workflow(settings(build="true"), "botserver")
    result = run_job(workflow, checkout, context(checkout, stub_gbdeploy))
    assert result.step("Build botserver").exit_code == 1
    assert "components.botserver.artifact" in result.log


def test_pipefail_is_on_with_shell_bash(checkout, stub_gbdeploy):
    workflow = {
        "on": "push",
        "jobs": {
            "j": {
                "runs-on": "x",
                "defaults": {"run": {"shell": "bash"}},
                "steps": [{"name": "pipe", "run": "false | cat\necho after"}],
            }
        },
    }
    result = run_job(workflow, checkout, context(checkout, stub_gbdeploy))
    assert result.step("pipe").exit_code == 1
    assert "after" not in result.log


def test_a_step_without_shell_runs_with_pipefail_too(checkout, stub_gbdeploy):
    result = run_job(
        one_step("false | cat\necho after"), checkout, context(checkout, stub_gbdeploy)
    )

    assert result.step("s").exit_code == 1
    assert "after" not in result.log


def test_checkout_must_be_at_the_sha(checkout, stub_gbdeploy):
    workflow = render_workflow(settings(), "botserver")
    ctx = RunContext(sha="0" * 40, env={"PATH": f"{stub_gbdeploy}:{os.environ['PATH']}"})
    result = run_job(workflow, checkout, ctx)
    assert result.steps[0].status == "failure"
    assert "not " + "0" * 40 in result.log


def test_unknown_expressions_and_actions_fail_before_anything_runs(
    checkout, stub_gbdeploy, tmp_path
):
    marker = tmp_path / "ran"
    for step in (
        {"run": f"touch {shlex.quote(str(marker))}; echo ${{{{ github.actor_id }}}}"},
        {"uses": "actions/cache@v4"},
    ):
        workflow = {
            "on": "push",
            "jobs": {
                "j": {"runs-on": "x", "steps": [{"run": f"touch {shlex.quote(str(marker))}"}, step]}
            },
        }
        with pytest.raises(UnsupportedWorkflow):
            run_job(workflow, checkout, context(checkout, stub_gbdeploy))
    assert not marker.exists()


def test_push_trigger_follows_the_branch_and_the_submodule_path():
    workflow = render_workflow(settings(), "botserver")
    assert is_triggered(workflow, "push", changed_paths=["botserver"])
    assert is_triggered(workflow, "push", changed_paths=["README.md", "botserver/src/main.rs"])
    assert not is_triggered(workflow, "push", changed_paths=["botui"])
    assert not is_triggered(workflow, "push", changed_paths=["botserver-old"])
    assert not is_triggered(workflow, "push", ref="refs/heads/dev", changed_paths=["botserver"])
    assert is_triggered(workflow, "workflow_dispatch")


def paths_workflow(**filters: list[str]) -> dict:
    return {"on": {"push": filters}, "jobs": {"j": {"runs-on": "gbo", "steps": [{"run": "true"}]}}}


def test_path_filters_follow_acts_rules():
    pointer_change = ["botserver"]  # what `git diff-tree --name-only -r` lists for a submodule
    assert not is_triggered(
        paths_workflow(paths=["botserver/**"]), "push", changed_paths=pointer_change
    )
    assert is_triggered(
        paths_workflow(paths=["botserver", "botserver/**"]), "push", changed_paths=pointer_change
    )
    negated = paths_workflow(paths=["botserver/**", "!botserver/docs/**"])
    assert not is_triggered(negated, "push", changed_paths=["botserver/docs/a.md"])
    assert is_triggered(negated, "push", changed_paths=["botserver/docs/a.md", "botserver/x.rs"])
    ignored = paths_workflow(**{"paths-ignore": ["**.md"]})
    assert not is_triggered(ignored, "push", changed_paths=["README.md", "botserver/a.md"])
    assert is_triggered(ignored, "push", changed_paths=["README.md", "botserver"])
    optional = paths_workflow(paths=["botservers?"])  # `?`: zero or one of the preceding char
    assert is_triggered(optional, "push", changed_paths=["botserver"])
    assert not is_triggered(optional, "push", changed_paths=["botserverX"])


def test_secret_values_are_masked_in_the_log(checkout, stub_gbdeploy):
    workflow = {
        "on": "push",
        "jobs": {
            "j": {
                "runs-on": "x",
                "steps": [
                    {
                        "name": "leak",
                        "env": {"TOKEN": "${{ secrets.TOKEN }}"},
                        "run": 'echo "t=$TOKEN"',
                    }
                ],
            }
        },
    }
    ctx = context(checkout, stub_gbdeploy, secrets={"TOKEN": "hunter2-hunter2"})
    result = run_job(workflow, checkout, ctx)
    assert result.ok
    assert "t=***" in result.step("leak").output
    assert "hunter2" not in result.log
    assert "t=hunter2-hunter2" in result.step("leak").raw_output  # what the step really wrote


def test_the_rendered_workflow_never_writes_a_secret_to_any_steps_raw_output(
    checkout, stub_gbdeploy
):
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA-secret\n-----END-----"
    hosts = "127.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyValue"
    ctx = context(
        checkout, stub_gbdeploy, secrets={"DEPLOY_SSH_KEY": key, "DEPLOY_KNOWN_HOSTS": hosts}
    )

    result = run_job(render_workflow(settings(), "botserver"), checkout, ctx)

    assert result.ok, result.log
    for step in result.steps:
        for piece in ("b3BlbnNzaC1rZXktdjEAAAAA-secret", "AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyValue"):
            assert piece not in step.raw_output, step.name


def one_step(run: str) -> dict:
    return {"on": "push", "jobs": {"j": {"runs-on": "x", "steps": [{"name": "s", "run": run}]}}}


def test_the_log_streams_line_by_line(checkout, stub_gbdeploy):
    lines: list[str] = []
    result = run_job(
        one_step("echo one\necho two >&2"),
        checkout,
        context(checkout, stub_gbdeploy),
        on_output=lines.append,
    )
    assert result.ok
    assert "one\n" in lines and "two\n" in lines
    assert "".join(lines) == result.log


def test_a_job_over_its_timeout_is_killed_and_fails(checkout, stub_gbdeploy):
    result = run_job(
        one_step("echo started\nsleep 600"),
        checkout,
        context(checkout, stub_gbdeploy),
        timeout=10,  # bounds a 600 s step; long enough for bash to start on a loaded machine
    )
    assert result.status == "failure"
    assert "the job timed out" in result.log and "started" in result.log


def test_a_background_process_holding_the_output_does_not_hang_the_step(
    checkout, stub_gbdeploy, tmp_path
):
    pid_file = tmp_path / "pid"
    result = run_job(
        one_step(f"sleep 60 &\necho $! > {shlex.quote(str(pid_file))}\necho done"),
        checkout,
        context(checkout, stub_gbdeploy),
        timeout=30,
    )
    try:
        assert result.ok and "done" in result.log
    finally:
        os.kill(int(pid_file.read_text()), 9)  # the exact process the step left behind


def test_a_cancelled_run_kills_its_running_step_and_skips_the_rest(
    checkout, stub_gbdeploy, tmp_path
):
    marker = tmp_path / "deployed"
    workflow = {
        "on": "push",
        "jobs": {
            "j": {
                "runs-on": "gbo",
                "steps": [
                    {"name": "deploy", "run": "echo stopping the service\nsleep 600"},
                    {"name": "start", "run": f"touch {shlex.quote(str(marker))}"},
                ],
            }
        },
    }
    cancelled = False

    def watch(text: str) -> None:
        nonlocal cancelled
        cancelled = cancelled or "stopping the service" in text  # a newer push arrives now

    result = run_job(
        workflow,
        checkout,
        context(checkout, stub_gbdeploy),
        on_output=watch,
        cancelled=lambda: cancelled,
        timeout=300,
    )

    assert result.status == "cancelled"
    assert result.step("deploy").exit_code != 0 and "the run was cancelled" in result.log
    assert result.step("start").status == "skipped" and not marker.exists()


def test_checkout_on_a_host_mode_runner_needs_node(checkout, stub_gbdeploy):
    ctx = RunContext(sha=git(checkout, "rev-parse", "HEAD"), env={"PATH": str(stub_gbdeploy)})

    result = run_job(render_workflow(settings(), "botserver"), checkout, ctx)

    assert result.steps[0].status == "failure"
    assert "needs `node` on PATH" in result.log
    assert all(step.status == "skipped" for step in result.steps[1:])


# --- host mode as it really is: PTY, daemon environment, no prompts ------------------------------
def test_every_step_runs_on_a_raw_pty_that_is_its_controlling_terminal(checkout, tmp_path):
    script = textwrap.dedent("""\
        if [ -t 0 ] && [ -t 1 ] && [ -t 2 ]; then echo "terminal: yes"; fi
        if exec 3</dev/tty; then echo "controlling terminal: yes"; fi
        if stty -a </dev/tty | grep -q -- "-icanon"; then echo "raw: yes"; fi
        IFS= read -r -n 1 byte
        printf 'keep-alive: %q\\n' "$byte"
        echo "PATH=$PATH"
        if ! command -v gbdeploy; then echo "no gbdeploy"; fi
        """)
    home = tmp_path / "home"
    home.mkdir()
    ctx = RunContext(sha=git(checkout, "rev-parse", "HEAD"), env={"HOME": str(home)})
    result = run_job(one_step(script), checkout, ctx, timeout=60)
    assert result.ok, result.log
    for said in ("terminal: yes", "controlling terminal: yes", "raw: yes", "no gbdeploy"):
        assert said in result.log
    assert "keep-alive: $'\\004'" in result.log  # the runner's ^D, not an end of input
    assert f"PATH={DAEMON_PATH}\n" in result.log  # the daemon's, not this shell's


def test_a_question_on_the_terminal_waits_until_the_job_times_out(checkout, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    ctx = RunContext(sha=git(checkout, "rev-parse", "HEAD"), env={"HOME": str(home)})
    asking = one_step('printf "deploy? [y/N] "\nread -r answer\necho "answered $answer"')
    result = run_job(asking, checkout, ctx, timeout=5)
    assert result.status == "failure"
    assert "the job timed out" in result.log and "answered" not in result.log


def cargo_on(bin_dir: Path, *, sccache: bool) -> None:
    """A `cargo` (that builds the C stand-in) and maybe an `sccache` in `bin_dir`."""
    bin_dir.mkdir(parents=True)
    cargo = bin_dir / "cargo"
    cargo.write_text('#!/bin/sh\necho "cargo $* (wrapper: ${RUSTC_WRAPPER:-none})"\n' + BUILD)
    cargo.chmod(0o755)
    if sccache:
        (bin_dir / "sccache").write_text('#!/bin/sh\nexec "$@"\n')
        (bin_dir / "sccache").chmod(0o755)


def test_the_build_finds_cargo_in_the_toolchain_path_not_on_the_daemons_path(checkout, tmp_path):
    home = tmp_path / "home"
    cargo_on(home / ".cargo" / "bin", sccache=True)
    ctx = RunContext(sha=git(checkout, "rev-parse", "HEAD"), env={"HOME": str(home)})
    workflow = render_workflow(settings(build="cargo build -p botserver"), "botserver")

    build = run_job(workflow, checkout, ctx, timeout=120).step("Build botserver")

    assert build.status == "success", build.output
    assert f"cargo: {home}/.cargo/bin/cargo" in build.output
    assert f"sccache: {home}/.cargo/bin/sccache" in build.output
    assert f"(wrapper: {home}/.cargo/bin/sccache)" in build.output
    assert "artifact: " in build.output and build.output.count("the build did not") == 0


def test_without_sccache_the_build_says_so_and_without_cargo_it_names_the_path(checkout, tmp_path):
    home = tmp_path / "home"
    cargo_on(home / ".cargo" / "bin", sccache=False)
    ctx = RunContext(sha=git(checkout, "rev-parse", "HEAD"), env={"HOME": str(home)})
    workflow = render_workflow(settings(build="cargo build -p botserver"), "botserver")
    build = run_job(workflow, checkout, ctx, timeout=120).step("Build botserver")
    assert build.status == "success", build.output
    assert "building without it" in build.output and "(wrapper: none)" in build.output

    shutil.rmtree(home / ".cargo")
    build = run_job(workflow, checkout, ctx, timeout=120).step("Build botserver")
    assert build.status == "failure"
    assert "cargo is not on the runner's PATH" in build.output
    assert f"{home}/.cargo/bin:{DAEMON_PATH}" in build.output  # the PATH it looked in
    assert "workflows.toolchain_path" in build.output


def test_an_install_from_a_repository_that_answers_401_fails_fast_and_says_why(checkout, tmp_path):
    bare = tmp_path / "git" / "GeneralBots" / "gbdeploy.git"
    git(tmp_path, "clone", "-q", "--bare", str(checkout / "botserver"), str(bare))
    commit = git(bare, "rev-parse", "HEAD")
    lock = checkout / ".forgejo" / "gbdeploy" / "requirements.txt"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    home = tmp_path / "home"
    home.mkdir()
    ctx = RunContext(sha=git(checkout, "rev-parse", "HEAD"), env={"HOME": str(home)})
    with GitHttpServer(tmp_path / "git", private={"GeneralBots/gbdeploy"}) as server:
        url = server.url_of("GeneralBots/gbdeploy")
        chosen = dataclasses.replace(
            settings(),
            workflows=dataclasses.replace(
                settings().workflows, install=f"gbdeploy @ git+{url}@{commit}"
            ),
        )
        # The job's own timeout stands for the real one (3 h): a prompt would run into it.
        result = run_job(render_workflow(chosen, "botserver"), checkout, ctx, timeout=30)
        assert ("/GeneralBots/gbdeploy.git/info/refs", 401) in server.requests
    install = result.step("Install gbdeploy (pinned)")
    assert install.status == "failure"
    assert "timed out" not in result.log
    assert f"cannot read {url} anonymously" in install.output
    assert "terminal prompts disabled" in install.output  # git's own words: it did not ask


# --- persistent sources: incremental builds, one job per tree, siblings -----------------------
def on_disk(tmp_path: Path, **workflows: str) -> Settings:
    """`settings()` with the runner's persistent source directory under `tmp_path`."""
    chosen = settings()
    return dataclasses.replace(
        chosen,
        workflows=dataclasses.replace(
            chosen.workflows, source_dir=str(tmp_path / "ci" / "{component}" / "src"), **workflows
        ),
    )


def test_sources_persist_between_jobs_so_the_second_build_is_incremental(
    checkout, stub_gbdeploy, tmp_path
):
    workflow = render_workflow(on_disk(tmp_path), "botserver")
    src = tmp_path / "ci" / "botserver" / "src"
    first = run_job(workflow, checkout, context(checkout, stub_gbdeploy))
    assert first.ok, first.log
    assert "botserver: first checkout in" in first.step("Build botserver").output
    # the sibling beside it, and the two-member workspace the real workflows write
    assert (src / "botlib" / "lib.h").is_file()
    assert 'members = ["botserver", "botlib"]' in (src / "Cargo.toml").read_text()
    untouched = src / "botserver" / "out" / "botserver"
    before = untouched.stat().st_mtime_ns

    sub = checkout / "botserver"
    (sub / "README").write_text("a small change\n")
    git(sub, "add", "README")
    git(sub, "commit", "-q", "-m", "small change")
    git(checkout, "commit", "-q", "-am", "move botserver")
    second = run_job(workflow, checkout, context(checkout, stub_gbdeploy))

    assert second.ok, second.log
    build = second.step("Build botserver").output
    assert "(1 files): an incremental build" in build
    assert (src / "botserver" / "README").is_file()
    assert git(src / "botserver", "rev-parse", "HEAD") == git(sub, "rev-parse", "HEAD")
    assert (src / "botserver" / "main.c").stat().st_mtime_ns <= before  # not rewritten


def test_a_job_waits_for_the_one_that_holds_the_source_tree(checkout, stub_gbdeploy, tmp_path):
    import fcntl

    workflow = render_workflow(on_disk(tmp_path), "botserver")
    src = tmp_path / "ci" / "botserver" / "src"
    src.mkdir(parents=True)
    with open(src / ".gbdeploy.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another job is building here
        waiting = run_job(workflow, checkout, context(checkout, stub_gbdeploy), timeout=8)
    assert waiting.status == "failure" and "the job timed out" in waiting.log
    assert "another job is building in" in waiting.step("Build botserver").output
    assert not (src / "botserver").exists()  # it never touched the tree

    assert run_job(workflow, checkout, context(checkout, stub_gbdeploy)).ok  # lock released


@pytest.mark.parametrize("secret", [True, False])
def test_a_component_workflow_fetches_its_private_sibling_with_the_named_secret(
    checkout, stub_gbdeploy, tmp_path, secret
):
    component = checkout / "botserver"  # the component's own repository, checked out alone
    repos = tmp_path / "git"
    git(
        tmp_path,
        "clone",
        "-q",
        "--bare",
        str(tmp_path / "botlib-src"),
        str(repos / "GeneralBots" / "botlib.git"),
    )
    chosen = on_disk(tmp_path, submodules_secret="GB_READ" if secret else "")
    botserver = dataclasses.replace(chosen.components["botserver"], workflow_repo="component")
    chosen = dataclasses.replace(chosen, components={**chosen.components, "botserver": botserver})
    with GitHttpServer(repos, private={"GeneralBots/botlib"}, token="read-token") as server:
        ctx = context(
            component,
            stub_gbdeploy,
            server_url=server.url,
            secrets={"GB_READ": "read-token"} if secret else {},
            token="job-token",  # the job token may not read another private repository
        )
        result = run_job(render_workflow(chosen, "botserver"), component, ctx, timeout=60)

    build = result.step("Build botserver")
    if secret:
        assert result.ok, result.log
        assert (tmp_path / "ci" / "botserver" / "src" / "botlib" / "lib.h").is_file()
        assert "read-token" not in result.log
    else:
        assert build.status == "failure"
        assert "cannot fetch botlib from" in build.output
        assert "workflows.submodules_secret" in build.output
        assert "timed out" not in result.log


def test_the_maintenance_workflow_installs_gbdeploy_for_real_and_trims_the_caches(
    checkout, tmp_path
):
    from gbdeploy.install_lock import install_files
    from gbdeploy.workflows import render_maintenance_workflow

    caches = {k: str(tmp_path / "cache" / k) for k in ("sccache_dir", "cargo_home")}
    for relative, data in install_files(with_wheel=True).items():
        (checkout / relative).parent.mkdir(parents=True, exist_ok=True)
        (checkout / relative).write_bytes(data)
    # the project's config, where the builds' caches are named: the one place maintain reads
    (checkout / "gbdeploy.yaml").write_text(json.dumps({"workflows": caches}))
    git(checkout, "add", ".forgejo", "gbdeploy.yaml")
    git(checkout, "commit", "-q", "-m", "gbdeploy: wheel, lock and config")
    chosen = on_disk(tmp_path)
    chosen = dataclasses.replace(chosen, workflows=dataclasses.replace(chosen.workflows, **caches))
    old = Path(caches["sccache_dir"]) / "ab" / "old-object"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x")
    os.utime(old, (0, 0))  # unused since 1970: past any max_age_days
    home = tmp_path / "home"
    home.mkdir()
    ctx = RunContext(sha=git(checkout, "rev-parse", "HEAD"), env={"HOME": str(home)})

    # the daemon's PATH and no gbdeploy on it: the job installs the committed wheel and lock
    result = run_job(render_maintenance_workflow(chosen), checkout, ctx, timeout=300)

    assert result.ok, result.log
    assert "provided by the runner" not in result.log
    assert not old.exists()
