"""The deploy's far-end scripts and their parsers over a local sh (`LocalRemote`): no sshd, each
test in milliseconds. The same text runs here as over ssh; the end-to-end tests keep sshd."""

from __future__ import annotations

import dataclasses
import getpass
import io
import json
import shutil
from pathlib import Path

import pytest

from gbdeploy.artifact import file_sha256
from gbdeploy.config import (
    DoctorSettings,
    GitSettings,
    MaintenanceSettings,
    ReleaseSettings,
    Settings,
    SshSettings,
    Target,
)
from gbdeploy.deploy import layout
from gbdeploy.deploy.command import deployment_plan
from gbdeploy.deploy.deployment import Deployment
from gbdeploy.deploy.service import parse_report, service_of
from gbdeploy.deploy.state import inspect_command, parse_facts
from gbdeploy.errors import GbdeployError, LockHeld
from gbdeploy.output import Reporter
from gbdeploy.remote.local import LocalRemote
from gbdeploy_sandbox.procs import kill_pids, pids_running, wait_for
from gbdeploy_sandbox.settings import UNREACHABLE_FORGE, standin_component

USER = getpass.getuser()


@pytest.fixture
def target(tmp_path):
    """A component whose binary is a copy of `sleep` under a directory with a hostile name."""
    directory = tmp_path / "bot server's $(id)"
    directory.mkdir()
    binary = directory / "botserver"
    component = standin_component(
        binary, directory / "botserver.log", USER, 9, run_as="", start="./botserver 600"
    )
    yield component, layout.Paths(str(binary)), LocalRemote()
    kill_pids(pids_running(str(binary)))


def begin(component, paths, remote, token):
    holder = json.dumps({"token": token, "holder": "me@here"})
    command = layout.begin_command(
        paths,
        holder=holder,
        journal=json.dumps({"action": "deploy", "commit": "c1"}),
        preflight=layout.preflight_lines(component, remote.user, upload_kib=1),
    )
    return parse_facts(remote.run(command).stdout)


def test_the_lock_is_taken_once_and_a_second_deploy_reads_who_holds_it(target):
    component, paths, remote = target
    first = begin(component, paths, remote, "t1")
    assert first.acquired and not first.fails and first.current is None and first.machine

    second = begin(component, paths, remote, "t2")
    assert not second.acquired and second.held_age is not None
    assert second.holder and second.holder["token"] == "t1"
    assert second.journal[0]["commit"] == "c1"


def test_a_preflight_failure_gives_the_lock_back_and_says_which_key(target):
    component, paths, remote = target
    Path(paths.directory).chmod(0o500)
    try:
        facts = begin(component, paths, remote, "t1")
    finally:
        Path(paths.directory).chmod(0o700)
    if USER == "root":  # root writes anywhere: nothing to refuse
        assert facts.acquired
        return
    assert facts.released and [key for key, _ in facts.fails] == ["components.botserver.binary"]


def test_a_deploy_swaps_starts_keeps_and_a_stop_stops_exactly_that_process(target):
    component, paths, remote = target
    assert begin(component, paths, remote, "t1").acquired
    shutil.copy2(shutil.which("sleep"), paths.new)
    sha = file_sha256(Path(paths.new))
    out = remote.run(
        layout.service_command(paths, component, USER, sha256=sha, token="t1", name="restart")
    ).stdout
    report = parse_report(out)
    assert report.was_running is False and report.launched
    assert wait_for(
        lambda: remote.run(layout.state_command(paths, component)).stdout.startswith("up")
    )
    [pid] = pids_running(paths.binary)
    assert f"up {pid}:" in remote.run(layout.state_command(paths, component)).stdout

    finish = layout.finish_command(
        paths,
        token="t1",
        log_entry={"action": "deploy"},
        started_epoch=0,
        keep_release=(sha, "c1", 3),
    )
    assert remote.run(finish).stdout.splitlines()[-2:] == ["kept", "unlocked"]
    facts = parse_facts(remote.run(inspect_command(paths)).stdout)
    assert [(r.sha256, r.commit) for r in facts.releases] == [(sha, "c1")]
    assert facts.held_age is None and not facts.journal

    stop = service_of(component).stop_lines()
    stopped = parse_report(remote.run(f"{layout.prelude(paths)}\n{stop}").stdout)
    assert stopped.stopped == f"stopped {pid}" and pids_running(paths.binary) == []


def test_an_undo_that_finds_the_service_untouched_changes_nothing(target):
    component, paths, remote = target
    assert begin(component, paths, remote, "t1").acquired
    undo = layout.restore_command(
        paths, component, USER, token="t1", names=["restart"], wait_seconds=1
    )
    assert remote.run(undo).stdout.split() == ["untouched"]
    # the service script it claimed never runs: it exits 4 having changed nothing
    script = layout.service_command(
        paths, component, USER, sha256="a" * 64, token="t1", name="restart"
    )
    claimed = remote.run(script, check=False)
    assert claimed.exit_code == 4 and "claimed by the undo" in claimed.stderr
    assert not Path(paths.binary).exists()


# --- the plan is what runs ------------------------------------------------------------------------
class LocalTarget(LocalRemote):
    """A `LocalRemote` that stands in for both the deploy's `Remote` and its `Session`."""

    alive = True

    def cut(self) -> None:
        """Nothing to cut: each command is its own process."""

    close_quietly = cut


def local_deployment(component, tmp_path, *, sha256: str, token: str) -> Deployment:
    config = tmp_path / "ssh_config"
    config.write_text("Host here\n  HostName 127.0.0.1\n")
    settings = Settings(
        forge=UNREACHABLE_FORGE,
        git=GitSettings("main", ["origin"], ["alm"], "m"),
        ssh=SshSettings(config=str(config)),
        release=ReleaseSettings(),
        targets={"system": Target("system", "here")},
        components={component.name: component},
        doctor=DoctorSettings(),
        maintenance=MaintenanceSettings(),
    )
    deployment = Deployment(
        settings,
        component,
        Reporter(stream=io.StringIO()),
        action="deploy",
        commit="c1",
        strategy="staged",
        token=token,
    )
    deployment.remote = deployment.session = LocalTarget()  # type: ignore[assignment]
    deployment.sha256, deployment.compressed = sha256, False  # the upload: through the session
    return deployment


def deployed_once(component, paths, remote) -> str:
    """A first deploy of a copy of `sleep`, through the far-end scripts; its sha256."""
    assert begin(component, paths, remote, "t0").acquired
    shutil.copy2(shutil.which("sleep"), paths.new)
    sha = file_sha256(Path(paths.new))
    remote.run(layout.service_command(paths, component, USER, sha256=sha, token="t0", name="r"))
    finish = layout.finish_command(
        paths, token="t0", log_entry={"result": "ok"}, started_epoch=0, keep_release=(sha, "c1", 3)
    )
    assert remote.run(finish).stdout.splitlines()[-1] == "unlocked"
    return sha


def sent_by_step(deployment: Deployment, steps) -> tuple[list[str], list[str]]:
    """Each command sent, named by the step (or undo) of the plan that holds that very object."""
    owners = {}
    for step in steps:
        owners.update({id(c): step.name for c in step.commands})
        if step.undo:
            owners.update({id(c): f"undo {step.name}" for c in step.undo.commands})
    named = [f"{owners.get(id(c), 'in no plan')}: {c.name}" for c in deployment.sent]
    return named, [line for line in named if line.endswith("in no plan")]


def test_an_unchanged_redeploy_runs_exactly_the_commands_of_its_plan(target, tmp_path):
    component, paths, remote = target
    component = dataclasses.replace(component, health="", health_settle=0.0)
    sha = deployed_once(component, paths, remote)
    assert wait_for(lambda: pids_running(paths.binary) != [])
    deployment = local_deployment(component, tmp_path, sha256=sha, token="t1")
    plan = deployment_plan(deployment, Path(paths.binary), machine_of=None)

    deployment.execute(plan.steps)

    named, strays = sent_by_step(deployment, plan.steps)
    assert strays == []
    assert named == ["lock: begin", "health: check", "finish: finish"]  # nothing else ran
    [finish] = next(step for step in plan.steps if step.name == "finish").commands
    assert deployment.sent[-1] is finish
    log = Path(paths.deploy_log).read_text().splitlines()
    assert json.loads(log[-1])["result"] == "unchanged"  # the planned finish, rendered as it ran
    assert not Path(paths.lock).exists()


def test_the_undo_of_a_failed_unchanged_redeploy_runs_the_plans_undo(target, tmp_path):
    component, paths, remote = target
    component = dataclasses.replace(component, health="", health_settle=0.0)
    sha = deployed_once(component, paths, remote)
    kill_pids(pids_running(paths.binary))  # unchanged, but it does not run: health fails
    deployment = local_deployment(component, tmp_path, sha256=sha, token="t1")
    plan = deployment_plan(deployment, Path(paths.binary), machine_of=None)

    with pytest.raises(GbdeployError, match="unchanged but the service does not run"):
        deployment.execute(plan.steps)

    named, strays = sent_by_step(deployment, plan.steps)
    assert strays == []
    assert named == ["lock: begin", "health: check", "undo lock: finish after failure"]
    log = json.loads(Path(paths.deploy_log).read_text().splitlines()[-1])
    assert log["result"] == "failed, nothing changed" and not Path(paths.lock).exists()


def test_a_refused_lock_is_given_back_only_by_the_unlock_in_the_plan(target, tmp_path):
    component, paths, remote = target
    assert begin(component, paths, remote, "someone-else").acquired
    deployment = local_deployment(component, tmp_path, sha256="a" * 64, token="t1")
    plan = deployment_plan(deployment, Path(paths.binary), machine_of=None)

    with pytest.raises(LockHeld):
        deployment.execute(plan.steps)

    named, strays = sent_by_step(deployment, plan.steps)
    assert strays == [] and named == ["lock: begin", "undo lock: unlock"]
    assert "someone-else" in Path(paths.holder).read_text()  # another's lock is left alone
