"""What no configuration mistake, artifact or killed deploy may do to a running service, over the
real sshd: each test looks at the service afterwards (health, pids, binary), not only the exit
code."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import pytest

from gbdeploy import deploy
from gbdeploy.artifact import file_sha256
from gbdeploy.deploy import layout
from gbdeploy.errors import ConfigError, DeployFailed, PreflightError, UsageError
from gbdeploy.output import Reporter
from gbdeploy.remote import far_end as far_end_library  # (the tests name a parameter far_end)
from gbdeploy.remote import session, transfer
from gbdeploy.remote.connection import Remote
from gbdeploy.remote.session import Session
from gbdeploy_sandbox.procs import wait_for
from gbdeploy_sandbox.service import Fault
from tests.deploy_world import (
    NEW,
    OLD,
    World,
    assert_untouched,
    cli_env,
    command_line,
    deployed,
    snapshot,
    stalled_mid_upload,
)


def files(world: World) -> dict[str, tuple]:
    """Every path under the target with its content, inode and mtime (a directory's mtime
    aside: taking and giving back the lock touches it)."""
    return {
        path: (kind, inode, None if kind == "dir" else mtime)
        for path, (kind, inode, mtime) in snapshot(world).items()
    }


# --- the preflight --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"user": "gbusr"}, "components.botserver.user"),
        ({"run_as": "nosudo -u {user}"}, "components.botserver.run_as"),
        ({"run_as": "sudo -u {user}"}, "components.botserver.run_as"),  # no sudo on this machine
        ({"log": "/proc/nope/error.log"}, "components.botserver.log"),
    ],
    ids=["user", "run_as", "default-sudo", "log"],
)
def test_a_config_mistake_is_refused_before_anything_stops(world, artifacts, change, key):
    old_sha = deployed(world, artifacts)
    files_before, pids = files(world), world.running()

    with pytest.raises(PreflightError) as raised:
        world.deploy(artifacts(NEW), component=change)

    assert raised.value.exit_code == 2
    assert key in str(raised.value) and "nothing was changed" in str(raised.value)
    assert_untouched(world, old_sha, pids)
    assert files(world) == files_before  # no lock, no journal, no upload left behind


@pytest.mark.parametrize(
    "content",
    [b"", b"echo hello\n", b"<html><body>502 Bad Gateway</body></html>\n"],
    ids=["empty", "text", "html"],
)
def test_an_artifact_that_is_no_executable_is_refused_before_the_upload(
    world, artifacts, tmp_path, content
):
    old_sha = deployed(world, artifacts)
    files_before, pids = files(world), world.running()
    artifact = tmp_path / "botserver"
    artifact.write_bytes(content)

    with pytest.raises(UsageError) as raised:
        world.deploy(artifact)

    assert raised.value.exit_code == 2
    assert str(artifact) in str(raised.value)
    assert_untouched(world, old_sha, pids)
    assert files(world) == files_before


def test_a_hostile_health_host_is_never_run(world, artifacts, tmp_path):
    deployed(world, artifacts)
    marker = tmp_path / "marker"
    hostile = f"http://x$(touch {marker})y:80/health"

    with pytest.raises(ConfigError) as raised:
        world.deploy(artifacts(NEW), component={"health": hostile})

    assert raised.value.exit_code == 2 and "components.botserver.health" in str(raised.value)
    assert not marker.exists()
    assert world.health()["commit"] == OLD


# --- failures after the stop tell the truth -------------------------------------------------------
def test_a_wrong_health_port_is_exit_1_with_the_old_binary_running(world, artifacts):
    old_sha = deployed(world, artifacts)
    from gbdeploy_sandbox.sshd import free_port

    wrong = f"http://localhost:{free_port()}/health"

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW), component={"health": wrong, "health_timeout": 10.0})

    text = str(raised.value)
    assert raised.value.exit_code == 1
    assert "is back and running, but its health URL does not answer either" in text
    assert "components.botserver.health" in text
    assert file_sha256(world.binary) == old_sha
    assert world.health()["commit"] == OLD and len(world.running()) == 1


@pytest.mark.parametrize("fault", [Fault.FAIL_AT_START, Fault.NEVER_HEALTHY])
def test_seed_strategy_failure_is_rolled_back(world, artifacts, fault):
    old_sha = deployed(world, artifacts)

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW, fault), strategy="seed", component={"health_timeout": 10.0})

    assert raised.value.exit_code == 1 and "rolled back" in str(raised.value)
    assert file_sha256(world.binary) == old_sha
    assert world.health()["commit"] == OLD and len(world.running()) == 1
    assert not Path(f"{world.binary}.lock").exists()
    assert world.deploy_log()[-1]["result"] == "failed, rolled back"


def test_a_damaged_upload_is_caught_before_the_swap(world, artifacts, mocker, tmp_path):
    old_sha = deployed(world, artifacts)
    pids = world.running()
    real_send, real_through = transfer.PendingUpload.send, transfer.upload_through
    damaged = tmp_path / "botserver"  # what arrives is not what was hashed: one byte differs
    data = bytearray(artifacts(NEW).read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(data)

    def send_damaged(pending, *, progress=None, known=None):
        pending.local = damaged
        return real_send(pending, progress=progress)

    def through_damaged(sink, local, remote_path, *, progress=None, known=None):
        return real_through(sink, damaged, remote_path, progress=progress)

    mocker.patch.object(transfer.PendingUpload, "send", autospec=True, side_effect=send_damaged)
    mocker.patch.object(transfer, "upload_through", side_effect=through_damaged)
    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW))

    assert "the copy is damaged" in str(raised.value)
    assert "unchanged" in str(raised.value)
    assert_untouched(world, old_sha, pids)
    assert not Path(f"{world.binary}.new").exists()


def test_a_service_running_as_another_user_is_warned_about(world, artifacts):
    out = io.StringIO()
    world.deploy(artifacts(NEW), out=out, component={"run_as": ""})  # runs as the ssh user
    assert world.health()["commit"] == NEW
    assert f"runs as root, not {world.user}: check `run_as`" in out.getvalue()


# --- the plan is what runs ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("far_end", "fault"),
    [("python3", Fault.NONE), ("sh", Fault.NONE), ("python3", Fault.SLOW_START)],
    ids=["python3", "sh", "python3-slow-start"],
)
def test_the_commands_executed_are_the_ones_dry_run_printed(
    world, artifacts, mocker, far_end, fault
):
    if far_end == "sh":  # a target without python3: the session is sh, the upload a channel
        mocker.patch.object(transfer, "PYTHONS", ())
    deployed(world, artifacts)
    same = {"clock": lambda: 1_900_000_000.0, "token": "feedc0de0123", "commit": NEW}
    out = io.StringIO()
    new_binary = artifacts(NEW, fault)
    plan = world.deploy(new_binary, dry_run=True, verbose=True, out=out, **same)
    planned = [(step.name, [c.text for c in step.commands]) for step in plan.steps]
    sent = mocker.spy(Session, "run")
    put = mocker.spy(Session, "put")
    opened = mocker.spy(Remote, "channel")

    world.deploy(new_binary, **same)

    executed = [call.args[1] for call in sent.call_args_list]
    paths = layout.Paths(str(world.binary))
    blocks = (layout.prelude(paths), layout.prelude(paths, steps=False), far_end_library.probes())
    shared = {sum(1 for line in block.splitlines() if line.strip()): block for block in blocks}
    whole = re.sub(
        r"\[the (\d+) shared lines shown in full above\]",
        lambda named: shared[int(named.group(1))],
        out.getvalue(),
    )
    printed = "".join(whole.split())  # lines are indented and numbered when printed
    at = 0
    for command in executed:  # each one planned, in its step; the steps in the plan's order
        step = next((i for i in range(at, len(planned)) if command in planned[i][1]), None)
        assert step is not None, f"not in the plan (or out of order):\n{command}"
        at = step  # within a step, a command may repeat: health checks again until ready
        assert "".join(command.split()) in printed
    service = dict(planned)["restart"][-1]
    assert service in executed and "kill -TERM" in service  # the fused script really ran

    health = dict(planned)["health"]
    if fault is Fault.SLOW_START:  # not ready at the first check: checked again, as planned
        assert sum(command == health[0] for command in executed) > 1

    channels = [call.args[1] for call in opened.call_args_list]
    upload = dict(planned)["upload"]
    new, size = f"{world.binary}.new", new_binary.stat().st_size
    if far_end == "python3":
        assert channels == [session.launcher_command()]  # one channel for the whole deploy
        assert [call.args[1:3] for call in put.call_args_list] == [(new, size)]
        assert upload[0] == session.put_line(new, size)
    else:
        assert channels[0] == session.launcher_command() and len(channels) == 2
        assert not put.called
        assert any(channels[1] in command for command in upload)  # the receiver, as planned
    assert world.health()["commit"] == NEW


# --- a deploy killed half-way ---------------------------------------------------------------------
def gbdeploy(world: World, directory: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*command_line(world, directory), *args],
        cwd=directory,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def journal_phases(world: World) -> list[str]:
    """The phases the target's journal shows, in order ([] when there is none)."""
    try:
        text = Path(f"{world.binary}.journal").read_text()
    except OSError:
        return []
    return re.findall(r'"phase": "([a-z-]+)"', text)


def kill_at_phase(world: World, directory: Path, phase: str, artifact: Path, strategy: str) -> None:
    """`gbdeploy deploy --artifact ARTIFACT --strategy STRATEGY` SIGKILLed at `phase`, as the
    target's journal shows it; returns once the target's side came to rest."""
    if phase == "stopped":  # seed stops before the upload: killed while its upload is held
        process = stalled_mid_upload(world, directory, artifact, strategy)
        assert journal_phases(world)[-1] == "stopped", journal_phases(world)
    else:
        options = ("--artifact", str(artifact), "--strategy", strategy)
        process = subprocess.Popen(
            [*command_line(world, directory), "deploy", "botserver", *options],
            cwd=directory,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        assert wait_for(lambda: phase in journal_phases(world), deadline_seconds=120)
    finally:
        process.kill()
        process.communicate()
    if phase != "stopped":
        # The service script ignores the hangup and runs to its end (`started`) on the target.
        assert wait_for(lambda: journal_phases(world)[-1:] == ["started"], deadline_seconds=120)


@pytest.mark.parametrize(
    ("strategy", "phase", "said"),
    [
        ("seed", "stopped", "it had STOPPED the service"),
        # killed after the swap, the fused script still runs to its end on the target
        ("staged", "swapped", "it had started the new binary, which never passed"),
        ("staged", "started", "it had started the new binary, which never passed"),
    ],
)
def test_after_a_killed_deploy_the_next_command_says_what_it_left_and_recovers(
    world, artifacts, tmp_path, strategy, phase, said
):
    deployed(world, artifacts)
    world.deploy(artifacts(OLD), commit=OLD, force=True)  # OLD is a release that passed health
    big = artifacts(NEW, Fault.NEVER_HEALTHY, pad_to=32 << 20)
    kill_at_phase(world, tmp_path, phase, big, strategy)

    status = gbdeploy(world, tmp_path, "status", "--component", "botserver")
    assert "LOCKED" in status.stdout and said in status.stdout, status.stdout
    assert "gbdeploy deploy botserver --recover" in status.stdout
    again = gbdeploy(world, tmp_path, "deploy", "botserver", "--artifact", str(artifacts(NEW)))
    assert again.returncode == 1
    assert said in again.stderr and "--recover" in again.stderr
    as_json = json.loads(gbdeploy(world, tmp_path, "status", "--json").stdout)
    assert as_json[0]["lock"]["journal"][-1]["phase"] == journal_phases(world)[-1]

    recovered = gbdeploy(world, tmp_path, "deploy", "botserver", "--recover")

    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert world.health()["commit"] == OLD and len(world.running()) == 1
    assert file_sha256(world.binary) == file_sha256(artifacts(OLD))
    assert not Path(f"{world.binary}.lock").exists()
    assert not Path(f"{world.binary}.journal").exists()
    assert world.deploy_log()[-1]["recovered"] is True


def test_a_lock_without_holder_is_shown_by_status(world, artifacts, tmp_path):
    deployed(world, artifacts)
    Path(f"{world.binary}.lock").mkdir()
    out = io.StringIO()
    deploy.run_status(world.settings(), Reporter(stream=out), component="botserver")
    text = out.getvalue()
    assert "LOCKED   for " in text and "no holder record" in text
    assert f"rm -rf -- {world.binary}.lock" in text


def test_sigterm_while_the_service_is_stopped_puts_it_back(world, artifacts, tmp_path):
    """A cancelled CI job (SIGTERM) during a seed deploy's upload, the service stopped: the
    undo, on a fresh connection, starts the previous binary again."""
    old_sha = deployed(world, artifacts)
    journal = Path(f"{world.binary}.journal")
    process = stalled_mid_upload(world, tmp_path, artifacts(NEW, pad_to=48 << 20), "seed")
    try:
        assert world.running() == [] and journal_phases(world)[-1] == "stopped"
        process.terminate()
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 1, stderr
    assert "interrupted" in stderr and "rolled back" in stderr
    assert world.health()["commit"] == OLD and len(world.running()) == 1
    assert file_sha256(world.binary) == old_sha
    assert not Path(f"{world.binary}.lock").exists() and not journal.exists()
