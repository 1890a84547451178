"""The remote layer against a real sshd: host keys, quoting, lxc wrapping, failures."""

from __future__ import annotations

import subprocess

import paramiko
import pytest

from gbdeploy.config import Settings, SshSettings, Target
from gbdeploy.errors import ConfigError, HostKeyError, PreflightError, RemoteError
from gbdeploy.remote.connection import Remote, quote, wrap_for_target


def remote_for(sshd, *, lxc=None, accept_new=False) -> Remote:
    return Remote(
        Target("system", sshd.alias, lxc=lxc),
        SshSettings(config=str(sshd.ssh_config), accept_new_host_keys=accept_new),
    )


def test_runs_commands_as_the_configured_user(sshd):
    with remote_for(sshd) as remote:
        result = remote.run("id -un; printf %s 'a b'")
    assert result.stdout.splitlines() == [sshd.user, "a b"]


def test_a_failing_command_names_the_command_and_its_stderr(sshd):
    with remote_for(sshd) as remote, pytest.raises(RemoteError) as raised:
        remote.run("echo boom >&2; exit 7")
    assert "exit 7" in str(raised.value)
    assert "boom" in str(raised.value)
    assert raised.value.exit_code == 1


def test_quoted_values_reach_the_remote_unchanged(sshd):
    hostile = "x'; touch /tmp/gbdeploy-pwned-$$; echo '$(id) `id` \"q\" \n"
    with remote_for(sshd) as remote:
        result = remote.run(f"printf %s {quote(hostile)}")
    assert result.stdout == hostile


def test_lxc_targets_run_inside_the_container(sshd, standins):
    standins.add_container("pragmatismo-system")
    with remote_for(sshd, lxc="pragmatismo-system") as remote:
        result = remote.run('printf %s "$LXC_STANDIN_CONTAINER"')
    assert result.stdout == "pragmatismo-system"
    assert wrap_for_target(Target("s", "h", lxc="bot:c-1"), "echo 'x'") == (
        "lxc exec bot:c-1 -- sh -c 'echo '\"'\"'x'\"'\"''"
    )
    with pytest.raises(ConfigError, match=r"targets\.s\.lxc"):
        Settings.from_mapping({"targets": {"s": {"ssh": "h", "lxc": "c 1"}}})


def test_an_unknown_container_is_a_clear_failure(sshd):
    with (
        remote_for(sshd, lxc="no-such-container") as remote,
        pytest.raises(PreflightError) as raised,
    ):
        remote.run("true")
    assert "container 'no-such-container' not found on" in str(raised.value)


def test_unknown_host_key_is_refused_with_how_to_add_it(sshd, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        sshd.ssh_config.read_text().replace(str(sshd.known_hosts), str(tmp_path / "empty"))
    )
    remote = Remote(Target("system", sshd.alias), SshSettings(config=str(config)))
    with pytest.raises(HostKeyError) as raised:
        remote.run("true")
    assert raised.value.exit_code == 2
    assert "ssh-keyscan -p" in str(raised.value)
    assert not (tmp_path / "empty").exists()


def test_accept_new_records_the_key_then_trusts_it(sshd, tmp_path):
    config = tmp_path / "ssh_config"
    known = tmp_path / "known"
    config.write_text(sshd.ssh_config.read_text().replace(str(sshd.known_hosts), str(known)))
    settings = SshSettings(config=str(config), accept_new_host_keys=True)
    with Remote(Target("system", sshd.alias), settings) as remote:
        remote.run("true")
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519" in known.read_text()
    strict = SshSettings(config=str(config))
    with Remote(Target("system", sshd.alias), strict) as remote:
        assert remote.run("echo again").stdout == "again\n"


def test_accepting_a_new_host_key_keeps_every_other_known_host(sshd, tmp_path):
    config = tmp_path / "ssh_config"
    known = tmp_path / "known"
    other_host = (
        "other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherHostKeyStaysWhereItWas0000\n"
    )
    known.write_text(other_host)
    config.write_text(sshd.ssh_config.read_text().replace(str(sshd.known_hosts), str(known)))
    settings = SshSettings(config=str(config), accept_new_host_keys=True)
    with Remote(Target("system", sshd.alias), settings) as remote:
        remote.run("true")
    lines = known.read_text().splitlines(keepends=True)
    assert lines[0] == other_host
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519" in lines[1]


def test_stricthostkeychecking_accept_new_in_the_ssh_config_is_honoured(sshd, tmp_path):
    """As OpenSSH does: the config's accept-new records an unknown host's key and trusts it."""
    config = tmp_path / "ssh_config"
    known = tmp_path / "known"
    text = sshd.ssh_config.read_text().replace(str(sshd.known_hosts), str(known))
    assert "StrictHostKeyChecking yes" in text
    config.write_text(text.replace("StrictHostKeyChecking yes", "StrictHostKeyChecking accept-new"))
    with Remote(Target("system", sshd.alias), SshSettings(config=str(config))) as remote:
        assert remote.run("echo in").stdout == "in\n"
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519" in known.read_text()


def test_a_changed_host_key_is_always_refused(sshd, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    algorithm, key = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known"
    known.write_text(f"[127.0.0.1]:{sshd.port} {algorithm} {key}\n")
    config = tmp_path / "ssh_config"
    config.write_text(sshd.ssh_config.read_text().replace(str(sshd.known_hosts), str(known)))
    remote = Remote(
        Target("system", sshd.alias), SshSettings(config=str(config), accept_new_host_keys=True)
    )
    with pytest.raises(HostKeyError, match="CHANGED"):
        remote.run("true")


def test_an_unreachable_host_says_how_to_check_it(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host dead\n    HostName 127.0.0.1\n    Port 1\n")
    remote = Remote(Target("system", "dead"), SshSettings(config=str(config), connect_timeout=5))
    with pytest.raises(RemoteError) as raised:
        remote.run("true")
    assert "ssh -o ConnectTimeout=5 dead hostname" in str(raised.value)


def test_the_ci_key_and_known_hosts_from_settings_are_used(sshd, tmp_path):
    # The runner's ssh config names the host but holds neither key nor known_hosts: the deploy
    # job passes those written from secrets (ssh.identity_file, ssh.known_hosts).
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host {sshd.alias}\n    HostName 127.0.0.1\n    Port {sshd.port}\n    User {sshd.user}\n"
        f"    IdentitiesOnly yes\n    UserKnownHostsFile {tmp_path / 'none'}\n"
    )
    settings = SshSettings(
        config=str(config), identity_file=str(sshd.client_key), known_hosts=str(sshd.known_hosts)
    )
    with Remote(Target("system", sshd.alias), settings) as remote:
        assert remote.run("echo in").stdout == "in\n"
    with pytest.raises(HostKeyError):
        Remote(Target("system", sshd.alias), SshSettings(config=str(config))).run("true")


def test_the_test_suite_itself_cannot_reach_beyond_loopback():
    import httpx

    with pytest.raises(httpx.ConnectError, match=r"only reach 127\.0\.0\.1"):
        httpx.get("http://alm.pragmatismo.com.br/api/v1/version", timeout=2)


def test_the_ssh_config_is_read_with_its_includes_as_openssh_does(sshd, tmp_path, monkeypatch):
    # The alias lives in an included file (relative to ~/.ssh, like Debian's ssh_config.d).
    home = tmp_path / "home"
    (home / ".ssh" / "config.d").mkdir(parents=True)
    (home / ".ssh" / "config.d" / "50-prod.conf").write_text(sshd.ssh_config.read_text())
    (home / ".ssh" / "config.d" / "ignored.txt").write_text("Host *\n    Port 1\n")
    config = home / ".ssh" / "config"
    config.write_text("# production hosts\nInclude config.d/*.conf\n")
    monkeypatch.setenv("HOME", str(home))

    with Remote(Target("system", sshd.alias), SshSettings(config=str(config))) as remote:
        assert remote.run("echo included").stdout == "included\n"


def test_an_include_loop_is_a_clear_config_error(tmp_path):
    config = tmp_path / "config"
    config.write_text(f"Include {config}\n")
    with pytest.raises(ConfigError, match="Include nested deeper"):
        Remote(Target("system", "anything"), SshSettings(config=str(config)))


def test_an_alias_missing_from_the_ssh_config_is_exit_2_naming_it(sshd, mocker):
    connect = mocker.spy(paramiko.SSHClient, "connect")
    remote = Remote(Target("system", "pragmatismo-sytem"), SshSettings(config=str(sshd.ssh_config)))
    with pytest.raises(ConfigError) as raised:
        remote.run("true")
    assert raised.value.exit_code == 2
    assert raised.value.key == "targets.system.ssh"
    assert "'pragmatismo-sytem' is not a Host in the ssh config" in str(raised.value)
    assert str(sshd.ssh_config) in str(raised.value)
    assert connect.call_count == 0  # refused before any connection attempt


def test_an_ssh_config_that_does_not_exist_is_exit_2_naming_the_file(tmp_path):
    missing = tmp_path / "no-such-config"
    with pytest.raises(ConfigError) as raised:
        Remote(Target("system", "pragmatismo-system"), SshSettings(config=str(missing)))
    assert raised.value.exit_code == 2
    assert raised.value.key == "ssh.config" and str(missing) in str(raised.value)


def test_a_host_name_that_does_not_resolve_fails_before_connecting(tmp_path, mocker):
    config = tmp_path / "ssh_config"
    config.write_text("Host prod\n    HostName prod.example.invalid\n    User admin\n")
    connect = mocker.spy(paramiko.SSHClient, "connect")
    remote = Remote(Target("system", "prod"), SshSettings(config=str(config)))
    with pytest.raises(PreflightError) as raised:
        remote.run("true")
    assert raised.value.exit_code == 2
    assert "host name 'prod.example.invalid' of ssh target prod does not resolve" in str(
        raised.value
    )
    assert "HostName under `Host prod`" in str(raised.value)
    assert connect.call_count == 0


def test_a_jump_host_resolves_the_name_itself(tmp_path, mocker):
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host prod\n    HostName prod.internal.invalid\n    ProxyJump bastion\n"
        "Host bastion\n    HostName 127.0.0.1\n    Port 1\n"
    )
    remote = Remote(Target("system", "prod"), SshSettings(config=str(config), connect_timeout=5))
    with pytest.raises(RemoteError, match="cannot reach prod"):  # got as far as connecting
        remote.run("true")
