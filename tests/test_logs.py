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
from gbdeploy.errors import PreflightError, RemoteError, UsageError
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
    assert "\nfollow journalctl --no-pager -u ui.service -n 7 -f" in logs.tail_command(
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


# --- --since and --grep ---------------------------------------------------------------------------
STAMPED = """\
2026-12-07T09:58:00Z INFO starting
2026-12-07T09:59:30Z ERROR db timeout
  at pool.rs:12
[2026-12-07 10:00:05 WARN] slow request
2026-12-07T10:01:00.123Z ERROR panic in handler
  at handler.rs:99
2026-12-07T10:02:00Z INFO ok
"""


def _shown(settings, **options) -> list[str]:
    out = io.StringIO()
    logs.run_logs(settings, Reporter(stream=out), "botserver", **options)
    return out.getvalue().splitlines()


def test_grep_keeps_the_matching_lines_of_the_whole_log(sshd, remote_root, service_user):
    settings, log = settings_for(sshd, remote_root, service_user)
    log.write_text(STAMPED)
    assert _shown(settings, lines=20, grep="ERROR|panic") == [
        "2026-12-07T09:59:30Z ERROR db timeout",
        "2026-12-07T10:01:00.123Z ERROR panic in handler",
    ]
    assert _shown(settings, lines=1, grep="ERROR") == [
        "2026-12-07T10:01:00.123Z ERROR panic in handler"
    ]
    assert _shown(settings, lines=5, grep="no such thing") == []


def test_since_keeps_stamped_lines_from_that_time_with_their_continuations(
    sshd, remote_root, service_user
):
    settings, log = settings_for(sshd, remote_root, service_user)
    log.write_text(STAMPED)
    assert _shown(settings, lines=50, since="2026-12-07T10:00") == [
        "[2026-12-07 10:00:05 WARN] slow request",
        "2026-12-07T10:01:00.123Z ERROR panic in handler",
        "  at handler.rs:99",
        "2026-12-07T10:02:00Z INFO ok",
    ]
    assert _shown(settings, lines=50, since="2026-12-07T09:59:00Z", grep="ERROR") == [
        "2026-12-07T09:59:30Z ERROR db timeout",
        "2026-12-07T10:01:00.123Z ERROR panic in handler",
    ]


def test_since_on_a_log_without_timestamps_says_so(sshd, remote_root, service_user):
    settings, log = settings_for(sshd, remote_root, service_user)
    log.write_text("plain line\nanother\n")
    with pytest.raises(UsageError) as raised:
        _shown(settings, lines=5, since="1h")
    assert raised.value.exit_code == 2
    assert "starts with a date and time" in str(raised.value)


def test_since_accepts_an_age_or_an_iso_time_and_refuses_anything_else():
    from datetime import datetime, timezone

    now = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
    assert logs.parse_since("30m", now) == datetime(2026, 12, 7, 9, 30, tzinfo=timezone.utc)
    assert logs.parse_since("2d", now) == datetime(2026, 12, 5, 10, 0, tzinfo=timezone.utc)
    assert logs.parse_since("2026-12-07T12:00+02:00", now) == now
    with pytest.raises(UsageError, match="neither an ISO time nor an age"):
        logs.parse_since("yesterday", now)


def test_an_iso_time_without_a_zone_is_utc_whatever_this_machines_zone(monkeypatch):
    """The log's stamps are read as UTC: a --since without a zone is UTC too, not local time."""
    import time
    from datetime import datetime, timezone

    monkeypatch.setenv("TZ", "BRT3")  # POSIX: three hours behind UTC, no tz database needed
    time.tzset()
    try:
        assert time.timezone == 3 * 3600
        since = logs.parse_since("2026-12-07T09:30")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert since == datetime(2026, 12, 7, 9, 30, tzinfo=timezone.utc)


def test_a_hostile_or_broken_pattern_is_quoted_or_refused(sshd, remote_root, service_user):
    settings, log = settings_for(sshd, remote_root, service_user)
    log.write_text("a'; touch pwned; echo 'b\nother\n")
    assert _shown(settings, lines=5, grep="'; touch pwned; echo '") == ["a'; touch pwned; echo 'b"]
    assert not list(remote_root.rglob("pwned")) and not (Path.home() / "pwned").exists()
    with pytest.raises(UsageError) as raised:
        _shown(settings, lines=5, grep="(")
    assert raised.value.exit_code == 2
    with pytest.raises(UsageError, match="with -f use -n"):
        _shown(settings, lines=5, follow=True, since="1h")
    # grep reads a pattern on two lines as two patterns: `other` would match the second
    with pytest.raises(UsageError, match="on one line") as raised:
        _shown(settings, lines=5, grep="zzz\nother")
    assert raised.value.exit_code == 2


def test_logs_dry_run_prints_the_remote_command(sshd, remote_root, service_user):
    settings, _ = settings_for(sshd, remote_root, service_user)
    said = "\n".join(_shown(settings, lines=5, grep="ERROR", since="1h", dry_run=True))
    assert "dry run" in said
    assert "grep -E -e ERROR" in said


def _greps(log: Path) -> list[int]:
    """Processes of the remote `grep` reading this test's fifo (started beside the follower)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline[:1] == [b"grep"] and b"--line-buffered" in cmdline and b"fresh" in cmdline:
                found.append(int(entry.name))
    return found


def test_follow_with_grep_prints_only_matching_new_lines_and_ends_both(
    sshd, remote_root, service_user, tmp_path, gbdeploy_env
):
    log = remote_root / "error.log"
    log.write_text("fresh old\nnoise old\n")
    config = _config(tmp_path, sshd, log, remote_root / "botserver")
    command = [sys.executable, "-m", "gbdeploy", "-f", str(config), "logs", "botserver", "-f"]
    # Started as a script's `cmd &` starts it, with SIGINT ignored: Ctrl-C must end it all the same
    # (an ignored signal stays ignored across exec).
    ignoring = ["sh", "-c", 'trap "" INT QUIT; exec "$@"', "sh"]
    process = subprocess.Popen(
        [*ignoring, *command, "--grep", "fresh"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen = bytearray()
    try:
        assert _read_until(process, b"fresh old\n", seen), bytes(seen)
        with log.open("a") as f:
            f.write("noise new\nfresh new\n")
        assert _read_until(process, b"fresh new\n", seen), bytes(seen)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=POLL_BOUND)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()
    assert bytes(seen) == b"fresh old\nfresh new\n"
    deadline = time.monotonic() + POLL_BOUND
    while (_followers(log) or _greps(log)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _followers(log) == [] and _greps(log) == []
