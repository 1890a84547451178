"""Probes: their exact commands and parsers, and each one run for real over sshd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gbdeploy.artifact import file_sha256
from gbdeploy.config import SshSettings, Target
from gbdeploy.remote import probes
from gbdeploy.remote.connection import CommandResult, Remote, quote
from gbdeploy_sandbox.procs import executable_of, kill_pids, pids_under, wait_for
from gbdeploy_sandbox.service import Fault, build_service
from gbdeploy_sandbox.sshd import free_port

HOSTILE = "bot server's $(id) `x`"  # a directory name that breaks any unquoted command


def result(stdout: str, exit_code: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult("probe", exit_code, stdout, stderr)


# --- parsers, no target ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "output",
    [
        "{h}  /opt/gbo/bin/botserver\n",  # sha256sum, busybox
        "{h} */opt/gbo/bin/botserver\n",  # openssl -r
        "{h}\n",  # python3
    ],
)
def test_sha256_parser_reads_every_tool(output):
    digest = "ab" * 32
    assert probes.probe_sha256("/x").parse(result(output.format(h=digest))) == digest


def test_sha256_of_a_missing_file_is_none_and_no_tool_is_an_error():
    assert probes.probe_sha256("/x").parse(result("missing\n")) is None
    with pytest.raises(probes.RemoteError, match="no sha256 tool"):
        probes.probe_sha256("/x").parse(result("", 127, "no sha256 tool (sha256sum …)"))


def test_health_parser_reads_curl_raw_http_and_wget():
    body = '{"status":"ok","commit":"abc1234","version":"1.0"}'
    curl = probes.parse_health("u", result(f"{body}\n__gbdeploy_http_status=200\n"))
    raw = probes.parse_health("u", result(f"HTTP/1.0 200 OK\r\nX: y\r\n\r\n{body}"))
    wget = probes.parse_health("u", result(f"  HTTP/1.1 200 OK\n  Content-Length: 9\n{body}"))
    for health in (curl, raw, wget):
        assert health.ok and health.commit == "abc1234" and health.version == "1.0"
    degraded = probes.parse_health(
        "u", result('{"status":"degraded"}\n__gbdeploy_http_status=503\n')
    )
    assert not degraded.ok and "HTTP 503" in degraded.describe()
    refused = probes.parse_health("u", result("\n__gbdeploy_http_status=000\n", 7, "refused"))
    assert refused.http_status is None and "refused" in refused.describe()


def test_every_value_in_a_command_is_quoted():
    path = f"/opt/{HOSTILE}/botserver"
    for probe in (
        probes.probe_processes(path),
        probes.probe_stat(path),
        probes.probe_sha256(path),
        probes.probe_contains(path, "it's $HOME"),
    ):
        assert quote(path) in probe.command
        assert f" {path}" not in probe.command
    assert quote("it's $HOME") in probes.probe_contains(path, "it's $HOME").command
    with pytest.raises(ValueError):
        probes.probe_health("file:///etc/passwd")


@pytest.mark.parametrize(
    "url",
    [
        "http://x$(touch /tmp/owned)y:80/health",
        "http://a`id`b/health",
        "http://127.0.0.1:99999/health",
        "127.0.0.1:5858/health",
    ],
)
def test_a_health_url_that_is_no_host_and_port_is_refused(url):
    with pytest.raises(ValueError):
        probes.probe_health(url)


def test_the_dev_tcp_fallback_quotes_the_host():
    command = probes.probe_health("http://localhost:5858/health").command
    call = command[command.rindex("\nhttp_get ") :]  # the call line (its request spans lines)
    assert " 127.0.0.1 5858 " in call  # bash's /dev/tcp: HOST PORT


# --- over sshd ------------------------------------------------------------------------------------
@pytest.fixture
def remote(sshd):
    with Remote(Target("system", sshd.alias), SshSettings(config=str(sshd.ssh_config))) as r:
        yield r


@pytest.fixture(scope="module")
def service_binary(tmp_path_factory) -> Path:
    return build_service(tmp_path_factory.mktemp("probe-bin") / "botserver", "c0ffee1")


@pytest.fixture
def running(remote_root, service_binary, service_user):
    """The stand-in service, under a hostile directory name, started as the service user."""
    directory = remote_root / HOSTILE
    directory.mkdir()
    binary = directory / "botserver"
    shutil.copy2(service_binary, binary)
    shutil.chown(binary, user=service_user)
    port = free_port()
    process = subprocess.Popen(
        ["runuser", "-u", service_user, "--", str(binary)],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    yield binary, port, process
    kill_pids(pids_under(remote_root))
    process.wait()


def restricted(remote_root: Path, *tools: str) -> str:
    """A command prefix giving a PATH with only `tools` (as if the target lacked the rest)."""
    directory = remote_root / "restricted-bin"
    directory.mkdir(exist_ok=True)
    for tool in tools:
        source = os.path.realpath(sys.executable) if tool == "python3" else shutil.which(tool)
        assert source, tool
        (directory / tool).symlink_to(source)
    return f"PATH={quote(str(directory))}; export PATH\n"


def run_with(remote: Remote, prefix: str, probe: probes.Probe):
    return probe.parse(remote.run(prefix + probe.command, check=False))


def test_processes_finds_exactly_the_binary_and_its_user(remote, running, service_user):
    binary, _, _ = running
    assert wait_for(lambda: probes.probe_processes(str(binary)).run(remote))
    [found] = probes.probe_processes(str(binary)).run(remote)
    assert executable_of(found.pid) == str(binary)
    assert found.user == service_user and not found.deleted
    # The ssh shell running the probe holds the path in its command line; it is not listed.
    assert probes.probe_processes(str(binary) + "x").run(remote) == []


def test_processes_sees_a_replaced_binary_as_deleted(remote, running):
    binary, _, _ = running
    assert wait_for(lambda: probes.probe_processes(str(binary)).run(remote))
    replacement = binary.with_name("botserver.tmp")
    shutil.copy2(binary, replacement)
    replacement.rename(binary)
    [found] = probes.probe_processes(str(binary)).run(remote)
    assert found.deleted


def test_stat_reports_owner_mode_size_and_mtime(remote, running, service_user):
    binary, _, _ = running
    binary.chmod(0o750)
    st = probes.probe_stat(str(binary)).run(remote)
    assert st.owner == service_user and st.mode == 0o750
    assert st.size == binary.stat().st_size and st.mtime == int(binary.stat().st_mtime)
    assert probes.probe_stat(str(binary) + ".nope").run(remote) is None


def test_stat_falls_back_to_python(remote, running, remote_root):
    binary, _, _ = running
    prefix = restricted(remote_root, "python3")
    assert run_with(remote, prefix, probes.probe_stat(str(binary))) == probes.probe_stat(
        str(binary)
    ).run(remote)


@pytest.mark.parametrize(
    "tools", [(), ("openssl",), ("python3",)], ids=["sha256sum", "openssl", "python3"]
)
def test_sha256_with_each_tool(remote, running, remote_root, tools):
    binary, _, _ = running
    prefix = restricted(remote_root, *tools) if tools else ""
    assert run_with(remote, prefix, probes.probe_sha256(str(binary))) == file_sha256(binary)
    assert run_with(remote, prefix, probes.probe_sha256(str(binary) + ".nope")) is None


def test_sha256_without_any_tool_says_so(remote, running, remote_root):
    binary, _, _ = running
    with pytest.raises(probes.RemoteError, match="no sha256 tool"):
        run_with(remote, restricted(remote_root), probes.probe_sha256(str(binary)))


@pytest.mark.parametrize("tools", [(), ("python3",)], ids=["grep", "python3"])
def test_contains_searches_the_bytes(remote, running, remote_root, tools):
    binary, _, _ = running
    prefix = restricted(remote_root, *tools) if tools else ""
    assert run_with(remote, prefix, probes.probe_contains(str(binary), "commit=c0ffee1")) is True
    assert run_with(remote, prefix, probes.probe_contains(str(binary), "c0ffee2")) is False
    assert run_with(remote, prefix, probes.probe_contains(str(binary) + ".x", "c0ffee1")) is None


@pytest.mark.parametrize(
    "tools", [(), ("wget",), ("bash", "timeout", "cat")], ids=["curl", "wget", "bash-dev-tcp"]
)
def test_health_reads_the_service_answer(remote, running, remote_root, tools):
    _, port, _ = running
    prefix = restricted(remote_root, *tools) if tools else ""
    probe = probes.probe_health(f"http://localhost:{port}/health")
    assert wait_for(lambda: run_with(remote, prefix, probe).ok)
    health = run_with(remote, prefix, probe)
    assert health.commit == "c0ffee1" and health.data["service"] == "botserver"


def test_health_of_a_degraded_and_of_a_dead_service(remote, remote_root, tmp_path):
    binary = build_service(tmp_path / "degraded", "d00d", fault=Fault.NEVER_HEALTHY)
    port = free_port()
    process = subprocess.Popen([str(binary)], env={**os.environ, "PORT": str(port)})
    try:
        probe = probes.probe_health(f"http://localhost:{port}/health")
        assert wait_for(lambda: run_with(remote, "", probe).http_status == 503)
        health = probe.run(remote)
        assert not health.ok and health.data["status"] == "degraded"
    finally:
        process.kill()
        process.wait()
    dead = probes.probe_health(f"http://localhost:{free_port()}/health").run(remote)
    assert dead.http_status is None and not dead.ok and "no answer" in dead.describe()


def test_processes_without_gnu_find_reads_each_exe(remote, running, remote_root):
    binary, _, _ = running
    assert wait_for(lambda: probes.probe_processes(str(binary)).run(remote))
    prefix = restricted(remote_root, "readlink", "stat")  # no find: the readlink loop
    assert run_with(remote, prefix, probes.probe_processes(str(binary))) == probes.probe_processes(
        str(binary)
    ).run(remote)
    assert run_with(remote, prefix, probes.probe_processes(str(binary) + "x")) == []
