"""Uploading an artifact to a target: one exec channel, compressed with zstd when it pays.

The artifact is streamed over an SSH exec channel into a remote shell redirect:

    zstd -d -q -c > PATH     when this machine has zstd and a sample of the artifact compresses
    cat > PATH               otherwise, and on a target without zstd (its receiver exits 97
                             before touching PATH; the upload starts over as a plain stream)

Locally the artifact is read once, in a thread: each block goes into the sha256 and into the local
`zstd -1 -T0` (or straight to the sender). Sending starts at once, while the target's login shell
is still starting (~0.1 s on the test box). The shell opens PATH itself, so a refused write
("Directory nonexistent", "Is a directory", "Permission denied", "Read-only file system") comes
back as the remote's stderr with a non-zero exit, which becomes a RemoteError. Every wait on the
channel has a timeout, so a link that stops moving also ends in a RemoteError, never a hang.

Why not SFTP (Fabric's `put`) or `run(in_stream=...)`: see FACTS.md (half scp's speed, and
unusably slow). Why no bigger windows: the window and packet size that limit an upload are the
ones the server advertises (OpenSSH: 2 MiB, 32 KiB per session channel); the client's own
`window_size` only bounds what the server may send back. The cipher matters more:
`connection.aead_first_transport` prefers AES-GCM.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import queue
import shutil
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

import paramiko

from .connection import Remote, quote
from .errors import OperationFailed, RemoteError
from .output import human_bytes

Progress = Callable[[int, int], None]  # (bytes of the artifact done, artifact size)

BLOCK = 1 << 20
COMPRESSOR = ("zstd", "-1", "-T0", "-q", "-c")  # level 1: ~3x on ELF binaries at ~700 MB/s
SAMPLE = 256 << 10  # bytes taken from the start, middle and end to judge compressibility
WORTH_COMPRESSING = 0.9  # compress when a sample shrinks below this fraction
DEFAULT_TIMEOUT = 60.0  # seconds the link may stand still before the upload is abandoned

ZSTD = "zstd"
STREAM = "stream"
NO_ZSTD = 97  # the zstd receiver's exit status when the target has no zstd
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def receive_command(method: str, remote_path: str) -> str:
    """The exact command the target runs to receive the stream (before lxc wrapping).

    The zstd receiver checks for zstd itself and, when it is missing, exits NO_ZSTD before it
    touches the file; the sender does not wait for that check (it would cost a round trip plus
    the remote shell's start-up on every upload), and starts over as a plain stream instead.
    """
    path = quote(remote_path)
    if method == ZSTD:
        return (
            f"command -v zstd >/dev/null 2>&1 || {{ echo 'no zstd on the target' >&2; "
            f"exit {NO_ZSTD}; }}; exec zstd -d -q -c > {path}"
        )
    return f"cat > {path}"


def worth_compressing(path: Path) -> bool:
    """Whether zstd shrinks blocks from the start, middle and end of `path` noticeably."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= 3 * SAMPLE:
            sample = f.read()
        else:
            pieces = []
            for offset in (0, size // 2, size - SAMPLE):
                f.seek(offset)
                pieces.append(f.read(SAMPLE))
            sample = b"".join(pieces)
    if not sample:
        return False
    compressed = subprocess.run(COMPRESSOR, input=sample, capture_output=True, check=False)
    if compressed.returncode != 0:  # a broken local zstd: send it plain
        return False
    return len(compressed.stdout) < WORTH_COMPRESSING * len(sample)


def choose_method(remote: Remote, local: Path, compress: bool | None) -> str:
    """ZSTD when this machine has zstd, the target is not known to lack it, and either
    `compress` asks for it or a sample of the artifact shrinks; else STREAM."""
    if compress is False or shutil.which(COMPRESSOR[0]) is None or remote in _WITHOUT_ZSTD:
        return STREAM
    return ZSTD if compress is True or worth_compressing(local) else STREAM


def upload_plan(local: Path, remote_path: str, *, compress: bool | None = None) -> list[str]:
    """What `upload` will do, for a dry-run plan, without connecting: the exact commands."""
    local = Path(local)
    wanted = compress is not False and shutil.which(COMPRESSOR[0]) is not None
    if wanted and compress is None and local.is_file():
        wanted = worth_compressing(local)
    if not wanted:
        return [f"on the target: {receive_command(STREAM, remote_path)}  < {local}"]
    return [
        f"here: {' '.join(COMPRESSOR)} < {local}",
        f"on the target: {receive_command(ZSTD, remote_path)}",
        f"(a target without zstd exits {NO_ZSTD}; then: {receive_command(STREAM, remote_path)})",
    ]


def upload(
    remote: Remote,
    local: Path,
    remote_path: str,
    *,
    progress: Progress | None = None,
    compress: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> UploadResult:
    """Write `local` to `remote_path` on the target (creating or truncating it).

    `compress`: None (default) uses zstd when both ends have it and the artifact compresses;
    True uses it whenever both ends have it; False never does. A target found without zstd gets a
    plain stream (progress then starts over once). `timeout` is how long the link may stand
    still (no window to send into, no answer at the end) before the upload is abandoned.

    Raises RemoteError when the connection drops, stalls, or the target refuses the write; the
    file at `remote_path` may then be partial, so callers upload to a temporary name.
    """
    started = time.monotonic()
    local = Path(local)
    remote.open()
    method = choose_method(remote, local, compress)
    try:
        reader, sent = _send(remote, local, remote_path, method, progress, timeout)
    except _TargetLacksZstd:
        _WITHOUT_ZSTD.add(remote)
        method = STREAM
        reader, sent = _send(remote, local, remote_path, method, progress, timeout)
    if progress:
        progress(reader.size, reader.size)
    return UploadResult(reader.sha256, reader.size, sent, time.monotonic() - started, method)


def _send(
    remote: Remote,
    local: Path,
    remote_path: str,
    method: str,
    progress: Progress | None,
    timeout: float,
) -> tuple[_ArtifactReader, int]:
    """One attempt: the artifact onto one channel; returns the reader and the bytes sent."""
    reader = _ArtifactReader(local)
    sent = 0
    # Reading (and compressing) starts while the target is still starting its receiver.
    with reader.chunks(compressed=method == ZSTD) as chunks:
        try:
            channel = remote.channel(receive_command(method, remote_path))
        except (OSError, EOFError, paramiko.SSHException) as error:
            raise RemoteError(
                f"on {remote.description}: cannot start the upload to {remote_path}: {error}"
            ) from None
        channel.settimeout(timeout)
        try:
            for chunk in chunks:
                channel.sendall(chunk)
                sent += len(chunk)
                if progress:
                    progress(min(reader.done, reader.size - 1), reader.size)
            channel.shutdown_write()
            _wait_for_exit(remote, channel, remote_path, timeout)
        except (OSError, EOFError, paramiko.SSHException) as error:
            _raise_failure(remote, channel, remote_path, error)
        finally:
            # On a connection cut by Ctrl-C or SIGTERM, close() fails too; its error must not
            # replace the interrupt that is on its way up.
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.close()
    return reader, sent


class _TargetLacksZstd(Exception):
    pass


class _ArtifactReader:
    """Reads the artifact once, hashing each block, in threads of its own: reading, hashing and
    compressing overlap with sending, and a slow moment on one side does not stall the other."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.done = 0
        self._digest = hashlib.sha256()
        self._error: OperationFailed | None = None
        self._cancelled = threading.Event()
        self._ready: queue.Queue[bytes | None] = queue.Queue(maxsize=16)  # chunks to send

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _put(self, chunk: bytes | None) -> None:
        while not self._cancelled.is_set():
            with contextlib.suppress(queue.Full):
                self._ready.put(chunk, timeout=0.1)
                return

    def _read(self, write: Callable[[bytes], object], close: Callable[[], object]) -> None:
        try:
            with open(self.path, "rb") as f:
                while (block := f.read(BLOCK)) and not self._cancelled.is_set():
                    self._digest.update(block)
                    self.done += len(block)
                    write(block)
        except OSError as error:  # includes a compressor that went away
            if not self._cancelled.is_set():
                self._error = OperationFailed(f"cannot read the artifact {self.path}: {error}")
        finally:
            with contextlib.suppress(OSError):
                close()

    def _drain(self, output: IO[bytes]) -> None:
        for chunk in iter(lambda: output.read1(BLOCK), b""):
            self._put(chunk)
        self._put(None)

    @contextlib.contextmanager
    def chunks(self, *, compressed: bool) -> Iterator[Iterator[bytes]]:
        """The chunks to send; on any exit the threads (and the compressor) are stopped."""
        process = None
        if compressed:
            process = subprocess.Popen(
                COMPRESSOR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            assert process.stdin and process.stdout and process.stderr
            stdin, stdout = process.stdin, process.stdout
            _widen_pipe(stdin)
            _widen_pipe(stdout)
            threads = [
                threading.Thread(target=self._read, args=(stdin.write, stdin.close)),
                threading.Thread(target=self._drain, args=(stdout,)),
            ]
        else:
            end = functools.partial(self._put, None)
            threads = [threading.Thread(target=self._read, args=(self._put, end))]
        for thread in threads:
            thread.daemon = True
            thread.start()
        try:
            yield iter(self._ready.get, None)
        except BaseException:
            self._cancelled.set()
            if process:
                process.kill()  # our own child; unblocks both threads
            raise
        finally:
            for thread in threads:
                thread.join()
            if process:
                process.wait()
                stderr = process.stderr.read().decode(errors="replace").strip()
                process.stdout.close()
                process.stderr.close()
        if process and process.returncode != 0:
            raise OperationFailed(
                f"the local compressor `{' '.join(COMPRESSOR)}` failed "
                f"(exit {process.returncode}): {stderr}",
                hint="check that zstd works on this machine, or upload with compress=False",
            )
        if self._error:
            raise self._error


def _widen_pipe(pipe: IO[bytes]) -> None:
    """A 1 MiB pipe buffer (Linux) lets the compressor run ahead in bigger steps."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, BLOCK)


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
    raise RemoteError(
        f"on {remote.description}: upload to {remote_path} failed: {what}",
        hint="the file there may be partial; check the connection "
        f"(`ssh {remote.target.ssh} true`) and run the deploy again",
    ) from None


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


class TerminalProgress:
    """A progress callback that keeps one updating line on a terminal: bytes, rate, percent.

    Writes nothing when `stream` is not a TTY (CI logs, pipes); redraws at most every `interval`
    seconds, and always once at 100 %, then ends the line (unless `end_line` is false: then whoever
    owns the line finishes it). The rate counts from the moment it is made, so make it right
    before the upload starts.
    """

    def __init__(
        self,
        label: str = "upload",
        stream: TextIO | None = None,
        *,
        interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        end_line: bool = True,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock
        self.end_line = end_line
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = clock()
        self.last_draw = float("-inf")
        self.finished = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or self.finished:
            return
        now = self.clock()
        complete = done >= total
        if not complete and now - self.last_draw < self.interval:
            return
        self.last_draw = now
        self.stream.write("\r" + self.line(done, total, now - self.started) + "\x1b[K")
        if complete:
            if self.end_line:
                self.stream.write("\n")
            self.finished = True
        self.stream.flush()

    def line(self, done: int, total: int, elapsed: float) -> str:
        percent = 100.0 * done / total if total else 100.0
        rate = f"{human_bytes(done / elapsed)}/s" if elapsed > 0 else "-"
        return f"{self.label}: {human_bytes(done)} / {human_bytes(total)}  {rate}  {percent:3.0f}%"
