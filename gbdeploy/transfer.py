"""Uploading an artifact to a target.

Placeholder implementation (SFTP through Fabric); the fast path replaces the body of `upload`
while keeping its signature and result.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .connection import Remote

Progress = Callable[[int, int], None]  # (bytes of the artifact done, artifact size)


@dataclass(frozen=True)
class UploadResult:
    sha256: str  # of the local artifact, computed while it was read
    size: int  # of the artifact
    bytes_sent: int  # on the wire (less than size when compressed)
    seconds: float
    method: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload(
    remote: Remote, local: Path, remote_path: str, *, progress: Progress | None = None
) -> UploadResult:
    """Write `local` to `remote_path` on the target (creating or truncating it).

    Raises RemoteError when the connection drops or the target refuses the write; the file at
    `remote_path` may then be partial, so callers upload to a temporary name.
    """
    started = time.monotonic()
    size = local.stat().st_size
    remote.open()
    remote.connection.put(str(local), remote_path)
    if progress:
        progress(size, size)
    return UploadResult(file_sha256(local), size, size, time.monotonic() - started, "sftp")
