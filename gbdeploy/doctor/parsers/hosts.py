"""DNS answers, files' guards, process owners, unit files' commands."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .base import ParseError


# --- DNS, files, processes -----------------------------------------------------------------------
def site_domains(sites: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    """The DNS names of Caddy site addresses (`https://a.example.com:443/x` → a.example.com);
    IP addresses, `localhost`, wildcards, placeholders and bare ports are left out."""
    names: list[str] = []
    for address in (a for site in sites for a in site):
        host = address.split("://", 1)[-1].split("/", 1)[0]
        if host.startswith("["):
            continue  # an IPv6 address
        host = host.rsplit(":", 1)[0] if ":" in host else host
        host = host.lower().rstrip(".")
        if (
            not host
            or host == "localhost"
            or "*" in host
            or "{" in host
            or re.fullmatch(r"[\d.]+", host)
        ):
            continue
        if host not in names:
            names.append(host)
    return tuple(names)


RESOLVE_MARKER = "### "
RESOLVE_EXIT = "## exit "


def parse_resolutions(text: str) -> dict[str, int]:
    """The resolve probe: `### NAME`, getent's lines, `## exit CODE` per name → {NAME: CODE}
    (0 found, 2 no record, anything else a failed lookup)."""
    codes: dict[str, int] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith(RESOLVE_EXIT):
            code = line[len(RESOLVE_EXIT) :].strip()
            if current is None or not code.isdigit():
                raise ParseError(f"unexpected {line!r} in the resolve probe's output")
            codes[current] = int(code)
            current = None
        elif line.startswith(RESOLVE_MARKER):
            current = line[len(RESOLVE_MARKER) :].strip()
    return codes


@dataclass(frozen=True)
class FileGuard:
    mode: int
    owner: str
    group: str
    git_work_trees: tuple[str, ...]  # directories at or above the file holding `.git`

    @property
    def root_only(self) -> bool:
        return self.owner == "root" and self.mode & 0o077 == 0


def parse_file_guard(text: str) -> FileGuard | None:
    """The file probe: `MODE OWNER GROUP` (`stat -c '%a %U %G'`) then `git DIR` lines; None when
    it printed `missing`."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines[:1] == ["missing"]:
        return None
    if not lines or len(lines[0].split()) != 3:
        raise ParseError(f"expected `MODE OWNER GROUP` first, got {text.strip()[:80]!r}")
    mode, owner, group = lines[0].split()
    try:
        mode_bits = int(mode, 8)
    except ValueError:
        raise ParseError(f"not an octal mode: {mode!r}") from None
    trees = tuple(line[4:] for line in lines[1:] if line.startswith("git "))
    return FileGuard(mode_bits, owner, group, trees)


def parse_process_owners(text: str) -> tuple[tuple[int, str], ...]:
    """`PID USER` lines (the process probe's) → ((pid, user), …)."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if len(words) != 2 or not words[0].isdigit():
            raise ParseError(f"expected `PID USER`: {line!r}")
        found.append((int(words[0]), words[1]))
    return tuple(found)


@dataclass(frozen=True)
class UnitFileCommand:
    unit: str
    state: str  # `systemctl list-unit-files`' STATE: enabled, disabled, static, masked, …
    command: str  # the argv of each ExecStart, ` ; ` between them


def parse_unit_file_commands(text: str) -> tuple[UnitFileCommand, ...]:
    """`UNIT<TAB>STATE<TAB>EXECSTART` lines (the service-files probe's): the `argv[]=` of each
    ExecStart `{ path=… ; argv[]=… ; … }`, or the value as it is."""
    units = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise ParseError(f"expected UNIT<TAB>STATE<TAB>EXECSTART: {line!r}")
        unit, state, value = fields
        argv = re.findall(r"argv\[\]=([^;]+?)\s*;", value)
        units.append(UnitFileCommand(unit, state, " ; ".join(argv) if argv else value.strip()))
    return tuple(units)
