"""Uploading an artifact to a target, hashed on the target as it is written.

The bytes go either through the deploy's session (`upload_through`: its python3 helper takes the
file, see `remote.session`) or over an exec channel of their own (`upload`, `start_upload`) into a
receiver on the target that writes the file and computes its sha256 from the very bytes it
writes, in the same pass:

    python3 (in-process)    /usr/bin/python3, else the first python3 on PATH: reads the stream
                            (through `zstd -d` when compressed), hashes, writes, checks the size,
                            and removes the file if anything went wrong
    tee | sha256sum         without python3 (sha256sum or busybox's); each stage's failure is
                            reported, since a pipeline's status is only its last stage's
    cat / zstd -d           without python3 and sha256sum: written but not hashed
                            (`remote_sha256` is None and the caller must hash the file)

so the caller compares `UploadResult.remote_sha256` with `UploadResult.sha256` instead of reading
150 MB a second time on the target. Both python3 writers fdatasync the file before they answer, so
it is on disk before anyone renames it over the running binary (and the rename has no data left to
flush while the service is down). Locally the artifact is read once and hashed as it is read
(`remote.artifact_source`); never more than the size announced is sent, and a file that changed
while it was read (a build still writing it) is refused.

Compression: `zstd -1 -T0` when this machine has zstd, a sample of the artifact shrinks, and the
bytes cross a network. Over a loopback connection compressing only adds CPU work to the two ends
that share the machine (measured: a 147 MiB ELF took 1.16 s compressed, 0.58 s plain). A target
without zstd exits NO_ZSTD before touching the file and the upload starts over as a plain stream.

A channel's receiver first waits for the line GATE, so the channel can be opened (and the target's
shell, which reads its rc files: 0.1 to 0.2 s on the test box, started) while the deploy still
takes its lock; the server's window (OpenSSH: 2 MiB, in 32 KiB packets; the client cannot change
it) then holds the first bytes. The receiver widens its stdin pipe to 1 MiB, which saves a tenth
of a second on 150 MB.

A refused write ("No such file or directory", "Is a directory", "No space left on device") comes
back as the receiver's stderr with a non-zero exit, which becomes a RemoteError; so do a connection
lost and a link that stood still for `timeout` seconds. Every wait on the channel has a timeout.

Why not SFTP (Fabric's `put`) or `run(in_stream=...)`: measured here (half scp's speed, and
unusably slow). The cipher matters: `connection.aead_first_transport` prefers AES-GCM.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shutil
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko

from ..artifact import Fingerprint
from ..errors import OperationFailed, RemoteError
from . import far_end
from .artifact_source import COMPRESSOR, ArtifactSource, worth_compressing
from .connection import Remote, quote

Progress = Callable[[int, int], None]  # (bytes of the artifact done, artifact size)

DEFAULT_TIMEOUT = 60.0  # seconds the link may stand still before the upload is abandoned

ZSTD = "zstd"
STREAM = "stream"
NO_ZSTD = 97  # the zstd receiver's exit status when the target has no zstd
GATE = "go"  # the line that lets a waiting receiver start; `read` takes no byte beyond it
GATE_LINE = f'IFS= read -r gate && [ "$gate" = {GATE} ] || exit 0'
# System pythons first: a python3 found on PATH may be a version manager's shim (pyenv's takes
# 0.1 s to start) or a virtualenv.
PYTHONS = ("/usr/bin/python3", "python3")
_WITHOUT_ZSTD: weakref.WeakSet[Remote] = weakref.WeakSet()  # targets found without zstd
REFUSED_HINT = (
    "check on the target that the directory exists and the ssh user may write there, and that "
    "the disk has room (df -h)"
)


@dataclass(frozen=True)
class UploadResult:
    sha256: str  # of the local artifact, computed while it was read
    size: int  # of the artifact
    bytes_sent: int  # on the wire (less than size when compressed)
    seconds: float
    method: str  # ZSTD or STREAM
    # of the file as the target wrote it, computed there in the same pass; None when the target
    # has neither python3 nor sha256sum (then the caller must hash the file itself)
    remote_sha256: str | None = None
    receiver: str = ""  # python3, tee (| sha256sum) or plain

    @property
    def verified(self) -> bool:
        """The target hashed what it wrote, and it is the artifact."""
        return self.remote_sha256 is not None and self.remote_sha256 == self.sha256


def exec_python(program: str, arguments: str = "") -> list[str]:
    """The shell line that execs `program` under the first of PYTHONS the target has (none when
    PYTHONS is empty); when it has none, the lines after it run."""
    if not PYTHONS:
        return []
    return [
        f"for p in {' '.join(PYTHONS)}; do command -v $p >/dev/null 2>&1 && "
        f"exec $p -I -S -c {quote(program)}{' ' + arguments if arguments else ''}; done"
    ]


def upload_failed(remote: Remote, remote_path: str, what: str) -> RemoteError:
    """The upload broke on the way (not refused by the target): the link, not the file."""
    return RemoteError(
        f"on {remote.description}: upload to {remote_path} failed: {what}",
        hint="the file there may be partial; check the connection "
        f"(`ssh {remote.target.ssh} true`) and run the deploy again",
    )


def receive_command(method: str, remote_path: str, size: int) -> str:
    """The exact command the target runs to receive `size` bytes (before container wrapping).

    It first waits for the line GATE on its stdin, and exits untouched at end of input: the
    channel can be opened (and the target's shell started) before the deploy knows it will
    upload, e.g. while it takes the lock.

    The zstd receiver checks for zstd first and, when it is missing, exits NO_ZSTD before it
    touches the file; the sender does not wait for that check (it would cost a round trip plus
    the remote shell's start-up on every upload), and starts over as a plain stream instead.
    """
    path = quote(remote_path)
    decode = "zstd -d -q -c" if method == ZSTD else ""
    lines = [GATE_LINE]
    if method == ZSTD:
        lines.append(
            f"command -v zstd >/dev/null 2>&1 || {{ echo 'no zstd on the target' >&2; "
            f"exit {NO_ZSTD}; }}"
        )
    lines += [
        # A new file, never written through: not through a symlink planted there, not into an
        # inode the running binary shares by a hard link. Devices and directories stay.
        f"if [ -f {path} ] || [ -L {path} ]; then rm -f -- {path} || exit 1; fi",
        *exec_python(far_end.text("helper.py"), f"receive {path} {int(size)} {method}"),
        "if command -v sha256sum >/dev/null 2>&1; then h=sha256sum; "
        "elif command -v busybox >/dev/null 2>&1; then h='busybox sha256sum'; else h=; fi",
        'if [ -n "$h" ] && command -v tee >/dev/null 2>&1; then',
        "  exec 4>&1; printf 'tee '",
        "  failed=$( { "
        + (f"{{ {decode} || echo ' zstd' >&3; }} | " if decode else "")
        + f"{{ tee -- {path} || echo ' tee' >&3; }} | {{ $h >&4 || echo ' hash' >&3; }}; }} 3>&1 )",
        '  [ -z "$failed" ] || { echo "receiving failed in:$failed" >&2; exit 1; }',
        "else",
        f"  echo plain; exec {decode or 'cat'} > {path}",
        "fi",
    ]
    return "\n".join(lines)


def over_loopback(remote: Remote) -> bool:
    """Whether the target's address (its ssh config's HostName) is this machine, reached
    directly: decided without connecting, so a dry-run plans what the upload will do."""
    connection = remote.connection
    if connection.gateway:  # ProxyJump / ProxyCommand: a network behind it
        return False
    host = str(connection.host).strip("[]")
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    return False


def choose_method(remote: Remote, local: Path, compress: bool | None) -> str:
    """ZSTD when this machine has zstd, the target is not known to lack it, and either
    `compress` asks for it, or the bytes cross a network and a sample of the artifact shrinks;
    else STREAM."""
    if compress is False or shutil.which(COMPRESSOR[0]) is None or remote in _WITHOUT_ZSTD:
        return STREAM
    if compress is True:
        return ZSTD
    return ZSTD if not over_loopback(remote) and worth_compressing(local) else STREAM


def upload_plan(
    local: Path, remote_path: str, *, compress: bool | None = None, remote: Remote | None = None
) -> list[str]:
    """What `upload` will do, for a dry-run plan, without connecting: the exact commands.
    Give the `remote` for the same choice of stream as the upload's; without it the plan
    assumes the bytes cross a network."""
    local = Path(local)
    size = local.stat().st_size if local.is_file() else 0
    if remote is not None and local.is_file():
        wanted = choose_method(remote, local, compress) == ZSTD
    else:
        wanted = compress is not False and shutil.which(COMPRESSOR[0]) is not None
        if wanted and compress is None and local.is_file():
            wanted = worth_compressing(local)
    if not wanted:
        return [f"on the target: {receive_command(STREAM, remote_path, size)}  < {local}"]
    return [
        f"here: {' '.join(COMPRESSOR)} < {local}",
        f"on the target: {receive_command(ZSTD, remote_path, size)}",
        f"(a target without zstd exits {NO_ZSTD}; then: "
        f"{receive_command(STREAM, remote_path, size)})",
    ]


def upload(
    remote: Remote,
    local: Path,
    remote_path: str,
    *,
    progress: Progress | None = None,
    compress: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    known: Fingerprint | None = None,
) -> UploadResult:
    """Write `local` to `remote_path` on the target, hashing it there. Whatever file or symlink
    was at `remote_path` is replaced by a new file (never written through), so no separate
    removal is needed before an upload.

    `compress`: None (default) uses zstd when both ends have it, the link is not loopback and the
    artifact compresses; True uses it whenever both ends have it; False never does. A target
    found without zstd gets a plain stream (progress then starts over once). `timeout` is how
    long the link may stand still (no window to send into, no answer at the end) before the
    upload is abandoned. `known`: the artifact's fingerprint, when the caller hashed it already;
    it is then not hashed again, and a file whose inode, size or mtime differ from it is refused.

    Does not compare the two hashes: `result.verified` says whether they match, and what to do
    when they do not is the caller's decision. Raises RemoteError when the connection drops,
    stalls, or the target's receiver fails (refused write, short or corrupt stream); the file at
    `remote_path` may then be partial, so callers upload to a temporary name. OperationFailed
    when the artifact changes while it is sent (a build still writing it).
    """
    pending = start_upload(remote, local, remote_path, compress=compress, timeout=timeout)
    return pending.send(progress=progress, known=known)


def start_upload(
    remote: Remote,
    local: Path,
    remote_path: str,
    *,
    compress: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PendingUpload:
    """Open the upload's channel now and start its receiver, which waits, touching nothing, until
    `send` (or exits when `cancel` closes the channel). Lets the target's shell start while
    the caller still talks to the target on another channel."""
    pending = PendingUpload(remote, Path(local), remote_path, timeout)
    pending.open(choose_method(remote, pending.local, compress))
    return pending


class PendingUpload:
    """An upload whose receiver runs on the target, waiting for the word to begin."""

    def __init__(self, remote: Remote, local: Path, remote_path: str, timeout: float) -> None:
        self.remote = remote
        self.local = local
        self.remote_path = remote_path
        self.timeout = timeout
        self.method = STREAM
        self.size = 0
        self._channel: paramiko.Channel | None = None

    def open(self, method: str) -> None:
        self.method = method
        try:
            self.size = self.local.stat().st_size
        except OSError as error:
            raise OperationFailed(f"cannot read the artifact {self.local}: {error}") from None
        command = receive_command(method, self.remote_path, self.size)
        try:
            self._channel = self.remote.channel(command)
        except (OSError, EOFError, paramiko.SSHException) as error:
            raise RemoteError(
                f"on {self.remote.description}: cannot start the upload to "
                f"{self.remote_path}: {error}"
            ) from None

    def cancel(self) -> None:
        """Close the channel: a receiver still waiting exits without touching anything."""
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.close()

    def send(
        self, *, progress: Progress | None = None, known: Fingerprint | None = None
    ) -> UploadResult:
        """Let the receiver begin and send the artifact; see `upload`."""
        if self._channel is None:
            raise OperationFailed(f"the upload to {self.remote_path} was cancelled")
        started = time.monotonic()
        try:
            sent = self._send(progress, known)
        except _TargetLacksZstd:
            _WITHOUT_ZSTD.add(self.remote)
            self.open(STREAM)
            sent = self._send(progress, known)
        if progress:
            progress(sent.size, sent.size)
        return UploadResult(
            sent.sha256,
            sent.size,
            sent.bytes_sent,
            time.monotonic() - started,
            self.method,
            sent.remote_sha256,
            sent.receiver,
        )

    def _send(self, progress: Progress | None, known: Fingerprint | None) -> _Sent:
        """One attempt: the word, the artifact, and the receiver's answer."""
        channel, self._channel = self._channel, None
        assert channel is not None
        remote, local, remote_path = self.remote, self.local, self.remote_path
        try:
            source = ArtifactSource(local, known, announced=self.size)
            channel.settimeout(self.timeout)
            sent = 0
            try:
                channel.sendall(f"{GATE}\n".encode())
                with source.chunks(compressed=self.method == ZSTD) as chunks:
                    for chunk in chunks:
                        channel.sendall(chunk)
                        sent += len(chunk)
                        if progress:
                            progress(source.sending(), source.size)
                if source.changed():
                    if source.done == source.size:  # the stream is whole: it would be kept
                        # One byte too many: the receiver refuses it and removes the file.
                        channel.sendall(b"\0")
                    raise source.changed_error()
                channel.shutdown_write()
                _wait_for_exit(remote, channel, remote_path, self.timeout)
                answer = _read_stdout(channel)
            except (OSError, EOFError, paramiko.SSHException) as error:
                _raise_failure(remote, channel, remote_path, error)
        finally:
            # On a connection cut by Ctrl-C or SIGTERM, close() fails too; its error must not
            # replace the interrupt that is on its way up.
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.close()
        receiver, remote_sha256 = _parse_answer(remote, remote_path, answer)
        return _Sent(source.sha256, source.size, sent, remote_sha256, receiver)


class FileSink(Protocol):
    """Where `upload_through` sends the bytes: a `remote.session.Session` with its helper."""

    def put(
        self, remote_path: str, size: int, chunks: Iterable[memoryview], *, timeout: float | None
    ) -> str: ...

    def close(self) -> None: ...


def upload_through(
    sink: FileSink,
    local: Path,
    remote_path: str,
    *,
    progress: Progress | None = None,
    known: Fingerprint | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> UploadResult:
    """Like `upload`, through a channel that is already open (the session's helper): no channel
    to open and no shell to start. Always a plain stream (the helper does not decompress)."""
    started = time.monotonic()
    local = Path(local)
    source = ArtifactSource(local, known)

    def chunks() -> Iterator[memoryview]:
        with source.chunks(compressed=False) as blocks:
            for block in blocks:
                yield block
                if progress:
                    progress(source.sending(), source.size)
        if source.done != source.size:
            raise source.changed_error()

    try:
        remote_sha256 = sink.put(remote_path, source.size, chunks(), timeout=timeout)
    except OperationFailed:
        sink.close()  # the helper waits for bytes that will not come: it removes the file
        raise
    if source.changed():
        raise source.changed_error()
    if progress:
        progress(source.size, source.size)
    return UploadResult(
        source.sha256,
        source.size,
        source.size,
        time.monotonic() - started,
        STREAM,
        remote_sha256,
        "session",
    )


@dataclass(frozen=True)
class _Sent:
    sha256: str
    size: int
    bytes_sent: int
    remote_sha256: str | None
    receiver: str


_SHA256 = re.compile(r"\b[0-9a-f]{64}\b")


def _parse_answer(remote: Remote, remote_path: str, answer: str) -> tuple[str, str | None]:
    words = answer.split()
    found = _SHA256.search(answer)
    if words[:1] == ["plain"]:
        return "plain", None
    if words[:1] in (["python3"], ["tee"]) and found:
        return words[0], found.group(0)
    raise RemoteError(
        f"on {remote.description}: the receiver of {remote_path} exited 0 but answered "
        f"{answer.strip()[:200]!r}, not a sha256",
        hint="the file there cannot be trusted; deploy again",
    )


class _TargetLacksZstd(Exception):
    pass


def _wait_for_exit(
    remote: Remote, channel: paramiko.Channel, remote_path: str, timeout: float
) -> None:
    if not channel.status_event.wait(timeout):
        if _connection_lost(channel):
            raise EOFError("connection closed")
        raise RemoteError(
            f"on {remote.description}: no answer {timeout:.0f}s after the upload to "
            f"{remote_path} ended",
            hint="check the target's disk and load; the file there may be partial",
        )
    status = channel.exit_status
    if status == -1 and _connection_lost(channel):  # paramiko's "closed without a status"
        raise EOFError("connection closed")
    if status == NO_ZSTD:
        raise _TargetLacksZstd()
    if status != 0:
        raise RemoteError(_refused_message(remote, channel, remote_path, status), hint=REFUSED_HINT)


def _read_stdout(channel: paramiko.Channel) -> str:
    """The receiver's answer: its stdout up to EOF (a stall raises the channel's timeout)."""
    chunks = []
    while chunk := channel.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _connection_lost(channel: paramiko.Channel) -> bool:
    transport = channel.get_transport()
    return transport is None or not transport.is_active()


def _raise_failure(
    remote: Remote, channel: paramiko.Channel, remote_path: str, error: BaseException
) -> None:
    """Tell a target that refused the write (it exited) from a link that broke or stalled."""
    status = channel.exit_status if channel.exit_status_ready() else 0
    if status == NO_ZSTD:
        raise _TargetLacksZstd() from None
    if status > 0 or (status == -1 and not _connection_lost(channel)):
        raise RemoteError(
            _refused_message(remote, channel, remote_path, status), hint=REFUSED_HINT
        ) from None
    if _connection_lost(channel):
        what = "the connection was lost"
    elif isinstance(error, TimeoutError):
        what = "the link stood still"
    else:
        what = str(error) or type(error).__name__
    raise upload_failed(remote, remote_path, what) from None


def _refused_message(
    remote: Remote, channel: paramiko.Channel, remote_path: str, status: int
) -> str:
    stderr = _drain_stderr(channel).strip()[-800:]
    how = f"exit {status}" if status >= 0 else "ended without an exit status: killed by a signal?"
    return f"on {remote.description}: the target refused the upload to {remote_path} ({how})" + (
        f": {stderr}" if stderr else ""
    )


def _drain_stderr(channel: paramiko.Channel) -> str:
    chunks = []
    with contextlib.suppress(OSError):  # includes the channel's timeout
        while channel.recv_stderr_ready() or not channel.closed:
            chunk = channel.recv_stderr(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
