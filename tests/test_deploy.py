"""The deploy step, rollback and status against a real sshd, real processes and real files."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gbdeploy import deploy
from gbdeploy.artifact import file_sha256
from gbdeploy.config import Restart, SshSettings
from gbdeploy.deploy import deployment
from gbdeploy.errors import (
    DeployFailed,
    LockHeld,
    PreflightError,
    RemoteError,
    RestoreFailed,
    UsageError,
)
from gbdeploy.output import Reporter
from gbdeploy_sandbox.procs import executable_of, kill_pids, pids_under, wait_for
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


# --- happy paths ----------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["staged", "seed"])
def test_deploy_replaces_the_running_process(world, artifacts, strategy):
    old_sha = deployed(world, artifacts)
    old_pids = world.running()
    out = io.StringIO()

    world.deploy(artifacts(NEW), strategy=strategy, out=out)

    assert world.health()["commit"] == NEW
    assert file_sha256(world.binary) == file_sha256(artifacts(NEW))
    assert file_sha256(Path(f"{world.binary}.prev")) == old_sha
    pids = world.running()
    assert len(pids) == 1 and pids[0] not in old_pids
    assert Path(f"/proc/{pids[0]}").stat().st_uid == Path(world.binary).stat().st_uid
    assert Path(world.binary).owner() == world.user
    assert os.stat(world.binary).st_mode & 0o777 == 0o755
    assert not Path(f"{world.binary}.lock").exists()
    assert not Path(f"{world.binary}.new").exists()
    entry = world.deploy_log()[-1]
    assert entry["result"] == "ok" and entry["strategy"] == strategy and entry["commit"] == NEW
    assert entry["sha256"] == file_sha256(artifacts(NEW))
    assert "→ health … ok" in out.getvalue()


def test_first_deploy_to_an_empty_target(world, artifacts):
    world.deploy(artifacts(OLD), commit=OLD)
    assert world.health()["commit"] == OLD
    assert not Path(f"{world.binary}.prev").exists()
    assert world.deploy_log()[-1]["result"] == "ok"


def systemd_unit(world, standins, exec_start: str) -> tuple[str, dict]:
    """A stand-in unit running the world's binary; the deploy options that restart through it."""
    unit = f"gbtest-{world.port}.service"
    standins.add_unit(
        unit,
        exec_start=exec_start,
        user=world.user,
        working_directory=str(world.binary.parent),
        environment={"PORT": str(world.port)},
        log=str(world.log),
    )
    return unit, {"component": {"restart": Restart("systemd", unit), "start": None}}


@pytest.mark.parametrize("strategy", ["staged", "seed"])
def test_systemd_unit_is_stopped_and_started(world, artifacts, standins, strategy):
    unit, systemd = systemd_unit(world, standins, "./botserver --noconsole")
    world.deploy(artifacts(OLD), commit=OLD, **systemd)
    old_pid = standins.unit_pid(unit)
    assert world.health()["commit"] == OLD and world.running() == [old_pid]

    world.deploy(artifacts(NEW), strategy=strategy, **systemd)

    assert world.health()["commit"] == NEW
    new_pid = standins.unit_pid(unit)
    assert new_pid != old_pid and world.running() == [new_pid]
    assert executable_of(old_pid) is None


def test_systemd_unit_with_a_failing_binary_is_rolled_back(world, artifacts, standins):
    unit, systemd = systemd_unit(world, standins, "./botserver")
    world.deploy(artifacts(OLD), commit=OLD, **systemd)
    old_sha = file_sha256(world.binary)

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW, Fault.FAIL_AT_START), **systemd)

    assert "rolled back" in str(raised.value)
    assert world.health()["commit"] == OLD
    assert file_sha256(world.binary) == old_sha
    assert world.running() == [standins.unit_pid(unit)]


def test_lxc_target_runs_every_command_in_the_container(world, artifacts, standins):
    container = f"pragmatismo-system-{world.port}"
    standins.add_container(container)
    world.lxc = container
    deployed(world, artifacts)
    out = io.StringIO()

    world.deploy(artifacts(NEW), out=out)

    assert world.health()["commit"] == NEW
    [pid] = world.running()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"LXC_STANDIN_CONTAINER={container}".encode() in environ
    assert f"(lxc {container})" in out.getvalue()


def plan_steps(plan: str) -> list[str]:
    """The step names of a printed plan (`  3. upload: …`), in order, each once."""
    names = re.findall(r"^ +\d+\. +([a-z]+):", plan, flags=re.MULTILINE)
    return list(dict.fromkeys(names))


def test_dry_run_prints_the_plan_and_changes_nothing(world, artifacts):
    deployed(world, artifacts)
    before, pids = snapshot(world), world.running()
    short, full = io.StringIO(), io.StringIO()

    world.deploy(artifacts(NEW), dry_run=True, out=short)
    world.deploy(artifacts(NEW), dry_run=True, verbose=True, out=full)

    assert snapshot(world) == before and world.running() == pids
    for plan in (short.getvalue(), full.getvalue()):
        assert "dry run: nothing is changed" in plan
        # staged: the upload before the service is touched, health before the lock goes
        assert plan_steps(plan) == ["lock", "upload", "restart", "health", "finish"]
        binary = str(world.binary)
        for named in (f"{binary}.lock", str(artifacts(NEW)), f"{binary}.new", world.user):
            assert named in plan
        assert f"http://localhost:{world.port}/health" in plan
    assert len(full.getvalue().splitlines()) > 3 * len(short.getvalue().splitlines())


def test_dry_run_does_not_connect(world, artifacts, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {world.sshd.alias}\n    HostName 127.0.0.1\n    Port 1\n")
    settings = dataclasses.replace(world.settings(), ssh=SshSettings(config=str(config)))
    out = io.StringIO()
    deploy.run_deploy(
        settings,
        "botserver",
        Reporter(stream=out),
        artifact=str(artifacts(NEW)),
        strategy="seed",
        dry_run=True,
        verbose=True,
        force=False,
        commit=NEW,
    )
    # seed: the service stops before the upload, and starts after it
    assert plan_steps(out.getvalue()) == ["lock", "stop", "upload", "start", "health", "finish"]


@pytest.mark.parametrize("action", ["deploy", "rollback"])
def test_an_ssh_user_that_cannot_stop_the_service_is_refused_before_anything(
    world, artifacts, tmp_path, action
):
    # As someone other than root or the service user, /proc/PID/exe of the service is unreadable:
    # the stop would find no process and the old service would keep running beside the new one.
    deployed(world, artifacts)
    before, pids = snapshot(world), world.running()
    config = tmp_path / "ssh_config"
    config.write_text(
        world.sshd.ssh_config.read_text().replace(f"User {world.sshd.user}", "User ops")
    )
    settings = dataclasses.replace(world.settings(), ssh=SshSettings(config=str(config)))
    run = deploy.run_deploy if action == "deploy" else deploy.run_rollback
    extra = {"artifact": str(artifacts(NEW)), "commit": NEW} if action == "deploy" else {}

    with pytest.raises(UsageError) as raised:
        run(settings, "botserver", Reporter(stream=io.StringIO()), **extra)

    assert raised.value.exit_code == 2
    assert "ssh user 'ops'" in str(raised.value)
    assert "nothing was changed" in str(raised.value)
    assert snapshot(world) == before and world.running() == pids


def test_unchanged_binary_is_not_uploaded_but_health_is_checked(world, artifacts):
    deployed(world, artifacts)
    before, pids = snapshot(world), world.running()
    out = io.StringIO()

    world.deploy(artifacts(OLD), commit=OLD, out=out)

    assert "unchanged, nothing to do" in out.getvalue()
    assert "→ health … ok" in out.getvalue()
    assert world.running() == pids
    after = snapshot(world)
    assert after["opt/gbo/bin/botserver"] == before["opt/gbo/bin/botserver"]
    assert world.deploy_log()[-1]["result"] == "unchanged"


def test_force_redeploys_an_unchanged_binary(world, artifacts):
    deployed(world, artifacts)
    pids = world.running()
    world.deploy(artifacts(OLD), commit=OLD, force=True)
    assert world.health()["commit"] == OLD
    assert world.running() and world.running() != pids


# --- faults ---------------------------------------------------------------------------------------
def test_binary_that_fails_to_start_is_rolled_back(world, artifacts):
    old_sha = deployed(world, artifacts)

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW, Fault.FAIL_AT_START))

    assert raised.value.exit_code == 1
    message = str(raised.value)
    assert "rolled back" in message and "runs again and is healthy" in message
    assert "cannot start (stand-in built to fail)" in message  # the log tail
    assert world.health()["commit"] == OLD
    assert file_sha256(world.binary) == old_sha
    assert not Path(f"{world.binary}.lock").exists()
    assert world.deploy_log()[-1]["result"] == "failed, rolled back"


def test_a_failed_first_deploy_leaves_no_binary_behind(world, artifacts):
    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW, Fault.FAIL_AT_START))
    assert "there was no binary before" in str(raised.value)
    assert not world.binary.exists() and world.running() == []
    assert not Path(f"{world.binary}.lock").exists()


def test_never_healthy_binary_is_rolled_back(world, artifacts):
    old_sha = deployed(world, artifacts)

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW, Fault.NEVER_HEALTHY), component={"health_timeout": 10.0})

    assert "not healthy" in str(raised.value) and "degraded" in str(raised.value)
    assert "rolled back" in str(raised.value)
    assert world.health()["commit"] == OLD
    assert file_sha256(world.binary) == old_sha
    assert len(world.running()) == 1
    assert not Path(f"{world.binary}.lock").exists()


def test_old_binary_ignoring_sigterm_is_killed(world, artifacts):
    deployed(world, artifacts, fault=Fault.IGNORE_TERM)
    [old_pid] = world.running()
    out = io.StringIO()

    world.deploy(artifacts(NEW), out=out, component={"stop_timeout": 1.0})

    assert executable_of(old_pid) is None
    assert world.health()["commit"] == NEW
    assert f"killed after SIGTERM timeout: {old_pid}" in out.getvalue()


def test_a_held_lock_refuses_and_changes_nothing(world, artifacts):
    old_sha = deployed(world, artifacts)
    pids = world.running()
    lock = Path(f"{world.binary}.lock")
    lock.mkdir()
    holder = json.dumps({"holder": "ci@runner-7", "pid": 4242, "time": "2026-01-01T00:00:00"})
    (lock / "holder").write_text(holder + "\n")
    before = snapshot(world)

    with pytest.raises(LockHeld) as raised:
        world.deploy(artifacts(NEW), force=True)

    assert raised.value.exit_code == 1
    text = str(raised.value)
    assert "ci@runner-7" in text and "4242" in text
    assert f"ssh {world.sshd.alias} " in text and f"rm -rf -- {world.binary}.lock" in text
    assert "gbdeploy deploy botserver --recover" in text
    assert snapshot(world) == before and world.running() == pids
    assert file_sha256(world.binary) == old_sha


def test_a_shell_whose_command_line_holds_the_binary_path_survives(world, artifacts):
    deployed(world, artifacts)
    # An ssh session on the target whose command line contains the path (the `pkill -f` trap).
    bystander = subprocess.Popen(
        world.sshd.ssh_command(f"sleep 30; echo {world.binary}"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: _shell_with(str(world.binary)))
        world.deploy(artifacts(NEW))
        assert world.health()["commit"] == NEW
        assert bystander.poll() is None
        assert _shell_with(str(world.binary))
    finally:
        bystander.kill()
        bystander.wait()


def _shell_with(text: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline and b"sleep 30" in cmdline:
                found.append(int(name))
    return found


def _sshd_sessions(sshd) -> list[int]:
    children = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == sshd.process.pid:
                children.append(int(name))
    return children


def test_connection_dropped_mid_upload_leaves_the_service_untouched(world, artifacts):
    old_sha = deployed(world, artifacts)
    pids = world.running()
    new = Path(f"{world.binary}.new")
    dropped: list[bool] = []

    class DropAtTheFirstProgress(io.StringIO):
        """A terminal: the upload draws its progress here, from inside the upload, after a block
        went out. The server side of the connection dies right then, mid-upload."""

        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> int:
            if text.startswith("\r→ upload") and not dropped:
                kill_pids(_sshd_sessions(world.sshd))
                dropped.append(True)
            return super().write(text)

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW, pad_to=48 << 20), out=DropAtTheFirstProgress())

    assert dropped
    assert raised.value.exit_code == 1
    assert "upload of" in str(raised.value)
    assert "unchanged" in str(raised.value)
    assert_untouched(world, old_sha, pids)
    assert not new.exists()


def test_ctrl_c_during_upload_releases_the_lock(world, artifacts, mocker):
    old_sha = deployed(world, artifacts)
    pids = world.running()
    transfer = deployment.transfer
    for owner, name in ((transfer.PendingUpload, "send"), (transfer, "upload_through")):
        real = getattr(owner, name)

        def upload_then_interrupt(*args, real=real, **kwargs):
            real(*args, **kwargs)
            raise KeyboardInterrupt

        autospec = owner is transfer.PendingUpload
        mocker.patch.object(owner, name, autospec=autospec, side_effect=upload_then_interrupt)
    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW))
    assert "interrupted" in str(raised.value)
    assert_untouched(world, old_sha, pids)


@contextlib.contextmanager
def small_disk(world: World, size: str) -> Iterator[None]:
    """The binary's directory on a tmpfs of `size`; skipped where no tmpfs can be mounted."""
    kill_pids(pids_under(world.root))
    bin_dir = world.binary.parent
    for path in bin_dir.iterdir():
        path.unlink()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(bin_dir)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        kill_pids(pids_under(world.root))
        subprocess.run(["umount", str(bin_dir)], check=True)


def test_a_disk_without_room_for_the_artifact_is_refused_before_the_upload(world, artifacts):
    with small_disk(world, "256k"):
        old_sha = deployed(world, artifacts)
        pids = world.running()

        with pytest.raises(PreflightError) as raised:
            world.deploy(artifacts(NEW, pad_to=1 << 20))

        assert raised.value.exit_code == 2
        assert "components.botserver.binary" in str(raised.value)
        assert "nothing was changed" in str(raised.value)
        assert_untouched(world, old_sha, pids)
        assert not Path(f"{world.binary}.new").exists()


def test_a_full_disk_while_taking_the_lock_leaves_no_lock(world, artifacts):
    with small_disk(world, "256k"):
        old_sha = deployed(world, artifacts)
        pids = world.running()
        filler = world.binary.parent / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)

        with pytest.raises(RemoteError) as raised:
            world.deploy(artifacts(NEW))

        assert raised.value.exit_code == 1
        assert "cannot take the lock" in str(raised.value)
        assert "nothing was changed" in str(raised.value)
        assert not list(world.binary.parent.glob("botserver.lock*"))  # no empty holder left
        assert_untouched(world, old_sha, pids)
        filler.unlink()
        world.deploy(artifacts(NEW))  # and the next deploy is not blocked
        assert world.health()["commit"] == NEW


def test_restore_that_fails_too_exits_5_and_says_what_state_it_left(world, artifacts):
    deployed(world, artifacts)
    # A start hook that damages the kept binary, so the restore has nothing good to put back.
    hook = "printf 'not a binary' > ./botserver.prev; exec ./botserver --noconsole"

    with pytest.raises(RestoreFailed) as raised:
        world.deploy(artifacts(NEW, Fault.FAIL_AT_START), component={"start": hook})

    assert raised.value.exit_code == 5
    text = str(raised.value)
    assert "could NOT be restored" in text and "State now:" in text
    assert "running: NOTHING" in text
    assert "a person must act" in text
    assert not Path(f"{world.binary}.lock").exists()
    assert world.deploy_log()[-1]["result"] == "failed, restore failed"
    out = io.StringIO()  # and `status` says so afterwards
    deploy.run_status(world.settings(), Reporter(stream=out), component="botserver")
    assert "could NOT put the previous binary back" in out.getvalue(), out.getvalue()


# --- rollback and status --------------------------------------------------------------------------
def rollback(world: World, **options) -> str:
    out = io.StringIO()
    deploy.run_rollback(world.settings(), "botserver", Reporter(stream=out), **options)
    return out.getvalue()


def test_rollback_goes_down_the_kept_releases_never_up(world, artifacts):
    old_sha = deployed(world, artifacts)
    world.deploy(artifacts(NEW))

    rollback(world)

    assert world.health()["commit"] == OLD
    assert file_sha256(world.binary) == old_sha
    entry = world.deploy_log()[-1]
    assert entry["action"] == "rollback" and entry["result"] == "ok"
    assert entry["release"] == old_sha
    assert not Path(f"{world.binary}.lock").exists()
    # A second rollback does not move forward to NEW: nothing older is kept.
    with pytest.raises(PreflightError):
        rollback(world)
    assert world.health()["commit"] == OLD


def kept_commits(world: World) -> list[str]:
    lines = Path(f"{world.binary}.releases/list").read_text().splitlines()
    return [line.split()[1] for line in lines]


def test_rollback_to_a_commit_keeps_the_newer_ones_and_rolls_forward(world, artifacts):
    world.deploy(artifacts(OLD), commit=OLD)
    world.deploy(artifacts(NEW), commit=NEW)
    third = "ccccccc3333"
    world.deploy(artifacts(third), commit=third)

    said = rollback(world, to=OLD[:7])

    assert world.health()["commit"] == OLD
    assert file_sha256(world.binary) == file_sha256(artifacts(OLD))
    assert world.deploy_log()[-1]["commit"] == OLD
    assert f"from commit {third}" in said and f"to release {OLD}" in said
    assert kept_commits(world) == [OLD, NEW, third]  # the newer releases stay, in deploy order
    for commit in (OLD, NEW, third):
        assert Path(f"{world.binary}.releases/{file_sha256(artifacts(commit))}").is_file()

    said = rollback(world, to=third)  # a mistaken rollback is undone by rolling forward

    assert f"from commit {OLD}" in said and f"to release {third}" in said
    assert world.health()["commit"] == third
    assert file_sha256(world.binary) == file_sha256(artifacts(third))
    assert kept_commits(world) == [OLD, NEW, third]
    rollback(world)  # and plain `rollback` goes to the one deployed before it
    assert world.health()["commit"] == NEW


def test_kept_releases_are_pruned_to_keep_releases(world, artifacts):
    for commit in ("ddddddd0001", "ddddddd0002", "ddddddd0003", "ddddddd0004"):
        world.deploy(artifacts(commit), commit=commit)
    kept = Path(f"{world.binary}.releases/list").read_text().splitlines()
    assert [line.split()[1] for line in kept] == ["ddddddd0002", "ddddddd0003", "ddddddd0004"]
    files = {p.name for p in Path(f"{world.binary}.releases").iterdir()}
    shas = [line.split()[0] for line in kept]
    assert files == {"list", *shas, *(f"{sha}.start" for sha in shas)}  # each with its recipe


def test_a_rollback_to_a_release_that_fails_to_start_says_what_happened(world, artifacts):
    deployed(world, artifacts)
    world.deploy(artifacts(NEW))
    new_sha = file_sha256(world.binary)
    old_sha = file_sha256(artifacts(OLD))
    release = Path(f"{world.binary}.releases/{old_sha}")
    release.unlink()
    shutil.copyfile(artifacts(OLD, Fault.FAIL_AT_START), release)

    with pytest.raises(DeployFailed) as raised:
        rollback(world)

    text = str(raised.value)
    assert raised.value.exit_code == 1
    assert f"rollback of botserver to release unknown ({old_sha[:12]}) failed" in text
    assert "exited while starting" in text
    assert f"the binary that ran before ({new_sha[:12]}) runs again and is healthy" in text
    assert "there was no binary before" not in text
    assert world.health()["commit"] == NEW
    assert file_sha256(world.binary) == new_sha
    assert not Path(f"{world.binary}.lock").exists()


def test_rollback_without_a_previous_release_is_refused(world, artifacts):
    deployed(world, artifacts)
    with pytest.raises(PreflightError) as raised:
        rollback(world)
    assert raised.value.exit_code == 2
    assert "no healthy release kept on the target from before the running one" in str(raised.value)
    assert world.health()["commit"] == OLD


def test_status_shows_binary_process_health_last_deploy_and_ci(world, artifacts, forgejo):
    deployed(world, artifacts)
    world.deploy(artifacts(NEW))
    [pid] = world.running()
    [run_id] = forgejo.on_push("c1" * 20, workflows=["botserver.yaml"])
    forgejo.finish(run_id, "success")
    out = io.StringIO()

    settings = world.settings(forge=forgejo.forge_settings())
    deploy.run_status(settings, Reporter(stream=out), component="botserver")

    text = out.getvalue()
    sha256 = file_sha256(artifacts(NEW))
    assert f"sha256 {sha256[:12]}" in text and sha256 not in text  # short in the table
    assert f"pid {pid} as {world.user}" in text
    assert f"commit {NEW}" in text
    assert "result ok" in text
    assert f"owner {world.user}:" in text
    assert (
        f"CI       run {run_id} botserver.yaml (#1 in the web UI): success, commit {'c1' * 5}"
        in text
    )


def test_status_without_a_reachable_forge_still_reports_the_target(world, artifacts):
    deployed(world, artifacts)
    out = io.StringIO()
    deploy.run_status(world.settings(), Reporter(stream=out), component="botserver")
    assert f"commit {OLD}" in out.getvalue()
    assert "CI       unavailable: " in out.getvalue()


# --- the command line -----------------------------------------------------------------------------
def test_the_gbdeploy_command_deploys_and_exits_with_the_design_codes(world, artifacts, tmp_path):
    deployed(world, artifacts)
    program = command_line(world, tmp_path)

    def gbdeploy(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*program, *args],
            cwd=tmp_path,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = gbdeploy("deploy", "botserver", "--artifact", str(artifacts(NEW)), "--commit", NEW)
    assert done.returncode == 0, done.stderr
    assert world.health()["commit"] == NEW

    Path(f"{world.binary}.lock").mkdir()
    refused = gbdeploy("deploy", "botserver", "--artifact", str(artifacts(OLD)))
    assert refused.returncode == 1
    assert "holds the lock" in refused.stderr
    Path(f"{world.binary}.lock").rmdir()

    status = gbdeploy("status", "--component", "botserver")
    assert status.returncode == 0, status.stderr
    assert f"commit {NEW}" in status.stdout


def test_upload_progress_is_shown_on_a_terminal_only(world, artifacts):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    world.deploy(artifacts(OLD), commit=OLD, out=terminal)
    world.deploy(artifacts(NEW), out=pipe)
    drawn = re.search(
        r"\r→ upload … [\d.]+ KiB / [\d.]+ KiB \([\d.]+ [KMG]?i?B/s\)", terminal.getvalue()
    )
    assert drawn, terminal.getvalue()
    assert "\r" not in pipe.getvalue()


def test_two_deploys_at_once_never_interleave(world, artifacts, monkeypatch):
    """Two deploys held until both are about to take the lock, then let go together, round after
    round: one is refused or waits its turn; never do both stop and start the service."""
    # Each service, when stopped, notes its commit: the order of the stops on the target.
    stops = world.root / "stops"
    stops.touch(mode=0o666)
    stops.chmod(0o666)  # the service user writes here

    def env(commit: str) -> dict[str, str]:
        return {**world.component().env, "GB_ON_TERM": f"echo {commit} >> {stops}"}

    deployed(world, artifacts)
    world.deploy(artifacts(OLD), commit=OLD, force=True, component={"env": env(OLD)})
    at_the_lock: dict[str, threading.Barrier] = {}
    begins: set[str] = set()
    begin_command, run = deployment.Deployment.begin_command, deployment.Deployment.run

    def recorded_begin(self, **options) -> str:
        command = begin_command(self, **options)
        begins.add(command)
        return command

    def held_at_the_lock(self, command: str, **options) -> str:
        if command in begins:  # the exchange that takes the lock
            at_the_lock["round"].wait(timeout=120)
        return run(self, command, **options)

    monkeypatch.setattr(deployment.Deployment, "begin_command", recorded_begin)
    monkeypatch.setattr(deployment.Deployment, "run", held_at_the_lock)
    contenders = ("ccccccc0001", "ccccccc0002")
    for commit in contenders:
        artifacts(commit)  # built before the race, not inside it
    serving = OLD
    for round_ in range(8):
        stops.write_text("")
        at_the_lock["round"] = threading.Barrier(len(contenders))
        finished: list[tuple[str, str]] = []  # (commit, outcome), in the order they ended

        def one_deploy(commit: str, finished: list[tuple[str, str]]) -> None:
            try:
                world.deploy(
                    artifacts(commit), commit=commit, force=True, component={"env": env(commit)}
                )
                finished.append((commit, "ok"))
            except LockHeld:
                finished.append((commit, "locked"))
            except Exception as error:  # any other outcome fails the round
                finished.append((commit, repr(error)))

        threads = [threading.Thread(target=one_deploy, args=(c, finished)) for c in contenders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        outcomes = sorted(outcome for _, outcome in finished)
        assert outcomes in (["locked", "ok"], ["ok", "ok"]), f"round {round_}: {finished}"
        done = [commit for commit, outcome in finished if outcome == "ok"]
        # Each deploy stopped what the one before it started: none stopped a service twice or
        # found it already stopped by the other.
        assert stops.read_text().split() == [serving, *done[:-1]], f"round {round_}: {finished}"
        serving = done[-1]
        assert world.health()["commit"] == serving and len(world.running()) == 1
        assert not Path(f"{world.binary}.lock").exists()


def test_sigterm_mid_upload_undoes_the_deploy(world, artifacts, tmp_path):
    old_sha = deployed(world, artifacts)
    pids = world.running()
    new = Path(f"{world.binary}.new")
    process = stalled_mid_upload(world, tmp_path, artifacts(NEW, pad_to=48 << 20), "staged")
    try:
        assert new.exists()  # the upload is under way, held by its progress draw
        process.terminate()  # what a cancelled CI job sends
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    print(stdout, stderr)  # shown when an assertion below fails
    assert process.returncode == 1
    assert "interrupted" in stderr
    assert_untouched(world, old_sha, pids)
    assert not new.exists()


def test_rollback_dry_run_names_the_release_and_changes_nothing(world, artifacts):
    deployed(world, artifacts)
    world.deploy(artifacts(NEW))
    before, pids = snapshot(world), world.running()
    out = io.StringIO()

    deploy.run_rollback(world.settings(), "botserver", Reporter(stream=out), dry_run=True)

    old_sha = file_sha256(artifacts(OLD))
    new_sha = file_sha256(artifacts(NEW))
    assert (
        f"rollback botserver from commit {NEW} (sha256 {new_sha[:12]}) to release unknown "
        f"(sha256 {old_sha[:12]})" in out.getvalue()
    )
    assert "dry run: nothing is changed" in out.getvalue()
    assert snapshot(world) == before and world.running() == pids
