"""Uploads against the real loopback sshd: content, bytes on the wire, fallbacks, failures."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from gbdeploy import artifact
from gbdeploy.artifact import Fingerprint, file_sha256, fingerprint
from gbdeploy.config import SshSettings, Target
from gbdeploy.errors import OperationFailed, RemoteError
from gbdeploy.output import TerminalProgress
from gbdeploy.remote import transfer
from gbdeploy.remote.connection import Remote, quote
from gbdeploy.remote.session import Session
from gbdeploy.remote.transfer import (
    STREAM,
    ZSTD,
    UploadResult,
    choose_method,
    receive_command,
    start_upload,
    upload,
    upload_plan,
    upload_through,
)
from gbdeploy_sandbox.procs import wait_for
from gbdeploy_sandbox.service import build_service

MiB = 1 << 20


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """A compressible and a random binary, both bigger than the server's 2 MiB channel window."""
    directory = tmp_path_factory.mktemp("artifacts")
    return {
        "compressible": build_service(directory / "compressible", "c0ffee1", pad_to=8 * MiB),
        "random": build_service(
            directory / "random", "c0ffee2", pad_to=6 * MiB, compressible_padding=False
        ),
        "big random": build_service(
            directory / "big-random", "c0ffee3", pad_to=48 * MiB, compressible_padding=False
        ),
    }


def remote_for(sshd, *, lxc: str | None = None) -> Remote:
    return Remote(Target("system", sshd.alias, lxc=lxc), SshSettings(config=str(sshd.ssh_config)))


class RemoteWithPath(Remote):
    """A target whose commands run with a PATH holding `bin_dir` alone."""

    def __init__(self, sshd, bin_dir: Path) -> None:
        super().__init__(Target("system", sshd.alias), SshSettings(config=str(sshd.ssh_config)))
        self.bin_dir = bin_dir

    def wrap(self, command: str) -> str:
        return super().wrap(f"PATH={quote(self.bin_dir)}; export PATH; {command}")


def receiver_pid(path: Path, deadline_seconds: float = 10.0) -> int:
    """The pid of the server-side process holding `path` open (the receiver of our stream)."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in (entry / "fd").iterdir():
                    if os.readlink(fd) == str(path):
                        return int(entry.name)
        time.sleep(0.01)
    raise AssertionError(f"no process on the target holds {path} open")


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def gone_within(path: Path, seconds: float = 30.0) -> bool:
    """Whether `path` disappears within `seconds` (the receiver ends after the session does)."""
    deadline = time.monotonic() + seconds
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def bin_dir_with(directory: Path, *programs: str, **scripts: str) -> Path:
    """A directory for a target's PATH holding the named system programs and stand-in scripts."""
    directory.mkdir()
    for program in programs:
        found = shutil.which(program)
        assert found, program
        (directory / program).symlink_to(found)
    for name, body in scripts.items():
        script = directory / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return directory


def assert_hashed_on_target(result: UploadResult, local: Path, target: Path) -> None:
    assert result.sha256 == file_sha256(local)
    assert result.remote_sha256 == file_sha256(target) == result.sha256
    assert result.verified


@pytest.mark.parametrize("compress", [True, False], ids=["zstd", "stream"])
def test_the_target_hashes_what_it_wrote(sshd, remote_root, artifacts, compress):
    local = artifacts["compressible"]
    target = remote_root / "botserver.new"
    with remote_for(sshd) as remote:
        result = upload(remote, local, str(target), compress=compress)
    assert result.method == (ZSTD if compress else STREAM)
    assert result.receiver == "python3"
    assert result.size == local.stat().st_size
    if compress:
        assert result.bytes_sent < result.size / 2
    else:
        assert result.bytes_sent == result.size
    assert_hashed_on_target(result, local, target)


def test_over_loopback_a_compressible_artifact_goes_plain(sshd, remote_root, artifacts):
    local = artifacts["compressible"]
    target = remote_root / "botserver.new"
    with remote_for(sshd) as remote:
        result = upload(remote, local, str(target))
    assert result.method == STREAM  # nothing to save on the wire, only CPU to spend
    assert_hashed_on_target(result, local, target)


def test_across_a_network_a_compressible_artifact_is_compressed(sshd, artifacts, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        sshd.ssh_config.read_text().replace("HostName 127.0.0.1", "HostName target.invalid")
    )
    remote = Remote(Target("system", sshd.alias), SshSettings(config=str(config)))
    assert not transfer.over_loopback(remote)
    assert choose_method(remote, artifacts["compressible"], None) == ZSTD
    assert choose_method(remote, artifacts["random"], None) == STREAM  # would not pay
    plan = upload_plan(artifacts["compressible"], "/opt/b.new", remote=remote)
    assert plan[0].startswith("here: zstd -1")
    assert not remote.connection.is_connected  # the choice and the plan need no connection


def test_the_plan_names_the_stream_the_upload_uses(sshd, remote_root, artifacts):
    local = artifacts["compressible"]
    target = remote_root / "botserver.new"
    with remote_for(sshd) as remote:
        plan = upload_plan(local, str(target), remote=remote)
        result = upload(remote, local, str(target))
    assert result.method == STREAM
    command = receive_command(STREAM, str(target), result.size)
    assert plan == [f"on the target: {command}  < {local}"]


def test_random_artifact_compressed_on_request_still_arrives(sshd, remote_root, artifacts):
    local = artifacts["random"]
    target = remote_root / "botserver.new"
    with remote_for(sshd) as remote:
        result = upload(remote, local, str(target), compress=True)
    assert result.method == ZSTD
    assert_hashed_on_target(result, local, target)


def test_upload_replaces_an_existing_file(sshd, remote_root, artifacts):
    target = remote_root / "botserver.new"
    target.write_bytes(b"old contents that are longer than nothing" * 1000)
    with remote_for(sshd) as remote:
        result = upload(remote, artifacts["compressible"], str(target))
    assert_hashed_on_target(result, artifacts["compressible"], target)


@pytest.mark.parametrize("receiver", ["python3", "tee"])
def test_upload_never_writes_through_a_link_left_at_the_path(
    sshd, remote_root, artifacts, tmp_path, mocker, receiver
):
    """A symlink planted at `.new` (to a file, or dangling: to one it would create), or a hard
    link to the running binary there: each stays as it was, and `.new` becomes a file of its own."""
    if receiver == "tee":
        mocker.patch.object(transfer, "PYTHONS", ("python3",))
    bin_dir = bin_dir_with(tmp_path / "bin", "cat", "tee", "sha256sum", "rm")
    victim = remote_root / "etc-passwd"
    victim.write_text("root:x:0:0\n")
    running = remote_root / "botserver"
    running.write_bytes(b"\x7fELF the running binary")
    local = artifacts["random"]
    with RemoteWithPath(sshd, bin_dir) as remote:
        for target, link in (
            (remote_root / "a.new", lambda t: t.symlink_to(victim)),
            (remote_root / "b.new", lambda t: os.link(running, t)),
            (remote_root / "c.new", lambda t: t.symlink_to(remote_root / "cron.d-job")),
        ):
            link(target)
            result = upload(remote, local, str(target))
            assert result.receiver == receiver
            assert not target.is_symlink()
            assert_hashed_on_target(result, local, target)
    assert victim.read_text() == "root:x:0:0\n"
    assert running.read_bytes() == b"\x7fELF the running binary"
    assert running.stat().st_nlink == 1
    assert not (remote_root / "cron.d-job").exists()


def test_target_without_zstd_falls_back_to_a_plain_stream(sshd, remote_root, artifacts, tmp_path):
    bin_dir = bin_dir_with(tmp_path / "bin-without-zstd", "cat")
    local = artifacts["compressible"]
    target = remote_root / "botserver.new"
    with RemoteWithPath(sshd, bin_dir) as remote:
        assert not remote.run("command -v zstd", check=False).ok  # the target really lacks it
        result = upload(remote, local, str(target), compress=True)
    assert result.method == STREAM
    assert result.bytes_sent == result.size
    assert_hashed_on_target(result, local, target)


@pytest.mark.parametrize("compress", [True, False], ids=["zstd", "stream"])
def test_target_without_python_hashes_through_tee_and_sha256sum(
    sshd, remote_root, artifacts, tmp_path, mocker, compress
):
    mocker.patch.object(transfer, "PYTHONS", ("python3",))  # not /usr/bin/python3 by its path
    bin_dir = bin_dir_with(tmp_path / "bin", "cat", "tee", "sha256sum", "zstd")
    local = artifacts["compressible"]
    target = remote_root / "botserver.new"
    with RemoteWithPath(sshd, bin_dir) as remote:
        assert not remote.run("command -v python3", check=False).ok
        result = upload(remote, local, str(target), compress=compress)
    assert result.receiver == "tee"
    assert_hashed_on_target(result, local, target)


@pytest.mark.parametrize("compress", [True, False], ids=["zstd", "stream"])
def test_a_write_refused_to_tee_is_a_remote_error_naming_the_stage(
    sshd, remote_root, artifacts, tmp_path, mocker, compress
):
    mocker.patch.object(transfer, "PYTHONS", ("python3",))
    bin_dir = bin_dir_with(tmp_path / "bin", "cat", "tee", "sha256sum", "zstd")
    target = remote_root / "no-such-dir" / "botserver.new"
    with RemoteWithPath(sshd, bin_dir) as remote, pytest.raises(RemoteError) as raised:
        upload(remote, artifacts["compressible"], str(target), compress=compress)
    message = str(raised.value)
    assert "refused the upload" in message
    assert "No such file or directory" in message
    assert "receiving failed in: tee" in message


def test_target_without_any_hasher_writes_and_says_it_did_not_hash(
    sshd, remote_root, artifacts, tmp_path, mocker
):
    mocker.patch.object(transfer, "PYTHONS", ("python3",))
    bin_dir = bin_dir_with(tmp_path / "bin", "cat")
    local = artifacts["random"]
    target = remote_root / "botserver.new"
    with RemoteWithPath(sshd, bin_dir) as remote:
        result = upload(remote, local, str(target))
    assert (result.receiver, result.remote_sha256, result.verified) == ("plain", None, False)
    assert file_sha256(target) == result.sha256


@pytest.mark.parametrize("compress", [True, False], ids=["zstd", "stream"])
def test_container_target_receives_and_hashes_inside_the_container(
    sshd, standins, remote_root, artifacts, compress
):
    standins.add_container("pragmatismo-system")
    local = artifacts["compressible"]
    target = remote_root / "botserver.new"
    with remote_for(sshd, lxc="pragmatismo-system") as remote:
        assert remote.wrap("true").startswith("lxc exec ")
        result = upload(remote, local, str(target), compress=compress)
    assert result.method == (ZSTD if compress else STREAM)
    assert_hashed_on_target(result, local, target)


@pytest.mark.parametrize("receiver", ["python3", "tee"])
def test_bytes_changed_on_the_target_show_in_its_hash(
    sshd, remote_root, artifacts, tmp_path, mocker, receiver
):
    """A decompressor that alters the stream (same length): the file written differs from the
    artifact, and the hash the target reports is the file's, not the artifact's."""
    if receiver == "tee":
        mocker.patch.object(transfer, "PYTHONS", ("python3",))
    real_zstd = shutil.which("zstd")
    bin_dir = bin_dir_with(
        tmp_path / "bin", "cat", "tee", "sha256sum", "tr", zstd=f'{real_zstd} "$@" | tr a b'
    )
    local = artifacts["compressible"]
    target = remote_root / "botserver.new"
    with RemoteWithPath(sshd, bin_dir) as remote:
        result = upload(remote, local, str(target), compress=True)
    assert result.receiver == receiver
    assert result.remote_sha256 == file_sha256(target) != result.sha256
    assert not result.verified


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line holds `text` (the receiver's shell names its path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def test_a_prepared_upload_touches_nothing_until_it_is_sent(sshd, remote_root, artifacts):
    target = remote_root / "botserver.new"
    target.write_bytes(b"what another deploy staged")
    with remote_for(sshd) as remote:
        waiting = start_upload(remote, artifacts["random"], str(target))
        assert wait_for(lambda: processes_mentioning(str(target)), deadline_seconds=30)
        assert target.read_bytes() == b"what another deploy staged"
        waiting.cancel()  # e.g. the lock was held, or the target has this binary already
        assert wait_for(lambda: not processes_mentioning(str(target)), deadline_seconds=30)
        assert target.read_bytes() == b"what another deploy staged"

        ready = start_upload(remote, artifacts["random"], str(target))
        result = ready.send()
    assert_hashed_on_target(result, artifacts["random"], target)


def test_a_known_fingerprint_is_trusted_for_the_hash_and_checked_by_the_target(
    sshd, remote_root, artifacts
):
    local = artifacts["random"]
    target = remote_root / "botserver.new"
    known = fingerprint(local)
    with remote_for(sshd) as remote:
        result = upload(remote, local, str(target), known=known)
        assert_hashed_on_target(result, local, target)
        wrong = Fingerprint("0" * 64, known.identity)  # same file, a hash that is not its own
        assert not upload(remote, local, str(target), known=wrong).verified


def test_an_artifact_changed_since_it_was_hashed_is_refused_untouched(
    sshd, remote_root, artifacts, tmp_path
):
    local = tmp_path / "botserver"
    shutil.copyfile(artifacts["random"], local)
    known = fingerprint(local)
    with open(local, "ab") as f:
        f.write(b"the build went on")
    target = remote_root / "botserver.new"
    target.write_bytes(b"staged before")
    with remote_for(sshd) as remote, pytest.raises(OperationFailed) as raised:
        upload(remote, local, str(target), known=known)
    assert f"the artifact {local} changed since it was hashed" in str(raised.value)
    assert target.read_bytes() == b"staged before"  # the receiver never got the word


def test_a_file_changing_while_it_is_hashed_has_no_fingerprint(tmp_path, mocker):
    local = tmp_path / "botserver"
    local.write_bytes(b"first half")
    real_hash = artifact.file_sha256

    def hash_while_the_build_appends(path: Path) -> str:
        digest = real_hash(path)
        with open(path, "ab") as f:
            f.write(b", second half")
        return digest

    mocker.patch.object(artifact, "file_sha256", side_effect=hash_while_the_build_appends)
    with pytest.raises(OperationFailed) as raised:
        fingerprint(local)
    assert "changed while it was hashed" in str(raised.value)


def test_a_short_stream_is_refused_and_its_file_removed(sshd, remote_root, artifacts, tmp_path):
    real_zstd = shutil.which("zstd")
    bin_dir = bin_dir_with(
        tmp_path / "bin", "cat", "head", zstd=f'{real_zstd} "$@" | head -c -4096'
    )
    target = remote_root / "botserver.new"
    with RemoteWithPath(sshd, bin_dir) as remote, pytest.raises(RemoteError) as raised:
        upload(remote, artifacts["compressible"], str(target), compress=True)
    size = artifacts["compressible"].stat().st_size
    assert f"the stream carried {size - 4096} bytes, not the {size} announced" in str(raised.value)
    assert not target.exists()


@pytest.mark.parametrize("way", ["zstd", "stream", "session"])
def test_an_artifact_rewritten_during_the_upload_is_refused(
    sshd, remote_root, artifacts, tmp_path, way
):
    # Big enough that when the first chunk has gone out, the reading is far from its end even
    # through zstd (whose reader runs ahead by at most its pipes and its few MiB of jobs).
    local = tmp_path / "botserver"
    shutil.copyfile(artifacts["big random"], local)
    appended_at: list[int] = []

    def the_build_appends(done: int, total: int) -> None:
        if not appended_at:
            with open(local, "ab") as f:
                f.write(b"more of a build still running" * 1000)
            appended_at.append(done)

    target = remote_root / "botserver.new"
    with remote_for(sshd) as remote, pytest.raises(OperationFailed) as raised:
        if way == "session":  # through the deploy session's helper
            upload_through(Session(remote), local, str(target), progress=the_build_appends)
        else:
            upload(remote, local, str(target), progress=the_build_appends, compress=way == ZSTD)
    size = artifacts["big random"].stat().st_size
    assert appended_at and appended_at[0] < size // 2  # the build wrote while it was being read
    assert f"the artifact {local} changed while it was uploaded" in str(raised.value)
    assert gone_within(target)  # the receiver got a short stream and removed what it wrote


@pytest.mark.parametrize("compress", [True, False], ids=["zstd", "stream"])
def test_an_artifact_changed_after_its_whole_stream_was_sent_is_not_kept(
    sshd, remote_root, artifacts, tmp_path, compress
):
    """The change shows only once every byte is on its way: the stream is whole, so the sender
    adds a byte too many and the receiver refuses it instead of keeping the file."""
    local = tmp_path / "botserver"
    shutil.copyfile(artifacts["random"], local)

    def the_build_appends_at_the_end(done: int, total: int) -> None:
        if done == total - 1:  # the last chunk has been sent
            with open(local, "ab") as f:
                f.write(b"a late write")

    target = remote_root / "botserver.new"
    with remote_for(sshd) as remote, pytest.raises(OperationFailed) as raised:
        upload(remote, local, str(target), progress=the_build_appends_at_the_end, compress=compress)
    assert f"the artifact {local} changed while it was uploaded" in str(raised.value)
    assert gone_within(target)


def test_a_failing_decompressor_is_a_remote_error(sshd, remote_root, artifacts, tmp_path):
    bin_dir = bin_dir_with(
        tmp_path / "bin", "cat", zstd="cat >/dev/null; echo 'bad frame' >&2; exit 3"
    )
    target = remote_root / "botserver.new"
    with RemoteWithPath(sshd, bin_dir) as remote, pytest.raises(RemoteError) as raised:
        upload(remote, artifacts["compressible"], str(target), compress=True)
    assert "decompressing the stream failed (zstd exit 3)" in str(raised.value)
    assert "bad frame" in str(raised.value)
    assert not target.exists()


def test_a_hostile_path_is_written_exactly_where_it_says(sshd, remote_root, artifacts):
    directory = remote_root / "dir with space"
    directory.mkdir()
    target = directory / "it's $(touch pwned) `id` ; x.new"
    with remote_for(sshd) as remote:
        upload(remote, artifacts["compressible"], str(target))
    assert file_sha256(target) == file_sha256(artifacts["compressible"])
    assert sorted(p.name for p in directory.iterdir()) == [target.name]
    assert not (remote_root / "pwned").exists()


@pytest.mark.parametrize("compress", [True, False], ids=["zstd", "stream"])
@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("no-such-dir/botserver.new", r"No such file or directory|Directory nonexistent"),
        ("a-directory", r"Is a directory"),
        ("/dev/full", r"No space left on device"),  # a disk that is full
    ],
    ids=["missing-directory", "path-is-a-directory", "disk-full"],
)
def test_a_write_the_target_refuses_is_a_remote_error_with_its_reason(
    sshd, remote_root, artifacts, compress, where, reason
):
    (remote_root / "a-directory").mkdir()
    target = where if where.startswith("/") else str(remote_root / where)
    with remote_for(sshd) as remote, pytest.raises(RemoteError) as raised:
        upload(remote, artifacts["random"], target, compress=compress)
    message = str(raised.value)
    assert "refused the upload" in message
    assert target in message
    assert re.search(reason, message), message
    assert raised.value.exit_code == 1
    assert Path("/dev/full").is_char_device()  # a failed receiver removes only a file it made


@pytest.mark.parametrize("compress", [True, False], ids=["zstd", "stream"])
def test_connection_closed_mid_upload_is_a_remote_error(sshd, remote_root, artifacts, compress):
    binary = remote_root / "botserver"
    binary.write_bytes(b"\x7fELF the running binary")
    with remote_for(sshd) as remote:

        def drop_the_connection(done: int, total: int) -> None:
            remote.connection.client.get_transport().close()

        with pytest.raises(RemoteError) as raised:
            upload(
                remote,
                artifacts["random"],
                str(remote_root / "botserver.new"),
                progress=drop_the_connection,
                compress=compress,
            )
    assert "connection was lost" in str(raised.value)
    assert binary.read_bytes() == b"\x7fELF the running binary"
    assert gone_within(remote_root / "botserver.new")  # the short file was removed, not kept


def test_server_side_session_killed_mid_upload_is_a_remote_error(sshd, remote_root, artifacts):
    target = remote_root / "botserver.new"
    killed: list[int] = []

    def kill_the_server_session(done: int, total: int) -> None:
        if killed:
            return
        receiver = receiver_pid(target)
        session = parent_pid(receiver)  # the sshd process serving this connection
        assert session != os.getpid()
        os.kill(session, signal.SIGKILL)
        killed.append(session)

    with remote_for(sshd) as remote, pytest.raises(RemoteError) as raised:
        upload(remote, artifacts["random"], str(target), progress=kill_the_server_session)
    assert killed
    assert "upload to" in str(raised.value)
    assert gone_within(target)


def test_a_stalled_target_ends_in_a_remote_error_not_a_hang(sshd, remote_root, artifacts):
    target = remote_root / "botserver.new"
    stopped: list[int] = []

    def stop_the_receiver(done: int, total: int) -> None:
        if not stopped:
            pid = receiver_pid(target)
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)

    try:
        with remote_for(sshd) as remote, pytest.raises(RemoteError) as raised:
            upload(
                remote,
                artifacts["random"],
                str(target),
                progress=stop_the_receiver,
                compress=False,
                timeout=1.0,
            )
        assert "the link stood still" in str(raised.value)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


def test_progress_grows_to_the_total(sshd, remote_root, artifacts):
    local = artifacts["compressible"]
    calls: list[tuple[int, int]] = []
    with remote_for(sshd) as remote:
        upload(remote, local, str(remote_root / "x.new"), progress=lambda *c: calls.append(c))
    size = local.stat().st_size
    assert len(calls) > 1
    assert {total for _, total in calls} == {size}
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert calls[-1] == (size, size)
    assert done.count(size) == 1  # 100 % only once the target confirmed the write


def test_receive_commands_quote_the_path_and_check_for_zstd_first():
    plain = receive_command(STREAM, "/opt/a b", 123)
    assert plain.splitlines()[0] == transfer.GATE_LINE  # nothing happens before the word
    assert "command -v zstd" not in plain
    assert "'/opt/a b' 123 stream" in plain  # the python receiver's path, size, method
    assert "tee -- '/opt/a b'" in plain
    assert plain.endswith("exec cat > '/opt/a b'\nfi")
    command = receive_command(ZSTD, "/opt/a b", 123)
    assert command.index("command -v zstd") < command.index("'/opt/a b' 123 zstd")
    assert "exec zstd -d -q -c > '/opt/a b'" in command


def test_upload_plan_names_the_exact_commands(artifacts):
    compressible = upload_plan(artifacts["compressible"], "/opt/gbo/bin/botserver.new")
    assert compressible[0].startswith("here: zstd -1")
    size = artifacts["compressible"].stat().st_size
    assert receive_command(ZSTD, "/opt/gbo/bin/botserver.new", size) in compressible[1]
    random = upload_plan(artifacts["random"], "/opt/gbo/bin/botserver.new")
    size = artifacts["random"].stat().st_size
    plain = receive_command(STREAM, "/opt/gbo/bin/botserver.new", size)
    assert random == [f"on the target: {plain}  < {artifacts['random']}"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_progress_draws_one_throttled_line_and_ends_it():
    now = [0.0]
    terminal = FakeTerminal()
    progress = TerminalProgress("upload", terminal, interval=0.5, clock=lambda: now[0])
    progress(0, 100 * MiB)
    now[0] = 0.1
    progress(10 * MiB, 100 * MiB)  # within the interval: not drawn
    now[0] = 1.0
    progress(50 * MiB, 100 * MiB)
    now[0] = 1.1
    progress(100 * MiB, 100 * MiB)  # the end is always drawn
    progress(100 * MiB, 100 * MiB)  # and only once
    frames = terminal.getvalue().split("\r")[1:]
    assert len(frames) == 3
    assert "10.0 MiB" not in terminal.getvalue()
    assert "50.0 MiB / 100.0 MiB" in frames[1] and "50%" in frames[1]
    assert "MiB/s" in frames[1]
    assert frames[2].endswith("100%\x1b[K\n")
    assert terminal.getvalue().count("\n") == 1


def test_terminal_progress_writes_nothing_when_not_a_tty():
    stream = io.StringIO()
    progress = TerminalProgress("upload", stream)
    progress(1, 2)
    progress(2, 2)
    assert stream.getvalue() == ""
