"""The artifact as an upload reads it: once, into reused buffers, hashed as it is read.

Fresh 1 MiB `bytes` per read cost a page fault per 4 KiB, so the blocks are views of one buffer
(each valid until the next is taken). When the caller hashed the artifact already (`Fingerprint`),
it is not hashed again, and a file whose inode, size or mtime changed is refused. Never more than
the size announced is read; a file that changed while it was read (a build still writing it) is
refused, before its last block goes out, so a receiver gets a short stream and removes the file.

Compressed, the blocks go through a local `zstd -1 -T0` (COMPRESSOR) fed by a thread;
`worth_compressing` judges from a sample whether that shrinks the artifact at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..artifact import Fingerprint, identity
from ..errors import OperationFailed

BLOCK = 1 << 20
COMPRESSOR = ("zstd", "-1", "-T0", "-q", "-c")  # level 1: ~2.4x on ELF binaries
SAMPLE = 256 << 10  # bytes taken from the start, middle and end to judge compressibility
WORTH_COMPRESSING = 0.9  # compress when a sample shrinks below this fraction
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


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


class ArtifactSource:
    """Reads the artifact once into reused buffers, hashing each block as it goes (unless its
    fingerprint is known: then the file must still be the one that was hashed)."""

    def __init__(
        self, path: Path, known: Fingerprint | None, *, announced: int | None = None
    ) -> None:
        self.path = path
        self.known = known
        try:
            self._identity = identity(path.stat())
        except OSError as error:
            raise OperationFailed(f"cannot read the artifact {path}: {error}") from None
        self.size = self._identity[1]
        self.done = 0
        self._digest = None if known else hashlib.sha256()
        self._error: OperationFailed | None = None
        announced_other = announced is not None and announced != self.size
        if (known and known.identity != self._identity) or announced_other:
            since = "it was hashed" if known else "the upload was prepared"
            raise OperationFailed(
                f"the artifact {path} changed since {since}",
                hint="wait for the build that writes it to finish, then deploy again",
            )

    @property
    def sha256(self) -> str:
        if self.known is not None:
            return self.known.sha256
        assert self._digest is not None
        return self._digest.hexdigest()

    def changed_error(self) -> OperationFailed:
        return OperationFailed(
            f"the artifact {self.path} changed while it was uploaded "
            f"({self.size} bytes when it started, {self.done} read, {self.size_now()} now)",
            hint="wait for the build that writes it to finish, then deploy again",
        )

    def size_now(self) -> int | None:
        try:
            return self.path.stat().st_size
        except OSError:
            return None

    def sending(self) -> int:
        """The bytes to show as sent while they travel: what was read, held one short of the
        whole, which is shown only once the target has the file."""
        return min(self.done, self.size - 1)

    def changed(self) -> bool:
        """Whether a build still writes the file: read other than stat'd, or touched since.

        A build that appends after our last read would otherwise ship its first part.
        """
        if self.done != self.size:
            return True
        try:
            return identity(self.path.stat()) != self._identity
        except OSError:
            return True

    def _blocks(self) -> Iterator[memoryview]:
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        try:
            with open(self.path, "rb", buffering=0) as f:
                # Never more than the size announced: what a build appends is noticed by changed().
                while self.done < self.size and (
                    count := f.readinto(view[: min(BLOCK, self.size - self.done)])
                ):
                    block = view[:count]
                    if self._digest is not None:
                        self._digest.update(block)
                    self.done += count
                    if self.done == self.size and self.changed():
                        # Not even the last block: the receiver gets a short stream and removes
                        # the file, instead of a complete one it would keep.
                        raise self.changed_error()
                    yield block
        except OSError as error:
            raise OperationFailed(f"cannot read the artifact {self.path}: {error}") from None

    def _feed(self, stdin: IO[bytes]) -> None:
        try:
            for block in self._blocks():
                stdin.write(block)
        except OperationFailed as error:
            self._error = error
        except OSError:  # the compressor went away: its exit status tells why
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    @contextlib.contextmanager
    def chunks(self, *, compressed: bool) -> Iterator[Iterator[memoryview]]:
        """The chunks to send (each valid until the next one is taken)."""
        if not compressed:
            yield self._blocks()
            return
        process = subprocess.Popen(
            COMPRESSOR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        assert process.stdin and process.stdout and process.stderr
        for pipe in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):  # a wider pipe: fewer, bigger steps (Linux)
                fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, BLOCK)
        feeder = threading.Thread(target=self._feed, args=(process.stdin,), daemon=True)
        feeder.start()
        try:
            yield _compressed(process.stdout)
        except BaseException:
            process.kill()  # our own child; unblocks the feeder
            raise
        finally:
            feeder.join()
            process.wait()
            stderr = process.stderr.read().decode(errors="replace").strip()
            process.stdout.close()
            process.stderr.close()
        if process.returncode != 0:
            raise OperationFailed(
                f"the local compressor `{' '.join(COMPRESSOR)}` failed "
                f"(exit {process.returncode}): {stderr}",
                hint="check that zstd works on this machine, or upload with compress=False",
            )
        if self._error:
            raise self._error


def _compressed(output: IO[bytes]) -> Iterator[memoryview]:
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    while count := output.readinto(buffer):  # type: ignore[attr-defined]
        yield view[:count]
