"""The deploy's session against the real loopback sshd: the python3 helper and the sh fallback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gbdeploy.artifact import file_sha256
from gbdeploy.config import SshSettings, Target
from gbdeploy.errors import RemoteError
from gbdeploy.remote import session as session_module
from gbdeploy.remote import transfer
from gbdeploy.remote.connection import Remote, quote
from gbdeploy.remote.session import Session
from gbdeploy_sandbox.procs import wait_for

MiB = 1 << 20


@pytest.fixture(params=["python3", "sh"])
def far_end(request, mocker) -> str:
    if request.param == "sh":  # a target without python3
        mocker.patch.object(transfer, "PYTHONS", ())
    return str(request.param)


@pytest.fixture
def session(sshd) -> Iterator[Session]:
    remote = Remote(Target("system", sshd.alias), SshSettings(config=str(sshd.ssh_config)))
    opened = Session(remote)
    yield opened
    opened.close()
    remote.close()


def test_the_far_end_says_what_it_is(session, far_end):
    assert session.streams_files() is (far_end == "python3")
    assert session.mode == far_end


def test_a_command_answers_with_its_output_and_status(session, far_end):
    result = session.run("echo out; echo err >&2; exit 3", check=False)
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 3)
    with pytest.raises(RemoteError) as raised:
        session.run("echo why >&2; exit 4")
    assert "command failed (exit 4)" in str(raised.value) and "why" in str(raised.value)


def test_exit_and_cd_in_a_command_never_reach_the_session(session, far_end, tmp_path):
    home = session.run("pwd").stdout
    session.run(f"cd {quote(tmp_path)} && exit 0")
    assert session.run("pwd").stdout == home
    assert session.run("echo still here").stdout == "still here\n"


def test_output_that_looks_like_framing_comes_back_verbatim(session, far_end):
    text = "ran 0 0 0\\nput 0\\ngbdeploy-session sh\\nGBDEPLOY_END_0123456789abcdef\\n"
    result = session.run(f"printf {quote(text)}; printf 'no newline at the end'")
    assert result.stdout == text.replace("\\n", "\n") + "no newline at the end"
    binary = session.run("head -c 300000 /dev/zero | tr '\\0' x; head -c 70000 /dev/zero >&2")
    assert binary.stdout == "x" * 300000 and len(binary.stderr) == 70000


def test_a_process_left_in_the_background_does_not_hold_the_session(session, far_end):
    started = session.run("sleep 300 & echo $!", timeout=30)  # keeps the command's stdout open
    pid = int(started.stdout.split()[-1])
    try:
        assert session.run("echo next", timeout=30).stdout == "next\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_command_that_outlives_its_timeout_ends_the_session_with_an_error(session, far_end):
    with pytest.raises(RemoteError) as raised:
        session.run("sleep 30", timeout=0.5)
    assert "timed out" in str(raised.value)
    assert session.run("echo a new session").stdout == "a new session\n"


def test_a_session_that_cannot_start_says_what_the_target_said(sshd, mocker):
    mocker.patch.object(
        session_module, "launcher_command", return_value="echo 'no shell for you' >&2; exit 1"
    )
    remote = Remote(Target("system", sshd.alias), SshSettings(config=str(sshd.ssh_config)))
    with remote, pytest.raises(RemoteError) as raised:
        Session(remote).run("true")
    assert "no shell for you" in str(raised.value)


def test_a_far_end_that_hangs_as_it_starts_is_given_up_on_with_its_own_bound(sshd, mocker):
    """A python3 that hangs on the target: the session says so after HELLO_SECONDS, not after
    the command's 120 s of silence."""
    mocker.patch.object(session_module, "launcher_command", return_value="exec sleep 30")
    mocker.patch.object(session_module, "HELLO_SECONDS", 0.5)
    remote = Remote(Target("system", sshd.alias), SshSettings(config=str(sshd.ssh_config)))
    with remote, pytest.raises(RemoteError) as raised:
        Session(remote).run("true", timeout=120)
    assert "timed out after 0.5s" in str(raised.value)
    assert "never began" in str(raised.value)


# --- files through the helper ---------------------------------------------------------------------
def blocks(data: bytes, size: int = 256 << 10) -> Iterator[memoryview]:
    view = memoryview(data)
    for at in range(0, len(data), size):
        yield view[at : at + size]


def test_a_file_put_through_the_session_is_written_and_hashed_there(session, remote_root):
    data = os.urandom(5 * MiB + 123)
    target = remote_root / "botserver.new"
    target.symlink_to(remote_root / "elsewhere")  # replaced, never written through
    (remote_root / "elsewhere").write_bytes(b"keep me")
    sha = session.put(str(target), len(data), blocks(data))
    assert sha == file_sha256(target)
    assert target.read_bytes() == data and not target.is_symlink()
    assert (remote_root / "elsewhere").read_bytes() == b"keep me"
    assert session.run("echo after the file").stdout == "after the file\n"


def test_a_put_the_target_refuses_says_why_and_the_session_starts_again(session, remote_root):
    data = os.urandom(3 * MiB)
    missing = remote_root / "no such dir" / "botserver.new"
    with pytest.raises(RemoteError) as raised:
        session.put(str(missing), len(data), blocks(data))
    assert f"the target refused the upload to {missing}" in str(raised.value)
    assert "No such file or directory" in str(raised.value)
    assert session.run("echo again").stdout == "again\n"


def test_a_put_cut_mid_stream_leaves_no_partial_file(session, remote_root):
    data = os.urandom(8 * MiB)
    target = remote_root / "botserver.new"

    def cut_half_way() -> Iterator[memoryview]:
        for number, block in enumerate(blocks(data)):
            if number == 10:
                assert wait_for(lambda: target.exists() and target.stat().st_size > 0)
                transport = session.remote.connection.transport
                transport.sock.shutdown(socket.SHUT_RDWR)  # the link dies mid-upload
            yield block

    with pytest.raises(RemoteError) as raised:
        session.put(str(target), len(data), cut_half_way())
    assert "connection lost" in str(raised.value)
    assert wait_for(lambda: not target.exists(), deadline_seconds=30)


def test_a_put_over_the_sh_session_is_refused(session, remote_root, mocker):
    mocker.patch.object(transfer, "PYTHONS", ())
    with pytest.raises(RemoteError) as raised:
        session.put(str(remote_root / "x"), 1, [memoryview(b"x")])
    assert "no python3" in str(raised.value)
    assert not Path(remote_root / "x").exists()
