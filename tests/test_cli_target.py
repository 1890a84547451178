"""The command line against a real target (the loopback sshd, the stand-in service): what an
operator reads and the exit code they get from `rollback`, `deploy`, `status` and `history`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deploy_world import NEW, OLD, command_line

from gbdeploy.cli import CI_VARIABLES


@pytest.fixture
def project(world, tmp_path: Path, gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A gbdeploy.yaml for `world` in the current directory."""
    directory = tmp_path / "project"
    directory.mkdir()
    command_line(world, directory)
    monkeypatch.chdir(directory)
    return directory


@pytest.fixture
def run_gbdeploy(run_gbdeploy):
    """As `gbdeploy` runs from a shell: through main()'s rewriting of the command line."""
    from gbdeploy.program import help_first, optional_positionals

    def run(*args: str):
        return run_gbdeploy(*optional_positionals(help_first(["gbdeploy", *args]))[1:])

    return run


@pytest.fixture
def terminal(mocker, monkeypatch):
    """A person at a terminal (not a CI job), who answers each question with `return_value`."""
    for variable in CI_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    mocker.patch("gbdeploy.cli.is_terminal", return_value=True)
    return mocker.patch("builtins.input")


# --- confirmations (issue 23, item 4) ---
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


# --- hints (issue 23, item 5) ---
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

    def interrupted_once(self, **how):
        calls.append(self)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the new binary's health is awaited
        return real(self, **how)

    mocker.patch.object(Deployment, "wait_until_up", interrupted_once)

    result = run_gbdeploy("deploy", "botserver", "--artifact", str(artifacts(NEW)))

    assert result.code == 1, result.text
    assert "interrupted" in result.err and "rolled back" in result.err
    assert "fix the cause" not in result.text
    assert world.health()["commit"] == OLD


# --- status for monitoring (issue 23, item 7) ---
def test_status_exits_0_when_all_is_well_and_json_has_the_ci_run_as_fields(
    world, artifacts, project, run_gbdeploy, forgejo, monkeypatch
):
    config = json.loads((project / "gbdeploy.yaml").read_text())
    config["forge"] = {"url": forgejo.url, "owner": "GeneralBots", "repo": "gb", "timeout": 5}
    (project / "gbdeploy.yaml").write_text(json.dumps(config))
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", "emulator-token-0123456789")
    [run_id] = forgejo.on_push("c1" * 20, workflows=["botserver.yaml"])
    forgejo.finish(run_id, "success")
    world.deploy(artifacts(OLD), commit=OLD)

    assert run_gbdeploy("status", "botserver").code == 0
    result = run_gbdeploy("status", "botserver", "--json")

    assert result.code == 0, result.text
    [status] = json.loads(result.out)
    assert status["problems"] == []
    ci = status["ci_run"]
    assert ci["id"] == run_id and ci["index_in_repo"] == 1 and ci["status"] == "success"
    assert ci["commit_sha"] == "c1" * 20 and ci["repository"] == "GeneralBots/gb"
    assert ci["html_url"].startswith(forgejo.url)


def test_status_exits_1_when_a_lock_is_left(world, artifacts, project, run_gbdeploy):
    world.deploy(artifacts(OLD), commit=OLD)
    Path(f"{world.binary}.lock").mkdir()
    result = run_gbdeploy("status", "botserver", "--json")
    assert result.code == 1, result.text
    assert json.loads(result.out)[0]["problems"] == ["a deploy lock is held"]
    assert "botserver: a deploy lock is held" in result.err


def test_status_exits_1_when_the_binary_is_not_the_recorded_one(
    world, artifacts, project, run_gbdeploy
):
    world.deploy(artifacts(OLD), commit=OLD)
    patched = world.binary.with_name("patched")
    patched.write_bytes(world.binary.read_bytes() + b"patched by hand")
    patched.chmod(0o755)
    patched.rename(world.binary)  # as a hand-made scp + mv would
    result = run_gbdeploy("status", "botserver")
    assert result.code == 1, result.text
    assert "is not the one the last deploy recorded" in result.err


def test_status_exits_1_when_the_service_is_down(world, artifacts, project, run_gbdeploy):
    from gbdeploy_sandbox.procs import kill_pids, wait_for

    world.deploy(artifacts(OLD), commit=OLD)
    kill_pids(world.running())
    assert wait_for(lambda: world.health() is None)
    result = run_gbdeploy("status", "botserver")
    assert result.code == 1, result.text
    assert "botserver: not running" in result.err and "health NOT OK" in result.err


# --- container targets: what is missing where (issue 23, item 2) ---
def _with_target(project: Path, **target: object) -> None:
    config = json.loads((project / "gbdeploy.yaml").read_text())
    config["targets"]["system"].update(target)
    (project / "gbdeploy.yaml").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("target", "said", "hint"),
    [
        (
            {"container": "sytem"},
            "container 'sytem' not found on pragmatismo-system (targets.system.container)",
            "`lxc list` on pragmatismo-system lists its containers",
        ),
        (
            {"container": "system", "via": "incus"},
            "incus: command not found on pragmatismo-system (targets.system.via is incus)",
            "set targets.system.via (lxc)",
        ),
        (
            {"container": "system", "sudo": True},
            "sudo: command not found on pragmatismo-system (targets.system.sudo is true)",
            "set targets.system.sudo: false",
        ),
    ],
)
@pytest.mark.parametrize("command", [["deploy", "botserver", "--artifact"], ["status"]])
def test_a_container_target_that_cannot_be_entered_says_what_is_missing_where(
    world, artifacts, project, run_gbdeploy, target, said, hint, command
):
    _with_target(project, **target)
    argv = [*command, str(artifacts(NEW))] if "--artifact" in command else command
    result = run_gbdeploy(*argv)
    assert result.code == 2, result.text
    assert said in result.err and hint in result.err
    assert "connection lost" not in result.text and "far end" not in result.text


def test_sudo_that_asks_for_a_password_is_named():
    from gbdeploy.config import Target
    from gbdeploy.remote.connection import diagnose
    from gbdeploy_sandbox.programs.sudo import PASSWORD_REQUIRED

    target = Target("system", "prod-host", container="system", via="incus", sudo=True)
    found = diagnose(target, "administrator", PASSWORD_REQUIRED)
    assert found is not None and found.exit_code == 2
    assert str(found).startswith("sudo asks for a password on prod-host")
    assert "administrator ALL=(root) NOPASSWD: /usr/bin/incus" in str(found)
    # A command inside the container that fails on its own is not taken for the way in.
    assert diagnose(target, "administrator", "grep: /x: No such file or directory") is None


def test_a_failing_command_inside_a_working_container_is_not_blamed_on_the_way_in(
    world, project, standins
):
    import shutil

    from gbdeploy.config_layers import load_settings
    from gbdeploy.errors import RemoteError
    from gbdeploy.remote.connection import Remote

    container = standins.add_container("system")  # the lxc stand-in is on the sshd's PATH
    _with_target(project, container="system")
    settings = load_settings()
    try:
        remote = Remote(settings.targets["system"], settings.ssh)
        with remote, pytest.raises(RemoteError) as raised:
            remote.run("echo 'sudo: not found' >&2; exit 127")
    finally:
        shutil.rmtree(container)
    assert "command failed (exit 127)" in str(raised.value)


# --- -q and -v (issue 23, item 6) ---
def test_quiet_deploy_and_rollback_say_their_outcome_only(world, artifacts, project, run_gbdeploy):
    first = run_gbdeploy("-q", "deploy", "botserver", "--artifact", str(artifacts(OLD)), "-c", OLD)
    assert first.code == 0, first.text
    assert first.out.splitlines() == [f"botserver {OLD} deployed on {_where(world)}, healthy"]
    run_gbdeploy("-q", "deploy", "botserver", "--artifact", str(artifacts(NEW)), "-c", NEW)

    back = run_gbdeploy("-q", "rollback", "botserver")

    assert back.code == 0, back.text
    assert back.out.splitlines() == [
        f"botserver {OLD} runs again on {_where(world)}, healthy",
        f"check it with: gbdeploy verify botserver --commit {OLD}",
    ]


def _where(world) -> str:
    return f"root@{world.sshd.alias}"


def test_verbose_shows_the_remote_commands_with_the_shared_shell_once(
    world, artifacts, project, run_gbdeploy
):
    world.deploy(artifacts(OLD), commit=OLD)
    real = run_gbdeploy("-v", "deploy", "botserver", "--artifact", str(artifacts(NEW)), "-c", NEW)
    assert real.code == 0, real.text
    assert "$ B=" in real.out  # the lock script, as it runs
    assert real.out.count("sha_of() {") == 1  # the shared functions in full once
    assert "shared lines shown in full above" in real.out

    plan = run_gbdeploy("-v", "rollback", "botserver", "-d")
    assert plan.code == 0, plan.text
    assert plan.out.count("sha_of() {") == 1 and "kill -TERM" in plan.out
    brief = run_gbdeploy("rollback", "botserver", "-d")
    assert "sha_of() {" not in brief.out and "-v" in brief.out


def test_a_declined_rollback_is_no_failure_to_notify(
    world, artifacts, project, terminal, run_gbdeploy
):
    from test_hooks_notify import Receiver

    receiver = Receiver()
    try:
        config = json.loads((project / "gbdeploy.yaml").read_text())
        config["notify"] = {"webhook": receiver.url}
        (project / "gbdeploy.yaml").write_text(json.dumps(config))
        world.deploy(artifacts(OLD), commit=OLD)
        world.deploy(artifacts(NEW), commit=NEW)
        terminal.return_value = "n"

        result = run_gbdeploy("rollback", "botserver")

        assert result.code == 0 and "nothing done" in result.err
        assert receiver.posted() == []
        terminal.return_value = "y"
        assert run_gbdeploy("rollback", "botserver").code == 0
        assert [post["result"] for post in receiver.posted()] == ["ok"]
    finally:
        receiver.close()


@pytest.fixture(scope="module")
def host_of_a_non_root_user():
    """An Incus host (alias `ops-host`) reached as `gbops`, whom its sudo does not know: sudo
    asks for a password, as the real one does for a user without a NOPASSWD rule."""
    import pwd
    import shutil
    import tempfile

    import gbdeploy_sandbox
    from gbdeploy_sandbox.sshd import LoopbackSshd
    from gbdeploy_sandbox.standins import StandinWorld

    try:
        pwd.getpwnam("gbops")
    except KeyError:
        pytest.skip("needs the non-root ssh user gbops (.ci/setup creates it)")
    made = []
    for prefix in ("gbdeploy-ops-standins-", "gbdeploy-ops-sshd-"):
        made.append(Path(tempfile.mkdtemp(prefix=prefix)))
        made[-1].chmod(0o755)  # gbops reads its stand-ins and authorized key there
    world = StandinWorld(made[0]).install()
    world.install_program("incus", "incus")
    # The stand-in sudo, run by an interpreter gbops may execute (this one may live in a home
    # directory only root can enter).
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        pytest.skip("needs /usr/bin/python3 for the stand-in sudo run as gbops")
    package_parent = Path(gbdeploy_sandbox.__file__).resolve().parent.parent
    world.write_executable(
        "sudo",
        f"#!{system_python}\nimport sys\nsys.path.insert(0, {str(package_parent)!r})\n"
        "from gbdeploy_sandbox.programs.sudo import main\n"
        f"sys.exit(main({str(world.directory)!r}, sys.argv[1:]))\n",
    )
    world.add_container("system")
    for directory in (world.bin, world.containers):
        directory.chmod(0o755)  # whatever the umask made them
    with LoopbackSshd(made[1], alias="ops-host", extra_path=[world.bin], user="gbops") as server:
        yield server
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def test_a_sudo_that_asks_for_a_password_is_named_over_ssh(host_of_a_non_root_user):
    from gbdeploy.config import SshSettings, Target
    from gbdeploy.errors import PreflightError
    from gbdeploy.remote.connection import Remote

    server = host_of_a_non_root_user
    target = Target("system", server.alias, container="system", via="incus", sudo=True)
    remote = Remote(target, SshSettings(config=str(server.ssh_config)))
    with remote, pytest.raises(PreflightError) as raised:
        remote.run("true")
    said = str(raised.value)
    assert said.startswith("sudo asks for a password on ops-host: gbops may not run incus")
    assert "gbops ALL=(root) NOPASSWD: /usr/bin/incus" in said


def test_a_malformed_token_stops_only_the_commands_that_send_it(
    world, artifacts, project, run_gbdeploy, monkeypatch
):
    world.deploy(artifacts(OLD), commit=OLD)
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", "tok-123\nX-Injected: 1")

    deployed = run_gbdeploy("deploy", "botserver", "--artifact", str(artifacts(NEW)), "--yes")
    forge = run_gbdeploy("runs")

    assert deployed.code == 0, deployed.text  # deploy never talks to the forge
    assert (world.health() or {}).get("commit") == NEW
    assert forge.code == 2, forge.text
    assert "GBDEPLOY_FORGE_TOKEN: holds a character no token has" in forge.err
    assert "tok-123" not in deployed.text + forge.text
