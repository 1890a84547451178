"""The stand-in service: a small C program that answers its health URL with its commit.

`build_service` compiles it with the commit baked in (so the commit is in the binary's bytes, as
in botserver) and can pad it to a realistic size: an ELF runs with trailing bytes.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from enum import Enum
from importlib import resources
from pathlib import Path

from gbdeploy.errors import UsageError


class Fault(Enum):
    NONE = ""
    FAIL_AT_START = "GB_FAIL_AT_START"
    NEVER_HEALTHY = "GB_NEVER_HEALTHY"
    IGNORE_TERM = "GB_IGNORE_TERM"
    TERM_HANDLER = "GB_TERM_HANDLER"
    SLOW_START = "GB_SLOW_START"
    DIES_AFTER_A_SECOND = "GB_DIE_AFTER_MS=1000"
    FLAPPING = "GB_FLAPPING"


def service_user() -> str:
    """`gbuser` where it exists (.ci/setup creates it), else the user running this process."""
    try:
        return pwd.getpwnam("gbuser").pw_name
    except KeyError:
        return pwd.getpwuid(os.getuid()).pw_name


def compiler() -> str:
    found = shutil.which("cc") or shutil.which("gcc")
    if not found:
        raise UsageError(
            "no C compiler to build the stand-in service", hint="apt-get install -y gcc libc6-dev"
        )
    return found


def build_service(
    out: Path,
    commit: str,
    *,
    service: str = "botserver",
    fault: Fault = Fault.NONE,
    pad_to: int = 0,
    compressible_padding: bool = True,
) -> Path:
    """Compile the stand-in to `out`; with `pad_to`, append bytes until the file has that size.

    Compressible padding repeats a text pattern (as debug sections do); otherwise it is random.
    """
    source = resources.files("gbdeploy_sandbox").joinpath("standin/service.c")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        compiler(),
        "-O2",
        "-o",
        str(out),
        f'-DGB_COMMIT="{commit}"',
        f'-DGB_SERVICE="{service}"',
    ]
    if fault is not Fault.NONE:
        command.append(f"-D{fault.value}")
    with resources.as_file(source) as source_path:
        subprocess.run([*command, str(source_path)], check=True, capture_output=True)
    size = out.stat().st_size
    if pad_to > size:
        _pad(out, pad_to - size, compressible_padding)
    out.chmod(0o755)
    return out


def _pad(path: Path, count: int, compressible: bool) -> None:
    chunk = 1 << 20
    pattern = b"".join(
        f"debug-info line {n:08d} symbol_{n * 7919 % 100003:06d}\n".encode() for n in range(20000)
    )
    with open(path, "ab") as f:
        while count > 0:
            size = min(chunk, count)
            if compressible:
                f.write((pattern * (size // len(pattern) + 1))[:size])
            else:
                f.write(os.urandom(size))
            count -= size
