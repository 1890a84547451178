"""Deploys that hold on a real service (a plain binary without signal handlers, started by
gbdeploy itself) and under every cancel: issue 19. Each test runs over the loopback sshd and
checks what runs afterwards, from which path, as whom, its health, the binary's sha256, B.prev
and the kept releases."""

from __future__ import annotations

import io
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from gbdeploy import deploy
from gbdeploy.artifact import file_sha256
from gbdeploy.deploy import layout
from gbdeploy.deploy.deployment import Deployment
from gbdeploy.deploy.engine import Command
from gbdeploy.deploy.state import describe_journal
from gbdeploy.errors import DeployFailed, LockHeld, PreflightError, RemoteError, UsageError
from gbdeploy.output import Reporter
from gbdeploy.remote.session import Session
from gbdeploy_sandbox.procs import executable_of, wait_for
from gbdeploy_sandbox.service import Fault
from gbdeploy_sandbox.sshd import free_port
from tests.deploy_world import NEW, OLD, World, cli_env, command_line
from tests.test_deploy import small_disk

THIRD = "ccccccc3333"
TERM_INT_QUIT = (
    (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGQUIT - 1))
)


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def the_service(world: World, commit: str) -> int:
    """The one process running the binary: from B's path, as the service user, healthy with
    `commit`; its pid."""
    assert (world.health() or {}).get("commit") == commit
    [pid] = world.running()
    assert executable_of(pid) == str(world.binary)
    assert int(status_field(pid, "Uid").split()[0]) == _uid(world.user)
    return pid


def _uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def kept(world: World) -> list[tuple[str, str]]:
    path = Path(f"{world.binary}.releases/list")
    return [tuple(line.split()[:2]) for line in path.read_text().splitlines()]  # type: ignore[misc]


def deploy_with(world: World, artifact: Path, **options) -> str:
    out = io.StringIO()
    world.deploy(artifact, out=out, **options)
    return out.getvalue()


def no_lock_no_journal(world: World) -> None:
    assert not Path(f"{world.binary}.lock").exists()
    assert not Path(f"{world.binary}.journal").exists()


def the_new_release_is_kept(world: World, artifacts) -> None:
    """NEW runs from B and is the newest kept release, both deploys logged ok; no lock, no
    journal."""
    the_service(world, NEW)
    assert file_sha256(world.binary) == file_sha256(artifacts(NEW))
    assert [commit for _, commit in kept(world)] == [OLD, NEW]
    assert [entry["result"] for entry in world.deploy_log()] == ["ok", "ok"]
    no_lock_no_journal(world)


# --- 1. a started service keeps SIGTERM ---
def test_a_service_gbdeploy_started_has_default_signals_and_stops_on_sigterm(world, artifacts):
    deploy_with(world, artifacts(OLD), commit=OLD)
    pid = the_service(world, OLD)
    assert int(status_field(pid, "SigIgn"), 16) == 0  # setsid here: not even nohup's HUP

    said = deploy_with(world, artifacts(NEW), commit=NEW)

    assert f"stopped {pid}" in said and "killed" not in said  # SIGTERM ended it, no SIGKILL
    new_pid = the_service(world, NEW)
    assert int(status_field(new_pid, "SigIgn"), 16) & TERM_INT_QUIT == 0
    assert int(status_field(new_pid, "SigIgn"), 16) == 0
    assert file_sha256(world.binary) == file_sha256(artifacts(NEW))
    assert file_sha256(Path(f"{world.binary}.prev")) == file_sha256(artifacts(OLD))
    no_lock_no_journal(world)


# --- 2. health: our process, the expected commit, a settle window ---
def test_a_binary_that_dies_after_its_first_healthy_answer_is_not_kept(world, artifacts):
    deploy_with(world, artifacts(OLD), commit=OLD)
    crashing = artifacts(NEW, Fault.DIES_AFTER_A_SECOND)

    with pytest.raises(DeployFailed) as raised:
        world.deploy(crashing, commit=NEW, component={"health_settle": 4.0})

    assert raised.value.exit_code == 1
    assert "rolled back" in str(raised.value)
    the_service(world, OLD)
    assert file_sha256(world.binary) == file_sha256(artifacts(OLD))
    assert [commit for _, commit in kept(world)] == [OLD]  # the crashing binary was not kept
    no_lock_no_journal(world)


def test_a_health_that_flaps_is_not_kept(world, artifacts):
    deploy_with(world, artifacts(OLD), commit=OLD)

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW, Fault.FLAPPING), commit=NEW, component={"health_settle": 2.0})

    assert "answered healthy, then within its settle window" in str(raised.value)
    the_service(world, OLD)
    assert [commit for _, commit in kept(world)] == [OLD]
    no_lock_no_journal(world)


def test_a_health_url_that_answers_for_another_commit_fails_the_deploy(world, artifacts):
    deploy_with(world, artifacts(OLD), commit=OLD)
    other_port = free_port()
    other = subprocess.Popen(
        [str(artifacts(THIRD))],
        env={**os.environ, "PORT": str(other_port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        typo = f"http://localhost:{other_port}/health"  # another service's health URL
        with pytest.raises(DeployFailed) as raised:
            world.deploy(
                artifacts(NEW), commit=NEW, component={"health": typo, "health_timeout": 3.0}
            )
    finally:
        other.kill()
        other.wait()
    assert f"answers for commit {THIRD}, not {NEW}" in str(raised.value)
    the_service(world, OLD)
    assert [commit for _, commit in kept(world)] == [OLD]
    no_lock_no_journal(world)


# --- 3, 4. a cancel or a drop never stops a healthy service ---
@pytest.mark.parametrize("cut", [KeyboardInterrupt, "drop"])
def test_a_cancel_or_drop_after_the_target_finished_leaves_the_new_service(
    world, artifacts, monkeypatch, cut
):
    deploy_with(world, artifacts(OLD), commit=OLD)
    real_send = Deployment.send
    fired = []

    def send(self, command, **kwargs):
        out = real_send(self, command, **kwargs)
        if command is self.finish and not fired:  # the finish ran on the target
            fired.append(command)
            if cut == "drop":
                self.cut()
                raise RemoteError("connection dropped")
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(Deployment, "send", send)
    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW), commit=NEW)

    assert "nothing was undone" in str(raised.value)
    the_new_release_is_kept(world, artifacts)


def test_an_undo_meeting_a_finish_under_way_keeps_the_new_service(world, artifacts, monkeypatch):
    """The finish runs on the target to its end whatever happens here (it ignores signals). An
    undo that reconnects while it runs can find the journal at `done` and the lock not yet
    removed: that release is kept, never restored over. Here the finish stops right there and
    the connection drops."""
    deploy_with(world, artifacts(OLD), commit=OLD)
    real_send = Deployment.send

    def send(self, command, **kwargs):
        if command is self.finish:
            halfway = (
                f"{layout.prelude(self.paths)}\n{layout.call('finish_phase', self.token, 'done')}"
            )
            real_send(self, Command.fixed(halfway, "finish up to `done`"), **kwargs)
            self.cut()
            raise RemoteError("connection dropped")
        return real_send(self, command, **kwargs)

    monkeypatch.setattr(Deployment, "send", send)
    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW), commit=NEW)

    assert "it runs and was kept, nothing was undone" in str(raised.value)
    the_new_release_is_kept(world, artifacts)
    assert file_sha256(Path(f"{world.binary}.prev")) == file_sha256(artifacts(OLD))


def test_a_cancel_after_health_passed_keeps_the_new_release(world, artifacts, monkeypatch):
    deploy_with(world, artifacts(OLD), commit=OLD)
    real_send = Deployment.send

    def send(self, command, **kwargs):
        if command is self.finish and not getattr(self, "cancelled", False):
            self.cancelled = True
            raise KeyboardInterrupt  # before the finish was sent
        return real_send(self, command, **kwargs)

    monkeypatch.setattr(Deployment, "send", send)
    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW), commit=NEW)

    assert "it runs and was kept" in str(raised.value)
    the_new_release_is_kept(world, artifacts)


def cancel_the_service_script(monkeypatch) -> None:
    """Ctrl-C as the service script is about to be sent: it never reaches the target."""
    real_run = Session.run

    def run(self, command, **kwargs):
        if re.search(r"^service_begin ", command, re.MULTILINE):  # the script's first call
            raise KeyboardInterrupt
        return real_run(self, command, **kwargs)

    monkeypatch.setattr(Session, "run", run)


def test_a_cancel_as_restart_begins_leaves_the_running_service_and_b_prev(
    world, artifacts, monkeypatch
):
    for commit in (OLD, NEW):
        deploy_with(world, artifacts(commit), commit=commit)
    pid = the_service(world, NEW)
    prev = Path(f"{world.binary}.prev")
    stale = (file_sha256(prev), prev.stat().st_ino)
    cancel_the_service_script(monkeypatch)

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(THIRD), commit=THIRD)

    assert "before the service was touched" in str(raised.value)
    assert the_service(world, NEW) == pid  # never stopped
    assert file_sha256(world.binary) == file_sha256(artifacts(NEW))
    assert (file_sha256(prev), prev.stat().st_ino) == stale  # the stale B.prev stayed B.prev
    no_lock_no_journal(world)

    with pytest.raises(DeployFailed):  # the same as a rollback begins
        deploy.run_rollback(world.settings(), "botserver", Reporter(stream=io.StringIO()))
    assert the_service(world, NEW) == pid
    assert file_sha256(world.binary) == file_sha256(artifacts(NEW))
    no_lock_no_journal(world)


# --- 5. a nearly full disk ---
def test_a_disk_with_room_for_the_upload_but_not_the_records_is_refused(world, artifacts):
    with small_disk(world, "512k"):
        deploy_with(world, artifacts(OLD), commit=OLD)
        pid = the_service(world, OLD)
        artifact = artifacts(NEW)
        filler = world.binary.parent / "filler"
        free = shutil.disk_usage(world.binary.parent).free
        filler.write_bytes(b"\0" * (free - artifact.stat().st_size - 8192))

        with pytest.raises(PreflightError) as raised:
            world.deploy(artifact, commit=NEW)

        assert raised.value.exit_code == 2
        assert "the deploy writes up to" in str(raised.value)
        assert the_service(world, OLD) == pid
        assert file_sha256(world.binary) == file_sha256(artifacts(OLD))
        assert not Path(f"{world.binary}.new").exists()
        no_lock_no_journal(world)


def test_a_restore_with_an_empty_record_never_deletes_the_binary(world, artifacts, monkeypatch):
    """A full disk leaves B.lock/had empty: the undo then leaves B as it is, never removes it."""
    deploy_with(world, artifacts(OLD), commit=OLD)
    real_wait = Deployment.wait_until_up
    had = Path(f"{world.binary}.lock/had")

    def wait_until_up(self, **options):
        if not getattr(self, "failed_once", False):
            self.failed_once = True
            had.write_text("")  # as a write on a full disk leaves it
            raise DeployFailed("not healthy (as the test says)")
        return real_wait(self, **options)

    monkeypatch.setattr(Deployment, "wait_until_up", wait_until_up)
    with pytest.raises(DeployFailed):
        world.deploy(artifacts(NEW), commit=NEW, component={"health_timeout": 2.0})

    assert world.binary.is_file()
    assert file_sha256(world.binary) in (file_sha256(artifacts(OLD)), file_sha256(artifacts(NEW)))
    assert len(world.running()) == 1
    no_lock_no_journal(world)


# --- 6. a restore starts the old release as it was started ---
@pytest.mark.parametrize(
    "typo",
    [{"env": {"PORT": "9"}, "health_timeout": 3.0}, {"start": "./botsever --noconsole"}],
    ids=["env", "start"],
)
def test_a_config_typo_never_takes_the_old_release_down(world, artifacts, typo):
    deploy_with(world, artifacts(OLD), commit=OLD)

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW), commit=NEW, component=typo)

    assert raised.value.exit_code == 1
    assert "runs again" in str(raised.value)
    the_service(world, OLD)  # on its own port, started as it was
    assert file_sha256(world.binary) == file_sha256(artifacts(OLD))
    no_lock_no_journal(world)


# --- 7. --recover never takes over a live deploy ---
def test_recover_refuses_while_the_lock_holder_still_runs(world, artifacts):
    deploy_with(world, artifacts(OLD), commit=OLD)
    pid = the_service(world, OLD)
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = Path(f"{world.binary}.lock")
        lock.mkdir()
        record = {
            "holder": f"someone@{socket.gethostname()}",
            "pid": holder.pid,
            "token": "0123abcd",
            "action": "deploy",
            "commit": NEW,
        }
        (lock / "holder").write_text(json.dumps(record) + "\n")

        with pytest.raises(LockHeld) as raised:
            world.deploy(artifacts(NEW), recover=True)

        assert f"still runs on this machine (pid {holder.pid})" in str(raised.value)
        assert lock.exists() and the_service(world, OLD) == pid
    finally:
        holder.kill()
        holder.wait()
    world.deploy(artifacts(NEW), recover=True)  # its holder is gone: recovered
    the_service(world, OLD)
    no_lock_no_journal(world)


def test_recover_refuses_a_lock_whose_deploy_is_still_connected_from_elsewhere(world, artifacts):
    deploy_with(world, artifacts(OLD), commit=OLD)
    pid = the_service(world, OLD)
    live = Deployment(  # a deploy from another machine, between two steps: its session is open
        world.settings(),
        world.component(),
        Reporter(stream=io.StringIO()),
        action="deploy",
        commit=NEW,
        strategy="staged",
    )
    live.sha256, live.size = file_sha256(artifacts(NEW)), artifacts(NEW).stat().st_size
    holder = Path(f"{world.binary}.lock/holder")
    try:
        live.begin_step(upload=True, machine_of=None).run()
        record = json.loads(holder.read_text())
        holder.write_text(json.dumps({**record, "holder": "ci@elsewhere", "pid": 1}) + "\n")

        with pytest.raises(LockHeld) as raised:
            world.deploy(artifacts(NEW), recover=True)

        assert "still connected to the target" in str(raised.value)
        assert holder.exists() and the_service(world, OLD) == pid
    finally:
        live.close()
    world.deploy(artifacts(NEW), recover=True)  # its connection ended: taken over
    the_service(world, OLD)
    no_lock_no_journal(world)


def test_recover_waits_for_the_script_a_killed_deploy_left_and_checks_what_runs(
    world, artifacts, tmp_path
):
    v2 = artifacts(NEW, Fault.IGNORE_TERM)  # its stop takes the whole stop_timeout
    world.deploy(v2, commit=NEW, component={"stop_timeout": 2.0})
    program = command_line(world, tmp_path)
    config = json.loads((tmp_path / "gbdeploy.yaml").read_text())
    config["components"]["botserver"]["stop_timeout"] = 2.0
    (tmp_path / "gbdeploy.yaml").write_text(json.dumps(config))
    journal = Path(f"{world.binary}.journal")
    process = subprocess.Popen(
        [*program, "deploy", "botserver", "--artifact", str(artifacts(THIRD)), "--commit", THIRD],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def stopping() -> bool:
            try:
                return '"phase": "stopping"' in journal.read_text()
            except OSError:
                return False

        assert wait_for(stopping, deadline_seconds=120, interval=0.001)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()

    out = io.StringIO()
    deploy.run_deploy(
        world.settings(stop_timeout=2.0), "botserver", Reporter(stream=out), recover=True
    )

    assert "waited for the service script" in out.getvalue()
    pid = the_service(world, NEW)  # what it said it restored is what runs
    assert file_sha256(world.binary) == file_sha256(v2)
    assert executable_of(pid) == str(world.binary)
    entry = world.deploy_log()[-1]
    assert entry["recovered"] is True and entry["sha256"] == file_sha256(v2)
    assert entry["result"] == "ok"
    no_lock_no_journal(world)


# --- 8, 9, 10. injection ---
@pytest.mark.parametrize(
    "forged",
    [f"{NEW}\n{'0' * 64} evil 2026-01-01T00:00:00Z", f"{NEW}\n"],
    ids=["a-line-after", "a-trailing-newline"],  # `$` of a pattern matches before a last \n
)
def test_a_commit_with_a_newline_is_refused(world, artifacts, forged):
    deploy_with(world, artifacts(OLD), commit=OLD)
    with pytest.raises(UsageError) as raised:
        world.deploy(artifacts(NEW), commit=forged)
    assert raised.value.exit_code == 2
    the_service(world, OLD)
    assert kept(world) == [(file_sha256(artifacts(OLD)), OLD)]


def test_a_release_list_field_that_is_no_sha256_never_becomes_a_path(world, artifacts, tmp_path):
    deploy_with(world, artifacts(OLD), commit=OLD)
    deploy_with(world, artifacts(NEW), commit=NEW)
    outside = tmp_path / "outside"
    shutil.copyfile(artifacts(THIRD), outside)
    outside.chmod(0o755)
    relative = os.path.relpath(outside, Path(f"{world.binary}.releases"))
    with open(f"{world.binary}.releases/list", "a") as handle:
        handle.write(f"{relative} evil 2026-01-01T00:00:00Z\n")

    with pytest.raises(PreflightError):
        deploy.run_rollback(
            world.settings(), "botserver", Reporter(stream=io.StringIO()), to="evil"
        )

    the_service(world, NEW)
    assert file_sha256(world.binary) == file_sha256(artifacts(NEW))


def test_an_executable_path_with_a_newline_cannot_make_the_stop_signal_another_process(
    world, artifacts, tmp_path
):
    deploy_with(world, artifacts(OLD), commit=OLD)
    victim = subprocess.Popen(["sleep", "60"])
    try:
        forged = Path(f"{tmp_path}/x\n{victim.pid} {world.binary}")
        forged.parent.mkdir(parents=True)
        shutil.copyfile("/bin/sleep", forged)
        forged.chmod(0o755)
        decoy = subprocess.Popen([str(forged), "60"])
        try:
            deploy_with(world, artifacts(NEW), commit=NEW)
            assert victim.poll() is None and decoy.poll() is None  # neither was signalled
        finally:
            decoy.kill()
            decoy.wait()
    finally:
        victim.kill()
        victim.wait()
    the_service(world, NEW)


def test_run_as_is_an_argument_vector_not_shell_code(world, artifacts, tmp_path):
    deploy_with(world, artifacts(OLD), commit=OLD)
    pid = the_service(world, OLD)
    marker = tmp_path / "ran-as-root"

    with pytest.raises(PreflightError) as raised:
        world.deploy(
            artifacts(NEW),
            commit=NEW,
            component={"run_as": f"runuser -u {{user}} -- ; touch {marker} ;"},
        )

    assert "run_as" in str(raised.value)
    assert not marker.exists()
    assert the_service(world, OLD) == pid
    no_lock_no_journal(world)


# --- 15. an unchanged redeploy keeps the commit ---
def test_an_unchanged_redeploy_without_commit_keeps_the_known_commit(world, artifacts):
    deploy_with(world, artifacts(NEW), commit=NEW)
    pid = the_service(world, NEW)

    said = deploy_with(world, artifacts(NEW), commit=None)

    assert "unchanged" in said
    assert the_service(world, NEW) == pid
    assert kept(world) == [(file_sha256(artifacts(NEW)), NEW)]
    assert world.deploy_log()[-1]["commit"] == NEW
    deploy.run_rollback(world.settings(), "botserver", Reporter(stream=io.StringIO()), to=NEW)
    the_service(world, NEW)


# --- 16. the smaller ones ---
def test_a_wrong_architecture_leaves_no_journal(world, artifacts, tmp_path):
    deploy_with(world, artifacts(OLD), commit=OLD)
    pid = the_service(world, OLD)
    foreign = tmp_path / "botserver"
    data = bytearray(artifacts(NEW).read_bytes())
    data[18:20] = (0xB7).to_bytes(2, "little")  # e_machine: aarch64
    foreign.write_bytes(bytes(data))
    foreign.chmod(0o755)

    with pytest.raises(UsageError):
        world.deploy(foreign, commit=NEW)

    assert the_service(world, OLD) == pid
    no_lock_no_journal(world)


def test_release_kept_is_said_only_when_it_was_kept(world, artifacts):
    deploy_with(world, artifacts(OLD), commit=OLD)
    releases = Path(f"{world.binary}.releases")
    shutil.rmtree(releases)
    releases.write_text("not a directory\n")

    said = deploy_with(world, artifacts(NEW), commit=NEW)

    assert "release kept" not in said
    assert "the release was NOT kept" in said
    the_service(world, NEW)


def test_recover_with_nothing_to_recover_leaves_a_healthy_service_alone(world, artifacts):
    deploy_with(world, artifacts(OLD), commit=OLD)
    pid = the_service(world, OLD)
    out = io.StringIO()

    deploy.run_deploy(world.settings(), "botserver", Reporter(stream=out), recover=True)

    assert "nothing to recover" in out.getvalue()
    assert the_service(world, OLD) == pid


def test_recover_clears_a_stale_lock_when_no_release_is_kept(world, artifacts):
    deploy_with(world, artifacts(OLD), commit=OLD)
    shutil.rmtree(f"{world.binary}.releases")
    lock = Path(f"{world.binary}.lock")
    lock.mkdir()
    (lock / "holder").write_text(json.dumps({"token": "0ddba11", "pid": 1, "holder": "x@y"}) + "\n")

    with pytest.raises(PreflightError) as raised:
        deploy.run_deploy(
            world.settings(), "botserver", Reporter(stream=io.StringIO()), recover=True
        )

    assert "the stale lock was removed" in str(raised.value)
    assert not lock.exists()
    world.deploy(artifacts(NEW), commit=NEW, force=True)  # and its hint works
    the_service(world, NEW)


def test_status_knows_the_phases_of_an_ended_deploy():
    assert "unknown phase" not in describe_journal([{"phase": "done"}])
    for phase in ("failed-nothing-changed", "failed-rolled-back", "failed-restore-failed"):
        assert "unknown phase" not in describe_journal([{"phase": phase}])


def test_a_long_stop_says_so_every_few_seconds(world, artifacts):
    stubborn = artifacts(OLD, Fault.IGNORE_TERM)  # only SIGKILL, after the whole stop_timeout
    slow = {"stop_timeout": 6.0}
    deploy_with(world, stubborn, commit=OLD, component=slow)

    said = deploy_with(world, artifacts(NEW), commit=NEW, component=slow)

    assert "s, restart still running on the target (a stop waits up to 6s" in said
    assert "killed after SIGTERM timeout" in said
    the_service(world, NEW)
