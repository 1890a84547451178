"""Many remote commands, and the upload, over one ssh channel: framed answers.

Every `Remote.run` opens an exec channel, and the target's login shell reads its rc files each
time (0.1 to 0.4 s here). A `Session` opens one channel (wrapped by `Remote.wrap`, so a container
target works the same) and keeps it for the whole deploy. What runs at its far end:

    python3 (the helper)   when the target has python3 (/usr/bin/python3 first, as the upload's
                           receiver): it reads length-prefixed requests from the channel, runs each
                           command with `sh -c` (stdin /dev/null) and answers with its exit status,
                           stdout and stderr, each with its length. It also takes a file (`put`):
                           exactly SIZE bytes written to a new file and hashed in the same pass,
                           so the upload needs no second channel and no second shell start.
    sh                     otherwise: each command goes to the shell as a here-document run by a
                           child `sh -c`, followed by a marker line with its exit status on stdout
                           and a marker on stderr. The markers hold a random token per session, and
                           the here-document's delimiter another, so no output or command text can
                           end a frame early. Uploads then take their own channel (`transfer`).

The far end says which it is in its first line. In both, a command's `exit` or `cd` never reaches
the session, and a process a command leaves running in the background does not hold it up.

`executed` lists every command sent (and every file put, as the plan line that names it), in
order: the plan test compares it with the dry-run.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import TypeVar

import paramiko

from ..errors import RemoteError
from . import far_end
from .connection import CommandResult, Remote, quote
from .transfer import REFUSED_HINT, exec_python, upload_failed

T = TypeVar("T")
RECEIVE = 1 << 16
POLL_SECONDS = 0.5  # how often a wait looks at the connection
HELLO_SECONDS = 20.0  # the far end's first line: python3 or sh start in well under a second
HELPER = "python3"
SHELL = "sh"
HELLO = "gbdeploy-session"

# The far end when python3 is there: `remote/far_end/helper.py` (its requests are described
# there), which also receives uploads on a channel of their own (`transfer.receive_command`).
HELPER_PROGRAM = far_end.text("helper.py")


def launcher_command() -> str:
    """What the session's channel runs: the helper under the first python3 found (the upload's
    receiver's choice, `transfer.PYTHONS`), else sh."""
    return "\n".join([*exec_python(HELPER_PROGRAM), f"echo '{HELLO} {SHELL}'; exec sh"])


def put_line(remote_path: str, size: int) -> str:
    """The plan's line for a file sent through the helper (`Session.put`)."""
    return (
        f"through the session's python3: write {quote(remote_path)} as a new file "
        f"({size} bytes, hashed as written)"
    )


class Session:
    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.executed: list[str] = []
        self.mode: str | None = None  # HELPER or SHELL, from the far end's first line
        self._channel: paramiko.Channel | None = None
        self._out = b""
        self._err = b""

    @property
    def description(self) -> str:
        return self.remote.description

    def open(self) -> None:
        """Open the channel; the far end starts while the caller goes on (`streams_files` waits)."""
        if self._channel is not None and not self._channel.closed:
            return
        try:
            self._channel = self.remote.channel(launcher_command())
        except (OSError, EOFError, paramiko.SSHException) as error:
            raise RemoteError(f"on {self.description}: cannot open a session: {error}") from None
        self._out = self._err = b""
        self.mode = None

    def streams_files(self, timeout: float | None = 120.0) -> bool:
        """Whether `put` can send a file (the far end is the python3 helper). Waits for the far
        end to start."""
        self._exchange(lambda channel: None, "start the session", timeout)
        return self.mode == HELPER

    def run(
        self, command: str, *, check: bool = True, timeout: float | None = 120.0
    ) -> CommandResult:
        """Run `command` (already quoted) in a child shell on the target; RemoteError if `check`
        and it exits non-zero, or if the session breaks or the command outlives `timeout`."""
        self.executed.append(command)
        stdout, stderr, status = self._exchange(
            lambda channel: self._run(channel, command, timeout), _first(command), timeout
        )
        result = CommandResult(command, status, stdout, stderr)
        if check and not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip())[-800:]
            raise RemoteError(
                f"on {self.description}: command failed (exit {status}): {_first(command)}"
                + (f"\n  {detail}" if detail else "")
            )
        return result

    def put(
        self,
        remote_path: str,
        size: int,
        chunks: Iterable[bytes | memoryview],
        *,
        timeout: float | None = 60.0,
    ) -> str:
        """Send `size` bytes from `chunks` as a new file at `remote_path` (whatever file or
        symlink was there is replaced, never written through); the sha256 the target computed
        from the bytes it wrote. Only when `streams_files()`. RemoteError when the target refuses
        (with its reason) or the link breaks; the partial file is then removed there."""
        if not self.streams_files(timeout):
            raise RemoteError(f"on {self.description}: the session cannot take files (no python3)")
        self.executed.append(put_line(remote_path, size))
        channel = self._channel
        assert channel is not None
        path = remote_path.encode()
        channel.settimeout(timeout)
        try:
            channel.sendall(f"put {int(size)} {len(path)}\n".encode() + path)
            for chunk in chunks:
                channel.sendall(chunk)
            answer = self._read_line(channel, timeout)
            if answer.startswith(b"refused "):
                answer += b"\n" + self._read_exact(channel, _length(answer), timeout)
        except (OSError, EOFError, paramiko.SSHException, TimeoutError) as error:
            answer = self._last_words(channel)
            if not answer.startswith(b"refused "):
                self.close()
                what = (
                    "the link stood still" if isinstance(error, TimeoutError) else "connection lost"
                )
                raise upload_failed(self.remote, remote_path, what) from None
        if answer.startswith(b"refused "):
            self.close()  # the far end exited after it refused
            reason = answer.partition(b"\n")[2][: _length(answer)].decode(errors="replace")
            raise RemoteError(
                f"on {self.description}: the target refused the upload to {remote_path}: "
                f"{reason.strip()[-800:]}",
                hint=REFUSED_HINT,
            )
        words = answer.split()
        if words[:1] != [b"put"] or len(words) != 2 or len(words[1]) != 64:
            self.close()
            raise RemoteError(
                f"on {self.description}: the session answered {answer[:200]!r} to the upload of "
                f"{remote_path}, not a sha256",
                hint="the file there cannot be trusted; deploy again",
            )
        return words[1].decode()

    def close(self) -> None:
        channel, self._channel = self._channel, None
        # A cut or dropped connection is left as it is: closing a channel sends on it and takes
        # its locks, which an interrupted exchange may still hold.
        if channel is not None and self.remote.alive:
            with suppress(OSError, EOFError, paramiko.SSHException):
                channel.close()

    # -- the exchange
    def _exchange(
        self, talk: Callable[[paramiko.Channel], T], what: str, timeout: float | None
    ) -> T:
        self.open()
        channel = self._channel
        assert channel is not None
        try:
            if self.mode is None:
                starting = HELLO_SECONDS if timeout is None else min(timeout, HELLO_SECONDS)
                try:
                    self._hello(channel, starting)
                except TimeoutError:
                    timeout, what = starting, f"the far end (python3, else sh) never began; {what}"
                    raise
            return talk(channel)
        except (OSError, EOFError, paramiko.SSHException, TimeoutError) as error:
            self.close()
            why = (
                f"timed out after {timeout:g}s"
                if isinstance(error, TimeoutError)
                else (f"connection lost: {error or type(error).__name__}")
            )
            said = self._err.decode(errors="replace").strip()[-500:]
            # The far end exited before it started: the container or sudo is not there.
            found = self.remote.diagnose(said) if self.mode is None else None
            if found is not None:
                raise found from None
            raise RemoteError(
                f"on {self.description}: {why}: {what}" + (f"\n  {said}" if said else "")
            ) from None

    def _hello(self, channel: paramiko.Channel, timeout: float | None) -> None:
        line = self._read_line(channel, timeout).decode(errors="replace")
        words = line.split()
        if words[:1] != [HELLO] or words[1:] not in ([HELPER], [SHELL]):
            raise EOFError(f"the session did not start: {line.strip()[:200] or 'no answer'}")
        self.mode = words[1]

    def _run(
        self, channel: paramiko.Channel, command: str, timeout: float | None
    ) -> tuple[str, str, int]:
        if self.mode == HELPER:
            data = command.encode()
            channel.sendall(f"run {len(data)}\n".encode() + data)
            words = self._read_line(channel, timeout).split()
            if len(words) != 4 or words[0] != b"ran":
                raise EOFError(f"the session answered {b' '.join(words)[:200]!r}")
            status, out, err = (int(word) for word in words[1:])
            body = self._read_exact(channel, out + err, timeout)
            return body[:out].decode(errors="replace"), body[out:].decode(errors="replace"), status
        mark = secrets.token_hex(8)
        end = f"GBDEPLOY_END_{secrets.token_hex(8)}"
        frame = (
            f"sh -c \"$(cat <<'{end}'\n{command}\n{end}\n)\" </dev/null\n"
            f"printf '\\n{mark} %s\\n' \"$?\"; printf '\\n{mark}\\n' >&2\n"
        )
        channel.sendall(frame.encode())
        stdout, status = self._read_frame(channel, mark, timeout)
        return stdout, self._take_stderr(channel, mark, timeout), status

    def _last_words(self, channel: paramiko.Channel) -> bytes:
        """After a send failed: what the far end wrote before it exited (it may have refused)."""
        deadline = time.monotonic() + 5.0
        with suppress(OSError, EOFError, paramiko.SSHException, TimeoutError):
            while True:
                self._receive(channel, deadline, stderr=False)
        return self._out

    # -- reading
    def _read_line(self, channel: paramiko.Channel, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._out:
            self._receive(channel, deadline, stderr=False)
        line, _, self._out = self._out.partition(b"\n")
        return line

    def _read_exact(self, channel: paramiko.Channel, count: int, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._out) < count:
            self._receive(channel, deadline, stderr=False)
        data, self._out = self._out[:count], self._out[count:]
        return data

    def _read_frame(
        self, channel: paramiko.Channel, mark: str, timeout: float | None
    ) -> tuple[str, int]:
        needle = f"\n{mark} ".encode()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            at = self._out.find(needle)
            if at >= 0:
                line_end = self._out.find(b"\n", at + len(needle))
                if line_end >= 0:
                    status = int(self._out[at + len(needle) : line_end] or b"255")
                    stdout = self._out[:at]
                    self._out = self._out[line_end + 1 :]
                    return stdout.decode(errors="replace"), status
            self._receive(channel, deadline, stderr=False)

    def _take_stderr(self, channel: paramiko.Channel, mark: str, timeout: float | None) -> str:
        needle = f"\n{mark}\n".encode()
        deadline = None if timeout is None else time.monotonic() + min(timeout, 30.0)
        with suppress(OSError, EOFError, paramiko.SSHException, TimeoutError):
            while needle not in self._err:
                self._receive(channel, deadline, stderr=True)
        text, _, self._err = self._err.partition(needle)
        return text.decode(errors="replace")

    def _receive(self, channel: paramiko.Channel, deadline: float | None, *, stderr: bool) -> None:
        """Wait for more of stdout (or of stderr), keeping whatever the other stream brought so
        that neither fills the channel's window."""
        channel.settimeout(POLL_SECONDS)
        while True:
            if stderr:
                while channel.recv_ready():
                    self._out += channel.recv(RECEIVE)
            else:
                while channel.recv_stderr_ready():
                    self._err += channel.recv_stderr(RECEIVE)
            try:
                data = channel.recv_stderr(RECEIVE) if stderr else channel.recv(RECEIVE)
            except TimeoutError:
                data = None
            if data == b"":
                with suppress(OSError, EOFError, paramiko.SSHException, TimeoutError):
                    while channel.recv_stderr_ready():  # its last words, for the error
                        self._err += channel.recv_stderr(RECEIVE)
                raise EOFError("the session's far end exited")
            if data:
                if stderr:
                    self._err += data
                else:
                    self._out += data
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError
            transport = channel.get_transport()
            if transport is None or not transport.is_active():
                raise EOFError("connection closed")


def _length(answer: bytes) -> int:
    """N of a `refused N` line."""
    words = answer.split(b"\n", 1)[0].split()
    return int(words[1]) if len(words) == 2 and words[1].isdigit() else 0


def _first(command: str) -> str:
    line = command.strip().splitlines()[0] if command.strip() else command
    return line if len(line) < 120 else line[:117] + "…"
