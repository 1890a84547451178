"""`gbdeploy maintain`: trim the CI runner's sccache and cargo caches, which grow with every build
until the runner's disk is full; a daily run (cron or a timer) keeps them bounded.

Runs on the runner's own filesystem. Each cache is a set of removable units:

- sccache (`workflows.sccache_dir`, where the builds put it): every file, at any depth;
- cargo (`workflows.cargo_home`): the downloaded crates (`registry/cache/<index>/<crate>.crate`),
  their unpacked sources (`registry/src/<index>/<crate-version>/`), git dependencies' checkouts
  (`git/checkouts/<repo>/<rev>/`) and their bare clones (`git/db/<repo>/`). Cargo fetches any of
  them again when a build needs it.

A unit's last use is the newest atime or mtime of anything in it. First every unit unused for
`max_age_days` goes; then, while a cache is still over `max_size_gb` (GiB), the least recently
used units go. The result is a plan (`CachePlan`) that `--dry-run` prints and the real run
executes, the same code either way. Symlinks are never followed (a link is removed as a link),
the cache roots themselves are never removed, and a missing cache directory is skipped with a note.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .config import Settings
from .errors import OperationFailed, UsageError
from .output import Reporter, human_bytes

GIB = 1024**3
DAY = 86400.0
MAX_LIMIT = 1_000_000  # days or GiB: far above any cache, far below an overflow
# (directory under CARGO_HOME, depth of its units below it)
CARGO_CACHES = (("registry/cache", 2), ("registry/src", 2), ("git/checkouts", 2), ("git/db", 1))


@dataclass(frozen=True)
class Unit:
    """Something removable as a whole: a file, a symlink, or a directory tree."""

    path: Path
    bytes: int
    files: int
    last_used: float
    is_dir: bool


@dataclass(frozen=True)
class Removal:
    unit: Unit
    reason: Literal["age", "size"]


@dataclass
class CachePlan:
    name: str
    roots: list[Path]
    units: list[Unit] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_before(self) -> int:
        return sum(u.bytes for u in self.units)

    @property
    def files_before(self) -> int:
        return sum(u.files for u in self.units)

    @property
    def bytes_freed(self) -> int:
        return sum(r.unit.bytes for r in self.removals)

    @property
    def files_freed(self) -> int:
        return sum(r.unit.files for r in self.removals)


def _last_used(info: os.stat_result) -> float:
    return max(info.st_atime, info.st_mtime)


def _measure(path: Path, info: os.stat_result) -> Unit:
    """Size, file count and last use of `path` (lstat'ed as `info`), never following links."""
    if not stat.S_ISDIR(info.st_mode):
        size = info.st_size if stat.S_ISREG(info.st_mode) else 0
        return Unit(path, size, 1, _last_used(info), is_dir=False)
    total, files, newest = 0, 0, info.st_mtime
    for directory, dirnames, filenames in os.walk(path, followlinks=False):
        # os.walk lists links to directories in `dirnames` without entering them: count them as
        # entries, like files.
        for name in (*dirnames, *filenames):
            entry = Path(directory, name).lstat()
            if stat.S_ISDIR(entry.st_mode):
                newest = max(newest, entry.st_mtime)
                continue
            files += 1
            total += entry.st_size if stat.S_ISREG(entry.st_mode) else 0
            newest = max(newest, _last_used(entry))
    return Unit(path, total, files, newest, is_dir=True)


def _units(root: Path, depth: int | None) -> Iterator[Unit]:
    """The units under `root`: entries at exactly `depth` (files above it are units too), or
    with `depth` None every non-directory at any depth."""

    def walk(directory: Path, level: int) -> Iterator[Unit]:
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                path = Path(entry.path)
                info = entry.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(info.st_mode)
                if is_dir and (depth is None or level < depth):
                    yield from walk(path, level + 1)
                else:
                    yield _measure(path, info)

    yield from walk(root, 1)


def _cache_roots(settings: Settings) -> list[tuple[str, Path, list[tuple[str, int | None]]]]:
    caches = settings.workflows
    return [
        ("sccache", Path(caches.sccache_dir), [(".", None)]),
        ("cargo", Path(caches.cargo_home), list(CARGO_CACHES)),
    ]


def plan_cache(
    name: str,
    base: Path,
    parts: list[tuple[str, int | None]],
    *,
    now: float,
    max_age_days: float,
    max_bytes: int,
) -> CachePlan:
    """What to remove from one cache: by age first, then the oldest until under `max_bytes`."""
    plan = CachePlan(name, [])
    if not base.is_dir():
        plan.notes.append(f"{name}: {base} does not exist, skipped")
        return plan
    # The configured directory may itself be a link (a cache moved to a bigger disk): the user
    # named it, so it is followed. Nothing below it is.
    base = base.resolve()
    for relative, depth in parts:
        root = base if relative == "." else base / relative
        if root.is_symlink():
            plan.notes.append(f"{name}: {root} is a symlink, not followed, skipped")
            continue
        if not root.is_dir():
            plan.notes.append(f"{name}: {root} does not exist, skipped")
            continue
        plan.roots.append(root)
        plan.units.extend(_units(root, depth))
    cutoff = now - max_age_days * DAY
    kept: list[Unit] = []
    for unit in plan.units:
        if unit.last_used < cutoff:
            plan.removals.append(Removal(unit, "age"))
        else:
            kept.append(unit)
    remaining = sum(u.bytes for u in kept)
    for unit in sorted(kept, key=lambda u: (u.last_used, str(u.path))):
        if remaining <= max_bytes:
            break
        plan.removals.append(Removal(unit, "size"))
        remaining -= unit.bytes
    for removal in plan.removals:  # the invariant the deletion relies on
        path = removal.unit.path
        assert any(root in path.parents for root in plan.roots), path
    return plan


def plan_maintenance(
    settings: Settings, *, now: float, max_age_days: float, max_size_gb: float
) -> list[CachePlan]:
    max_bytes = int(max_size_gb * GIB)
    return [
        plan_cache(name, base, parts, now=now, max_age_days=max_age_days, max_bytes=max_bytes)
        for name, base, parts in _cache_roots(settings)
    ]


def describe(removal: Removal) -> str:
    unit = removal.unit
    used = time.strftime("%Y-%m-%d", time.localtime(unit.last_used))
    kind = f"{unit.files} files" if unit.is_dir else "file"
    size = human_bytes(unit.bytes)
    return f"remove {unit.path} ({size}, {kind}, last used {used}, {removal.reason})"


def apply_plan(plan: CachePlan) -> list[str]:
    """Remove what the plan says; returns the failures (path: reason), removing what it can."""
    failures: list[str] = []
    for removal in plan.removals:
        path = removal.unit.path
        try:
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(path)  # removes links inside as links, never their targets
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # gone already (cargo or sccache removed it): the goal is met
        except OSError as error:
            failures.append(f"{path}: {error.strerror or error}")
    return failures


def summary(plan: CachePlan, *, dry_run: bool) -> str:
    after_bytes = plan.bytes_before - plan.bytes_freed
    after_files = plan.files_before - plan.files_freed
    by_age = sum(1 for r in plan.removals if r.reason == "age")
    by_size = len(plan.removals) - by_age
    verb = "would free" if dry_run else "freed"
    return (
        f"{plan.name}: {plan.files_before} files, {human_bytes(plan.bytes_before)} before"
        f" → {after_files} files, {human_bytes(after_bytes)} after"
        f" ({verb} {human_bytes(plan.bytes_freed)}: {by_age} by age, {by_size} by size)"
    )


def _limit(given: float | str | None, default: float, option: str) -> float:
    """A limit from the command line (Invoke passes an option without a typed default as text)
    or the config default; a number of 0 or more."""
    if given is None:
        return default
    try:
        value = float(given)
    except ValueError:
        raise UsageError(f"{option} must be a number, got {given!r}") from None
    if not 0 <= value <= MAX_LIMIT:  # also refuses NaN and infinity
        raise UsageError(f"{option} must be a number from 0 to {MAX_LIMIT}, got {given}")
    return value


def run_maintain(
    settings: Settings,
    reporter: Reporter,
    *,
    dry_run: bool = False,
    max_age_days: float | str | None = None,
    max_size_gb: float | str | None = None,
    now: float | None = None,
) -> list[CachePlan]:
    """Trim the runner's caches (or, with `dry_run`, print what would go). Returns the plans."""
    age = _limit(max_age_days, settings.maintenance.max_age_days, "--max-age-days")
    size = _limit(max_size_gb, settings.maintenance.max_size_gb, "--max-size-gb")
    plans = plan_maintenance(
        settings, now=time.time() if now is None else now, max_age_days=age, max_size_gb=size
    )
    failures: list[str] = []
    for plan in plans:
        for note in plan.notes:
            reporter.say(note)
        lines = [describe(r) for r in plan.removals]
        if dry_run:
            reporter.plan(f"{plan.name}: {len(lines)} removals", lines)
        else:
            for line in lines:
                reporter.say(line)
            failures.extend(apply_plan(plan))
        reporter.say(summary(plan, dry_run=dry_run))
    if failures:
        shown = "\n  ".join(failures[:10])
        more = f"\n  … and {len(failures) - 10} more" if len(failures) > 10 else ""
        raise OperationFailed(
            f"could not remove {len(failures)} cache entries:\n  {shown}{more}",
            hint="run `gbdeploy maintain` as the user that owns the caches (the runner's user)",
        )
    return plans
