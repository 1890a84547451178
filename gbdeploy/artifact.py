"""The artifact: where it is, what it is, and its fingerprint.

Checks before anything is uploaded: a non-empty ELF executable for the target's machine type.

An empty file, an HTML error page saved by a failed download, a shell script or a shared library
would otherwise be uploaded, swapped in, fail to start and be rolled back: an outage for nothing.
`check` reads only the ELF header (and the program headers), never the whole file.

What counts as an executable: ELF type ET_EXEC, or ET_DYN with an interpreter (a PIE: what gcc
and rustc build by default) or marked PIE in its dynamic section (a static PIE). An ET_DYN with
neither is a shared library (`.so`): it has no program to start.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .config import Component, Settings
from .errors import OperationFailed, UsageError

ELF_MAGIC = b"\x7fELF"
ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4
PT_DYNAMIC, PT_INTERP = 2, 3
DT_NULL, DT_FLAGS_1 = 0, 0x6FFFFFFB
DF_1_PIE = 0x08000000
MAX_READ = 1 << 16  # bytes read for the program headers or the dynamic section, at most

Read = Callable[[int, int], bytes]  # (offset, count) → bytes of the file

# e_machine → the name `uname -m` prints for that machine (for 32/64-bit, little/big endian).
# Keys: (e_machine, 64-bit?, big endian?); None stands for either.
_MACHINES: dict[tuple[int, bool | None, bool | None], str] = {
    (62, None, None): "x86_64",  # EM_X86_64 (ELFCLASS32 here is the x32 ABI)
    (3, None, None): "i686",  # EM_386
    (183, None, False): "aarch64",  # EM_AARCH64
    (183, None, True): "aarch64_be",
    (40, None, None): "armv7l",  # EM_ARM: armv5tel … armv8l all run it as far as e_machine says
    (243, True, None): "riscv64",  # EM_RISCV
    (243, False, None): "riscv32",
    (21, None, False): "ppc64le",  # EM_PPC64
    (21, None, True): "ppc64",
    (20, None, None): "ppc",  # EM_PPC
    (22, True, None): "s390x",  # EM_S390
    (22, False, None): "s390",
    (8, True, None): "mips64",  # EM_MIPS (uname -m does not say the byte order)
    (8, False, None): "mips",
    (258, None, None): "loongarch64",  # EM_LOONGARCH
    (43, None, None): "sparc64",  # EM_SPARCV9
}

# Other spellings of the same machine in `uname -m` (and on BSD/macOS, `arm64`/`amd64`).
_UNAME_ALIASES = {
    "amd64": "x86_64",
    "i386": "i686",
    "i486": "i686",
    "i586": "i686",
    "x86": "i686",
    "arm64": "aarch64",
    "arm": "armv7l",
    "armv5tel": "armv7l",
    "armv5tejl": "armv7l",
    "armv6l": "armv7l",
    "armv7": "armv7l",
    "armv8l": "armv7l",
    "ppc64el": "ppc64le",
}


BLOCK = 1 << 20


def find_artifact(settings: Settings, component: Component, given: str | None) -> Path:
    """`--artifact`, else the component's `artifact` from the current directory, the submodule or
    the root repository (the first that exists)."""
    if given:
        return Path(given).expanduser().resolve()
    relative = Path(component.artifact or f"target/release/{component.name}")
    candidates = [Path.cwd() / relative]
    if settings.project_dir:
        candidates += [
            settings.project_dir / component.submodule / relative,
            settings.project_dir / relative,
        ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    return candidates[0]


# --- the fingerprint
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """An artifact's sha256 and the identity of the file it was read from (inode, size and
    mtime), so an upload can send it without hashing it again and still notice a rewrite."""

    sha256: str
    identity: tuple[int, int, int]

    @property
    def size(self) -> int:
        return self.identity[1]


def identity(stat_result: os.stat_result) -> tuple[int, int, int]:
    return stat_result.st_ino, stat_result.st_size, stat_result.st_mtime_ns


_STARTED: dict[tuple[str, tuple[int, int, int]], Future[Fingerprint]] = {}


def fingerprint(path: Path) -> Fingerprint:
    """The sha256 of `path`; OperationFailed when the file changed while it was read. Waits for a
    hashing `prefetch_fingerprint` started, when the file is still the one it reads."""
    try:
        key = (str(path), identity(os.stat(path)))
    except OSError as error:
        raise OperationFailed(f"cannot read the artifact {path}: {error}") from None
    started = _STARTED.pop(key, None)
    return started.result() if started is not None else _hash(path)


def prefetch_fingerprint(path: Path) -> None:
    """Start hashing `path` in the background: the CLI calls this before it loads the deploy
    machinery (ssh and crypto libraries), so the two overlap on a machine with a second core."""
    try:
        key = (str(path), identity(os.stat(path)))
    except OSError:
        return  # the deploy says what is wrong with the path
    if key in _STARTED:
        return
    started: Future[Fingerprint] = Future()

    def work() -> None:
        try:
            started.set_result(_hash(path))
        except BaseException as error:  # handed to whoever waits for it
            started.set_exception(error)

    _STARTED[key] = started
    threading.Thread(target=work, name="fingerprint", daemon=True).start()


def _hash(path: Path) -> Fingerprint:
    try:
        before = identity(os.stat(path))
        sha256 = file_sha256(path)
        after = identity(os.stat(path))
    except OSError as error:
        raise OperationFailed(f"cannot read the artifact {path}: {error}") from None
    if before != after:
        raise OperationFailed(
            f"the artifact {path} changed while it was hashed",
            hint="wait for the build that writes it to finish, then deploy again",
        )
    return Fingerprint(sha256, before)


# --- what it is
def uname_machine(uname_m: str) -> str:
    """`uname -m` output in the spelling `ArtifactInfo.machine` uses."""
    name = uname_m.strip().lower()
    return _UNAME_ALIASES.get(name, name)


@dataclass(frozen=True)
class ArtifactInfo:
    path: Path
    size: int
    machine: str  # as `uname -m` names it, e.g. x86_64, aarch64, armv7l, riscv64
    e_machine: int
    bits: int  # 32 or 64
    big_endian: bool
    pie: bool  # position-independent (ET_DYN); else ET_EXEC
    interpreter: str | None  # the dynamic loader it asks for; None when static

    def matches(self, uname_m: str) -> bool:
        """Whether a machine whose `uname -m` prints `uname_m` runs this executable."""
        return uname_machine(uname_m) == self.machine

    def require_machine(self, uname_m: str, target: str) -> None:
        """UsageError (exit 2) unless `target`, whose `uname -m` prints `uname_m`, runs this."""
        if not self.matches(uname_m):
            raise UsageError(
                f"artifact {self.path} is an {self.description}, but {target} is "
                f"{uname_m.strip()} (uname -m): it cannot run there",
                hint=f"build it for {uname_m.strip()} (e.g. cargo build --target "
                f"{uname_m.strip()}-unknown-linux-gnu), or check the component's target",
            )

    @property
    def description(self) -> str:
        kind = "PIE executable" if self.pie else "executable"
        linking = f"interpreter {self.interpreter}" if self.interpreter else "static"
        return f"ELF {self.bits}-bit {self.machine} {kind} ({linking})"


def check(path: Path) -> ArtifactInfo:
    """The artifact's ELF facts; UsageError (exit 2) when it is not a non-empty ELF executable."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UsageError(
            f"artifact {path} does not exist",
            hint="build it first, or give its path with --artifact (or components.NAME.artifact)",
        ) from None
    except OSError as error:
        raise UsageError(f"artifact {path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise UsageError(f"artifact {path} is {what}", hint="give the path of the built binary")
    if info.st_size == 0:
        raise UsageError(
            f"artifact {path} is empty (0 bytes)",
            hint="the build or the download that made it failed; build it again",
        )
    try:
        with open(path, "rb") as f:
            return _parse(path, info.st_size, f)
    except OSError as error:
        raise UsageError(f"artifact {path}: cannot read it: {error.strerror}") from None


def _parse(path: Path, size: int, f: BinaryIO) -> ArtifactInfo:
    def read(offset: int, count: int) -> bytes:
        if offset >= size:  # a damaged header's offsets may point anywhere
            return b""
        f.seek(offset)
        return f.read(count)

    head = read(0, 64)
    if not head.startswith(ELF_MAGIC):
        raise UsageError(
            f"artifact {path} is not an ELF executable: {_what_it_is(head)}",
            hint="deploy the compiled binary (e.g. target/release/NAME), not this file",
        )
    if len(head) < 52 or head[4] not in (1, 2) or head[5] not in (1, 2):
        raise UsageError(f"artifact {path} has a truncated or damaged ELF header")
    bits = 64 if head[4] == 2 else 32
    order = ">" if head[5] == 2 else "<"
    e_type, e_machine = struct.unpack_from(order + "HH", head, 16)
    if bits == 64 and len(head) < 64:
        raise UsageError(f"artifact {path} has a truncated or damaged ELF header")
    # e_phoff, then e_phentsize and e_phnum (after e_flags and e_ehsize)
    phoff_at, phoff_format, phsizes_at = (32, "Q", 54) if bits == 64 else (28, "I", 42)
    phoff = _unpack(order + phoff_format, head, phoff_at)
    phentsize, phnum = struct.unpack_from(order + "HH", head, phsizes_at)
    if e_type not in (ET_EXEC, ET_DYN):
        kind = {ET_REL: "an object file (.o)", ET_CORE: "a core dump"}.get(
            e_type, f"of ELF type {e_type}"
        )
        raise UsageError(f"artifact {path} is {kind}, not an executable")
    segments = _program_headers(read, bits, order, phoff, phentsize, phnum)
    interpreter = None
    dynamic: tuple[int, int] | None = None
    for p_type, offset, filesz in segments:
        if p_type == PT_INTERP:
            interpreter = read(offset, min(filesz, 4096)).split(b"\0")[0].decode(errors="replace")
        elif p_type == PT_DYNAMIC:
            dynamic = (offset, filesz)
    if e_type == ET_DYN and not interpreter and not _marked_pie(read, bits, order, dynamic):
        raise UsageError(
            f"artifact {path} is a shared library (.so), not an executable",
            hint="deploy the program that links it, not the library",
        )
    machine = _machine_name(e_machine, bits == 64, order == ">")
    return ArtifactInfo(
        path, size, machine, e_machine, bits, order == ">", e_type == ET_DYN, interpreter
    )


def _unpack(fmt: str, data: bytes, offset: int) -> int:
    return int(struct.unpack_from(fmt, data, offset)[0])


def _program_headers(
    read: Read, bits: int, order: str, phoff: int, phentsize: int, phnum: int
) -> list[tuple[int, int, int]]:
    """(p_type, p_offset, p_filesz) of each program header."""
    wanted = 56 if bits == 64 else 32
    if phnum == 0 or phentsize < wanted:
        return []
    table = read(phoff, min(phnum * phentsize, MAX_READ))
    headers = []
    for start in range(0, len(table) - wanted + 1, phentsize):
        if bits == 64:
            p_type, _, offset, _, _, filesz = struct.unpack_from(order + "IIQQQQ", table, start)
        else:
            p_type, offset, _, _, filesz = struct.unpack_from(order + "IIIII", table, start)
        headers.append((p_type, offset, filesz))
    return headers


def _marked_pie(read: Read, bits: int, order: str, dynamic: tuple[int, int] | None) -> bool:
    """Whether the dynamic section has DT_FLAGS_1 with DF_1_PIE (a static PIE)."""
    if dynamic is None:
        return False
    entry = "QQ" if bits == 64 else "II"
    width = struct.calcsize(order + entry)
    table = read(dynamic[0], min(dynamic[1], MAX_READ))
    for start in range(0, len(table) - width + 1, width):
        tag, value = struct.unpack_from(order + entry, table, start)
        if tag == DT_NULL:
            break
        if tag == DT_FLAGS_1:
            return bool(value & DF_1_PIE)
    return False


def _machine_name(e_machine: int, is_64: bool, big_endian: bool) -> str:
    for (number, bits64, big), name in _MACHINES.items():
        if number == e_machine and bits64 in (None, is_64) and big in (None, big_endian):
            return name
    return f"elf-machine-{e_machine}"


def _what_it_is(head: bytes) -> str:
    """A short guess at what a non-ELF file is, for the message."""
    text = head.lstrip()
    lowered = text[:15].lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<!--")):
        return "it is an HTML/XML page (a failed download or a proxy's error page?)"
    if text.startswith(b"#!"):
        line = text.split(b"\n")[0][:60].decode(errors="replace")
        return f"it is a script ({line})"
    if text.startswith((b"{", b"[")):
        return "it is JSON or other text"
    if head.startswith(b"\x1f\x8b") or head.startswith(b"\x28\xb5\x2f\xfd"):
        return "it is compressed (gzip or zstd); unpack it first"
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive; unpack it first"
    if head.startswith(b"MZ") or head.startswith((b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")):
        return "it is a Windows or macOS executable"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unknown binary data starting {head[:8].hex(' ')}"
    return "it is text"
