"""`LocalRemote`: the `run` of a `connection.Remote` over a local `sh`, for the fast test tier.

The far end's scripts, the probes and their parsers run here exactly as they do over ssh (the
same text, the same sh), without a server: what a script prints and what the target's files
become are checked in milliseconds. The end-to-end tier keeps the real sshd.
"""

from __future__ import annotations

import getpass
import subprocess

from ..errors import RemoteError
from .connection import CommandResult


class LocalRemote:
    """Runs each command with `sh -c` on this machine, stdin empty, as `Remote.run` does."""

    description = "this machine (local sh)"

    @property
    def user(self) -> str:
        return getpass.getuser()

    def wrap(self, command: str) -> str:
        return command

    def run(
        self, command: str, *, check: bool = True, timeout: float | None = 120.0
    ) -> CommandResult:
        try:
            done = subprocess.run(
                ["sh", "-c", command],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise RemoteError(f"on {self.description}: timed out after {timeout}s") from None
        result = CommandResult(command, done.returncode, done.stdout, done.stderr)
        if check and not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip())[-800:]
            raise RemoteError(
                f"on {self.description}: command failed (exit {result.exit_code})"
                + (f"\n  {detail}" if detail else "")
            )
        return result

    def close(self) -> None:
        """Nothing to close: each command is its own process."""
