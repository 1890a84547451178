"""Uploading an artifact to a target: one exec channel, compressed with zstd when it pays.

The artifact is streamed over an SSH exec channel into a remote shell redirect:

    zstd -d -q -c > PATH     when both ends have zstd and a sample of the artifact compresses
    cat > PATH               otherwise (a target without zstd, an incompressible artifact)

Locally the artifact is read once: each block goes into the sha256 and into the local
`zstd -1 -T0` (or straight onto the channel). The shell opens PATH itself, so a refused write
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
import hashlib
import shutil
import subprocess
import sys
import threading
import time
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
SAMPLE_BLOCKS = 3  # blocks taken from the start, middle and end to judge compressibility
WORTH_COMPRESSING = 0.9  # compress when a sample shrinks below this fraction
DEFAULT_TIMEOUT = 60.0  # seconds the link may stand still before the upload is abandoned

ZSTD = "zstd"
STREAM = "stream"


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


def remote_command(method: str, remote_path: str) -> str:
    """The exact command the target runs to receive the stream (before lxc wrapping)."""
    if method == ZSTD:
        return f"zstd -d -q -c > {quote(remote_path)}"
    return f"cat > {quote(remote_path)}"


def remote_has_zstd(remote: Remote, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    return remote.run("command -v zstd >/dev/null 2>&1", check=False, timeout=timeout).ok


def worth_compressing(path: Path) -> bool:
    """Whether zstd shrinks blocks from the start, middle and end of `path` noticeably."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= SAMPLE_BLOCKS * BLOCK:
            sample = f.read()
        else:
            blocks = []
            for offset in (0, size // 2, size - BLOCK):
                f.seek(offset)
                blocks.append(f.read(BLOCK))
            sample = b"".join(blocks)
    if not sample:
        return False
    compressed = subprocess.run(COMPRESSOR, input=sample, capture_output=True, check=True).stdout
    return len(compressed) < WORTH_COMPRESSING * len(sample)


def choose_method(remote: Remote, local: Path, compress: bool | None, timeout: float) -> str:
    if compress is False or shutil.which(COMPRESSOR[0]) is None:
        return STREAM
    if compress is None and not worth_compressing(local):
        return STREAM
    return ZSTD if remote_has_zstd(remote, timeout=timeout) else STREAM


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
    True uses it whenever both ends have it; False never does. `timeout` is how long the link may
    stand still (no window to send into, no answer at the end) before the upload is abandoned.

    Raises RemoteError when the connection drops, stalls, or the target refuses the write; the
    file at `remote_path` may then be partial, so callers upload to a temporary name.
    """
    started = time.monotonic()
    local = Path(local)
    remote.open()
    method = choose_method(remote, local, compress, timeout)
    command = remote_command(method, remote_path)
    try:
        channel = remote.channel(command)
    except (OSError, EOFError, paramiko.SSHException) as error:
        raise RemoteError(
            f"on {remote.description}: cannot start the upload to {remote_path}: {error}"
        ) from None
    channel.settimeout(timeout)
    reader = _ArtifactReader(local)
    sent = 0
    try:
        with reader.chunks(compressed=method == ZSTD) as chunks:
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
        channel.close()
    if progress:
        progress(reader.size, reader.size)
    return UploadResult(reader.sha256, reader.size, sent, time.monotonic() - started, method)


class _ArtifactReader:
    """Reads the artifact once, hashing each block, and yields what goes on the wire."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.done = 0
        self._digest = hashlib.sha256()
        self._error: BaseException | None = None

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _blocks(self) -> Iterator[bytes]:
        try:
            with open(self.path, "rb") as f:
                while block := f.read(BLOCK):
                    self._digest.update(block)
                    self.done += len(block)
                    yield block
        except OSError as error:
            raise OperationFailed(f"cannot read the artifact {self.path}: {error}") from None

    def chunks(self, *, compressed: bool) -> _Chunks:
        return _Chunks(self, compressed)

    def _feed(self, sink: IO[bytes]) -> None:
        try:
            for block in self._blocks():
                sink.write(block)
        except BaseException as error:  # reported by the consumer, which owns the thread
            self._error = error
        finally:
            with contextlib.suppress(OSError):  # a killed compressor has closed its end
                sink.close()


class _Chunks:
    """Context manager yielding the byte chunks to send; cleans up the compressor on any exit."""

    def __init__(self, reader: _ArtifactReader, compressed: bool) -> None:
        self.reader = reader
        self.compressed = compressed
        self.process: subprocess.Popen[bytes] | None = None
        self.feeder: threading.Thread | None = None
        self.blocks: Iterator[bytes] | None = None

    def __enter__(self) -> Iterator[bytes]:
        if not self.compressed:
            self.blocks = self.reader._blocks()
            return self.blocks
        self.process = subprocess.Popen(
            COMPRESSOR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.process.stdin is not None
        self.feeder = threading.Thread(
            target=self.reader._feed, args=(self.process.stdin,), daemon=True
        )
        self.feeder.start()
        return self._compressed()

    def _compressed(self) -> Iterator[bytes]:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        while chunk := stdout.read1(BLOCK):
            yield chunk

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if self.process is None:
            if self.blocks is not None:
                self.blocks.close()  # type: ignore[attr-defined]
            return
        if kind is not None:
            self.process.kill()  # our own child; unblocks the feeder's write
        assert self.feeder is not None
        self.feeder.join()
        self.process.wait()
        stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()
        if kind is not None:
            return
        if self.reader._error is not None:
            raise self.reader._error
        if self.process.returncode != 0:
            raise OperationFailed(
                f"the local compressor `{' '.join(COMPRESSOR)}` failed "
                f"(exit {self.process.returncode}): {stderr.strip()}",
                hint="check that zstd works on this machine, or upload without compression",
            )


def _wait_for_exit(
    remote: Remote, channel: paramiko.Channel, remote_path: str, timeout: float
) -> None:
    if not channel.status_event.wait(timeout):
        transport = channel.get_transport()
        if transport is None or not transport.is_active():
            raise EOFError("connection closed")
        raise RemoteError(
            f"on {remote.description}: no answer {timeout:.0f}s after the upload to "
            f"{remote_path} ended",
            hint="check the target's disk and load; the file there may be partial",
        )
    status = channel.exit_status
    if status != 0:
        raise RemoteError(_refused_message(remote, channel, remote_path, status))


def _raise_failure(
    remote: Remote, channel: paramiko.Channel, remote_path: str, error: BaseException
) -> None:
    """Tell a target that refused the write (it exited) from a link that broke or stalled."""
    if channel.exit_status_ready() and channel.exit_status != 0:
        raise RemoteError(
            _refused_message(remote, channel, remote_path, channel.exit_status)
        ) from None
    transport = channel.get_transport()
    if isinstance(error, TimeoutError):
        what = "the link stood still"
    elif transport is None or not transport.is_active():
        what = "the connection was lost"
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
    how = f"exit {status}" if status >= 0 else "killed by a signal"
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
    seconds, and always once at 100 %, then ends the line.
    """

    def __init__(
        self,
        label: str = "upload",
        stream: TextIO | None = None,
        *,
        interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started: float | None = None
        self.last_draw = float("-inf")
        self.finished = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or self.finished:
            return
        now = self.clock()
        if self.started is None:
            self.started = now
        complete = done >= total
        if not complete and now - self.last_draw < self.interval:
            return
        self.last_draw = now
        self.stream.write("\r" + self.line(done, total, now - self.started) + "\x1b[K")
        if complete:
            self.stream.write("\n")
            self.finished = True
        self.stream.flush()

    def line(self, done: int, total: int, elapsed: float) -> str:
        percent = 100.0 * done / total if total else 100.0
        rate = f"{human_bytes(done / elapsed)}/s" if elapsed > 0 else "-"
        return f"{self.label}: {human_bytes(done)} / {human_bytes(total)}  {rate}  {percent:3.0f}%"
