"""ZFS snapshots, du, systemd units' environment and ExecStart."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .base import ParseError


# --- ZFS, du, systemd ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ZfsSnapshot:
    name: str
    created: int  # seconds since the epoch
    used: int  # bytes


def parse_zfs_snapshots(text: str) -> tuple[ZfsSnapshot, ...]:
    """`zfs list -H -p -t snapshot -o name,creation,used`: tab-separated, exact numbers."""
    snapshots = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
            raise ParseError(
                f"expected NAME<TAB>CREATION<TAB>USED in exact numbers: {line!r}", number
            )
        snapshots.append(ZfsSnapshot(fields[0], int(fields[1]), int(fields[2])))
    return tuple(snapshots)


def stale_snapshots(
    snapshots: tuple[ZfsSnapshot, ...], *, now: float, retention_days: float
) -> tuple[ZfsSnapshot, ...]:
    """Snapshots older than the retention, largest first."""
    cutoff = now - retention_days * 86400
    old = [s for s in snapshots if s.created < cutoff]
    return tuple(sorted(old, key=lambda s: s.used, reverse=True))


def parse_du_bytes(text: str) -> int:
    """`du -sb PATH`: `BYTES<TAB>PATH`."""
    first = text.split(None, 1)[0] if text.strip() else ""
    if not first.isdigit():
        raise ParseError(f"not `du -sb` output: {text.strip()[:80]!r}")
    return int(first)


def parse_environment(value: str) -> dict[str, str]:
    """`systemctl show -p Environment --value`: `A=1 "B=two words"` (systemd quotes values with
    spaces)."""
    try:
        words = shlex.split(value)
    except ValueError as error:
        raise ParseError(f"cannot split Environment {value!r}: {error}") from None
    return dict(w.split("=", 1) for w in words if "=" in w)


def parse_exec_path(value: str) -> str | None:
    """The program of `systemctl show -p ExecStart --value`: `{ path=/x ; argv[]=/x -a ; … }`, or
    a plain command line."""
    value = value.strip()
    if not value:
        return None
    if value.startswith("{"):
        for part in value.strip("{} ").split(";"):
            key, _, path = part.strip().partition("=")
            if key == "path":
                return path.strip()
        return None
    return value.split()[0].lstrip("@-:+!")


@dataclass(frozen=True)
class UnitExec:
    unit: str
    active: str
    enabled: str  # `systemctl is-enabled`: enabled, disabled, static, …
    exec_path: str | None


def parse_unit_table(text: str) -> tuple[UnitExec, ...]:
    """Lines of `UNIT<TAB>ACTIVE-STATE<TAB>ENABLED-STATE<TAB>EXECSTART` (the systemd probe's)."""
    units = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t", 3)
        if len(fields) < 3:
            raise ParseError(
                f"expected UNIT<TAB>ACTIVE<TAB>ENABLED<TAB>EXECSTART: {line!r}", number
            )
        exec_path = parse_exec_path(fields[3]) if len(fields) > 3 else None
        units.append(UnitExec(fields[0], fields[1], fields[2], exec_path))
    return tuple(units)
