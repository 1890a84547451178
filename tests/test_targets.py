"""Containers behind their host, as General Bots' later production reaches them:
`ssh HOST "sudo -n incus exec bot:system -- …"`, over a real sshd with stand-in sudo and incus."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gbdeploy.config import Settings, SshSettings, Target
from gbdeploy.errors import ConfigError, PreflightError
from gbdeploy.remote.connection import Remote, wrap_for_target
from gbdeploy_sandbox.procs import kill_pids, pids_running, pids_under, wait_for
from gbdeploy_sandbox.service import build_service
from gbdeploy_sandbox.sshd import LoopbackSshd, free_port
from gbdeploy_sandbox.standins import StandinWorld

OLD, NEW = "aaaaaaa1111", "bbbbbbb2222"
CONTAINER = "bot:system"


def _directory(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)  # the service user traverses it
    return path


@pytest.fixture(scope="module")
def incus_host() -> Iterator[tuple[LoopbackSshd, StandinWorld]]:
    """An Incus host of its own (alias `bot-host`) with `sudo` and `incus` on its PATH, holding
    the container `system` behind the remote `bot`. Its sudo is on no other test's PATH."""
    world = StandinWorld(_directory("gbdeploy-incus-standins-")).install()
    world.install_program("incus", "incus")
    world.install_program("sudo", "sudo")
    world.add_container(CONTAINER)
    directory = _directory("gbdeploy-incus-sshd-")
    with LoopbackSshd(directory, alias="bot-host", extra_path=[world.bin]) as server:
        yield server, world
    shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(world.directory, ignore_errors=True)


def incus_target(sshd: LoopbackSshd, container: str = CONTAINER) -> Target:
    return Target("system", sshd.alias, container=container, via="incus", sudo=True)


def test_the_command_goes_through_sudo_and_incus_with_every_value_quoted():
    target = Target("s", "host", container="bot:system", via="incus", sudo=True)
    assert wrap_for_target(target, "echo 'x' $HOME") == (
        "sudo -n incus exec bot:system -- sh -c 'echo '\"'\"'x'\"'\"' $HOME'"
    )
    old_style = Target("s", "host", lxc="pragmatismo-system")  # {ssh, lxc} keeps working
    assert (old_style.container, old_style.via, old_style.sudo) == (
        "pragmatismo-system",
        "lxc",
        False,
    )
    assert wrap_for_target(old_style, "true") == "lxc exec pragmatismo-system -- sh -c true"


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"container": "system; reboot"}, "targets.system.container"),
        ({"container": "system", "via": "docker"}, "targets.system.via"),
        ({"sudo": True}, "targets.system.sudo"),
        ({"lxc": "a", "container": "b"}, "targets.system.lxc"),
    ],
)
def test_a_bad_target_is_a_config_error_naming_the_key(fields, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as raised:
        Settings.from_mapping({"targets": {"system": {"ssh": "host", **fields}}})
    assert raised.value.exit_code == 2


def test_commands_run_in_the_container_through_sudo(incus_host):
    sshd, world = incus_host
    with Remote(incus_target(sshd), SshSettings(config=str(sshd.ssh_config))) as remote:
        result = remote.run("printf %s \"$INCUS_STANDIN_CONTAINER\"; printf ' %s' 'a b'")
        assert remote.description.endswith("(sudo incus bot:system)")
        assert remote.user == "root"
    assert result.stdout == f"{CONTAINER} a b"
    assert sudo_log_lines(world)[-1] == (
        f"{sshd.user} : USER=root ; COMMAND=incus exec {CONTAINER} -- sh -c "
        "printf %s \"$INCUS_STANDIN_CONTAINER\"; printf ' %s' 'a b'"
    )


@pytest.mark.parametrize(
    ("container", "says"),
    [
        ("bot:nope", "container 'bot:nope' not found on bot-host (targets.system.container)"),
        ("elsewhere:system", "incus on bot-host has no remote 'elsewhere'"),
    ],
)
def test_an_unknown_container_or_remote_is_a_clear_failure(incus_host, container, says):
    sshd, _ = incus_host
    remote = Remote(incus_target(sshd, container), SshSettings(config=str(sshd.ssh_config)))
    with remote, pytest.raises(PreflightError) as raised:
        remote.run("true")
    assert says in str(raised.value) and raised.value.exit_code == 2


def sudo_log_lines(world: StandinWorld) -> list[str]:
    path = world.directory / "sudo.log"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def incus_project(incus_host, tmp_path, gbdeploy_env, service_user, monkeypatch):
    """A gbdeploy.yaml whose botserver runs in `bot:system` behind `bot-host`, under a fresh
    target directory; every process started from it is stopped by pid afterwards."""
    sshd, _ = incus_host
    root = _directory("gbdeploy-incus-target-")
    (root / "opt/gbo/bin").mkdir(parents=True)
    (root / "opt/gbo/logs").mkdir(parents=True)
    port = free_port()
    config = {
        "forge": {"url": "http://127.0.0.1:9", "timeout": 2},
        "ssh": {"config": str(sshd.ssh_config)},
        "targets": {
            "system": {"ssh": sshd.alias, "container": CONTAINER, "via": "incus", "sudo": True}
        },
        "components": {
            "botserver": {
                "binary": str(root / "opt/gbo/bin/botserver"),
                "user": service_user,
                "start": "./botserver --noconsole",
                "run_as": "runuser -u {user} --",
                "log": str(root / "opt/gbo/logs/error.log"),
                "health": f"http://localhost:{port}/health",
                "env": {"PORT": str(port)},
                "stop_timeout": 5,
                "health_timeout": 15,
            },
            "botui": {"enabled": False},
        },
    }
    (tmp_path / "gbdeploy.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    yield root / "opt/gbo/bin/botserver", incus_host[1]
    kill_pids(pids_under(root))
    shutil.rmtree(root, ignore_errors=True)


def test_deploy_verify_and_rollback_through_sudo_incus_on_the_host(
    incus_project, run_gbdeploy, tmp_path
):
    binary, world = incus_project
    logged = len(sudo_log_lines(world))
    old = build_service(tmp_path / "old" / "botserver", OLD)
    new = build_service(tmp_path / "new" / "botserver", NEW)

    first = run_gbdeploy("deploy", "botserver", "--artifact", str(old), "--commit", OLD)
    assert first.code == 0, first.text
    second = run_gbdeploy("deploy", "botserver", "--artifact", str(new), "--commit", NEW)
    assert second.code == 0, second.text
    assert "(sudo incus bot:system)" in second.text

    [pid] = pids_running(binary)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"INCUS_STANDIN_CONTAINER={CONTAINER}".encode() in environ  # started in the container
    assert not [v for v in environ if v.startswith(b"SUDO_")]  # nothing of the host's went in
    assert binary.read_bytes() == new.read_bytes()  # the upload went through the same wrap

    status = run_gbdeploy("status", "--component", "botserver")
    assert status.code == 0, status.text
    assert NEW in status.text

    verified = run_gbdeploy("verify", "botserver", "--commit", NEW)
    assert verified.code == 0, verified.text
    assert "botserver is verified" in verified.text

    wrong = run_gbdeploy("verify", "botserver", "--commit", OLD)
    assert wrong.code == 1, wrong.text

    back = run_gbdeploy("rollback", "botserver")
    assert back.code == 0, back.text
    assert wait_for(lambda: binary.read_bytes() == old.read_bytes() and pids_running(binary))
    assert run_gbdeploy("verify", "botserver", "--commit", OLD).code == 0

    # Every command of all of that (the upload's receiving end included) ran through sudo.
    commands = sudo_log_lines(world)[logged:]
    assert len(commands) > 10
    assert [
        c
        for c in commands
        if not c.startswith(f"root : USER=root ; COMMAND=incus exec {CONTAINER} -- sh -c ")
    ] == []
