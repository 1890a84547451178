"""`logs`: the component's log over the real sshd, the last lines and following until Ctrl-C."""

from __future__ import annotations

import io
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gbdeploy import logs
from gbdeploy.config import Component, Restart
from gbdeploy.errors import PreflightError, RemoteError
from gbdeploy.output import Reporter
from gbdeploy_sandbox.settings import standin_component, target_settings

POLL_BOUND = 60.0  # seconds; only bounds a poll on a loaded machine


def settings_for(sshd, remote_root: Path, service_user: str, **changes):
    log = remote_root / "logs" / "error.log"
    log.parent.mkdir()
    component = standin_component(remote_root / "botserver", log, service_user, 1, **changes)
    return target_settings(sshd, component), log


def test_the_last_n_lines_of_the_log(sshd, remote_root, service_user):
    settings, log = settings_for(sshd, remote_root, service_user)
    log.write_text("".join(f"line {i}\n" for i in range(1, 31)))
    out = io.StringIO()

    logs.run_logs(settings, Reporter(stream=out), "botserver", lines=5)

    assert out.getvalue().splitlines() == [f"line {i}" for i in range(26, 31)]


def test_a_missing_log_is_a_clear_failure_naming_its_key(sshd, remote_root, service_user):
    settings, log = settings_for(sshd, remote_root, service_user)
    with pytest.raises(RemoteError) as raised:
        logs.run_logs(settings, Reporter(stream=io.StringIO()), "botserver", lines=5)
    assert str(log) in str(raised.value)
    assert "components.botserver.log" in str(raised.value)
    assert raised.value.exit_code == 1


def test_a_hostile_log_path_is_quoted(sshd, remote_root, service_user):
    directory = remote_root / "x'; touch pwned; echo '"
    directory.mkdir()
    log = directory / "error.log"
    log.write_text("only line\n")
    component = standin_component(remote_root / "botserver", log, service_user, 1)
    out = io.StringIO()
    logs.run_logs(target_settings(sshd, component), Reporter(stream=out), "botserver", lines=5)
    assert out.getvalue() == "only line\n"
    assert not (Path.home() / "pwned").exists()


def test_systemd_components_without_a_log_file_read_their_units_journal():
    component = Component("botui", "/opt/gbo/bin/botui", restart=Restart("systemd", "ui.service"))
    assert logs.tail_command(component, 7) == "journalctl --no-pager -u ui.service -n 7"
    assert "journalctl --no-pager -u ui.service -n 7 -f &" in logs.tail_command(
        component, 7, follow=True
    )
    with_file = Component("b", "/b", log="/var/log/b.log", restart=Restart("systemd", "u"))
    assert "tail -n 7 -- /var/log/b.log" in logs.tail_command(with_file, 7)


def _config(tmp_path: Path, sshd, log: Path, binary: Path) -> Path:
    path = tmp_path / "gbdeploy.yaml"
    path.write_text(
        f"forge: {{url: 'http://127.0.0.1:9'}}\n"
        f"ssh: {{config: '{sshd.ssh_config}'}}\n"
        f"targets: {{system: {{ssh: {sshd.alias}}}}}\n"
        f"components:\n"
        f"  botserver: {{binary: '{binary}', log: '{log}', target: system}}\n"
        f"  botui: {{enabled: false}}\n"
    )
    return path


def _read_until(process: subprocess.Popen[bytes], wanted: bytes, seen: bytearray) -> bool:
    selector = selectors.DefaultSelector()
    assert process.stdout is not None
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + POLL_BOUND
    while wanted not in seen and time.monotonic() < deadline:
        for _ in selector.select(timeout=1.0):
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                return wanted in seen
            seen += chunk
    return wanted in seen


def _followers(log: Path) -> list[int]:
    """Processes whose command line names this test's own log (the remote `tail -F`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline[:1] == [b"tail"] and str(log).encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_follow_prints_what_is_appended_and_ctrl_c_ends_cleanly(
    sshd, remote_root, service_user, tmp_path, gbdeploy_env
):
    log = remote_root / "error.log"
    log.write_text("old 1\nold 2\nold 3\n")
    config = _config(tmp_path, sshd, log, remote_root / "botserver")
    process = subprocess.Popen(
        [sys.executable, "-m", "gbdeploy", "-f", str(config), "logs", "botserver", "-f", "-n", "2"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen = bytearray()
    try:
        assert _read_until(process, b"old 3\n", seen), bytes(seen)
        with log.open("a") as f:
            f.write("fresh line\n")
        assert _read_until(process, b"fresh line\n", seen), bytes(seen)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=POLL_BOUND)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()
    assert bytes(seen).startswith(b"old 2\nold 3\n")
    assert b"Traceback" not in err
    assert b"following the" in err  # said on stderr, so stdout is the log alone
    deadline = time.monotonic() + POLL_BOUND
    while _followers(log) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _followers(log) == []  # the remote follower ended with us


def test_logs_and_history_go_into_the_targets_container(sshd, standins, remote_root, service_user):
    from gbdeploy import history

    log = remote_root / "error.log"
    log.write_text("inside\n")
    component = standin_component(remote_root / "botserver", log, service_user, 1)
    standins.add_container("pragmatismo-system")
    inside = target_settings(sshd, component, lxc="pragmatismo-system")
    out = io.StringIO()
    logs.run_logs(inside, Reporter(stream=out), "botserver", lines=1)
    assert out.getvalue() == "inside\n"
    assert "(lxc pragmatismo-system)" in history.read_history(inside, component).target

    elsewhere = target_settings(sshd, component, lxc="no-such-container")
    for read in (
        lambda: logs.run_logs(elsewhere, Reporter(stream=io.StringIO()), "botserver", lines=1),
        lambda: history.read_history(elsewhere, component),
    ):
        with pytest.raises(PreflightError) as raised:
            read()
        assert "container 'no-such-container' not found on" in str(raised.value)
