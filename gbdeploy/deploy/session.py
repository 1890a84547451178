"""Many remote commands over one ssh channel: one shell on the target, framed answers.

Every `Remote.run` opens an exec channel, and the target's login shell reads its rc files each
time (0.1 to 0.4 s here). A `Session` opens one channel running `sh` (wrapped by `Remote.wrap`, so a
container target works the same) and writes each command to it as a here-document run by a child
`sh -c`, so a command's `exit` or `cd` never reaches the session's shell. After the command, the
shell prints a marker line with its exit status on stdout and a marker on stderr; what came
before the markers is the command's output. The marker holds a random token per session, and the
here-document's delimiter another, so no output or command text can end a frame early.

A `Session` offers the same `run(command, check=, timeout=)` as `Remote`, so probes run over it.
`executed` lists every command sent, in order: the plan test compares it with the dry-run.
"""

from __future__ import annotations

import secrets
import time
from contextlib import suppress

import paramiko

from ..connection import CommandResult, Remote
from ..errors import RemoteError

RECEIVE = 1 << 16
POLL_SECONDS = 0.5  # how often a wait looks at the connection


class Session:
    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.executed: list[str] = []
        self._channel: paramiko.Channel | None = None
        self._out = b""
        self._err = b""

    @property
    def description(self) -> str:
        return self.remote.description

    def open(self) -> None:
        if self._channel is not None and not self._channel.closed:
            return
        try:
            self._channel = self.remote.channel("exec sh")
        except (OSError, EOFError, paramiko.SSHException) as error:
            raise RemoteError(f"on {self.description}: cannot open a session: {error}") from None
        self._out = self._err = b""

    def run(
        self, command: str, *, check: bool = True, timeout: float | None = 120.0
    ) -> CommandResult:
        """Run `command` (already quoted) in a child shell on the target; RemoteError if `check`
        and it exits non-zero, or if the session breaks or the command outlives `timeout`."""
        self.open()
        channel = self._channel
        assert channel is not None
        self.executed.append(command)
        mark = secrets.token_hex(8)
        end = f"GBDEPLOY_END_{secrets.token_hex(8)}"
        frame = (
            f"sh -c \"$(cat <<'{end}'\n{command}\n{end}\n)\" </dev/null\n"
            f"printf '\\n{mark} %s\\n' \"$?\"; printf '\\n{mark}\\n' >&2\n"
        )
        try:
            channel.sendall(frame.encode())
            stdout, status = self._read_frame(channel, mark, timeout)
        except (OSError, EOFError, paramiko.SSHException, TimeoutError) as error:
            self.close()
            why = (
                f"timed out after {timeout:.0f}s"
                if isinstance(error, TimeoutError)
                else (f"connection lost: {error or type(error).__name__}")
            )
            raise RemoteError(f"on {self.description}: {why}: {_first(command)}") from None
        stderr = self._take_stderr(channel, mark, timeout)
        result = CommandResult(command, status, stdout, stderr)
        if check and not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip())[-800:]
            raise RemoteError(
                f"on {self.description}: command failed (exit {status}): {_first(command)}"
                + (f"\n  {detail}" if detail else "")
            )
        return result

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
                raise EOFError("the session's shell exited")
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

    def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with suppress(OSError, EOFError, paramiko.SSHException):
                channel.close()


def _first(command: str) -> str:
    line = command.strip().splitlines()[0] if command.strip() else command
    return line if len(line) < 120 else line[:117] + "…"
