"""`gbdeploy maintain` on real directories whose files' times are set with os.utime."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from gbdeploy.config import DEFAULTS, Settings
from gbdeploy.errors import UsageError
from gbdeploy.maintenance import GIB, run_maintain
from gbdeploy.output import Reporter

NOW = time.time()
DAY = 86400


def put(path: Path, size: int, days_ago: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = NOW - days_ago * DAY
    os.utime(path, (stamp, stamp))
    return path


def settings(tmp_path: Path, **maintenance: object) -> Settings:
    caches = {"sccache_dir": str(tmp_path / "sccache"), "cargo_home": str(tmp_path / "cargo")}
    return Settings.from_mapping(
        {
            **DEFAULTS,
            "maintenance": {**DEFAULTS["maintenance"], **maintenance},
            "workflows": {**DEFAULTS["workflows"], **caches},  # where the builds put them
        }
    )


def maintain(tmp_path: Path, **options: object) -> str:
    out = io.StringIO()
    run_maintain(settings(tmp_path), Reporter(stream=out), now=NOW, **options)  # type: ignore[arg-type]
    return out.getvalue()


@pytest.fixture
def caches(tmp_path: Path) -> dict[str, Path]:
    sc = tmp_path / "sccache"
    cargo = tmp_path / "cargo"
    index = "index.crates.io-6f17d22bba15001f"
    files = {
        "sc_old": put(sc / "a" / "b" / "old", 1000, 30),
        "sc_mid": put(sc / "a" / "c" / "mid", 1000, 5),
        "sc_new": put(sc / "d" / "e" / "new", 1000, 1),
        "crate_old": put(cargo / "registry/cache" / index / "serde-1.0.0.crate", 500, 40),
        "crate_new": put(cargo / "registry/cache" / index / "serde-1.0.9.crate", 500, 2),
        "src_old": put(cargo / "registry/src" / index / "serde-1.0.0/src/lib.rs", 300, 40),
        "src_used": put(cargo / "registry/src" / index / "tokio-1.0.0/src/lib.rs", 300, 40),
        "db_old": put(cargo / "git/db/botlib-1234/objects/pack/p.pack", 700, 60),
        "co_old": put(cargo / "git/checkouts/botlib-1234/abcdef0/Cargo.toml", 100, 60),
    }
    # One file of tokio's unpacked source was read yesterday: the whole crate dir is in use.
    put(cargo / "registry/src" / index / "tokio-1.0.0/Cargo.toml", 10, 1)
    age_directories(tmp_path, 100)  # the files' own times decide
    return files


def age_directories(root: Path, days_ago: float) -> None:
    stamp = NOW - days_ago * DAY
    for path in root.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            os.utime(path, (stamp, stamp))


def test_age_removes_units_unused_for_max_age_days(tmp_path, caches):
    output = maintain(tmp_path, max_age_days=14, max_size_gb=10)

    assert not caches["sc_old"].exists()
    assert caches["sc_mid"].exists() and caches["sc_new"].exists()
    assert not caches["crate_old"].exists() and caches["crate_new"].exists()
    assert not caches["src_old"].parent.parent.exists()  # the whole serde-1.0.0 dir
    assert caches["src_used"].exists()  # tokio-1.0.0 was used yesterday
    assert not (tmp_path / "cargo/git/db/botlib-1234").exists()
    assert not (tmp_path / "cargo/git/checkouts/botlib-1234/abcdef0").exists()
    for root in ("sccache", "cargo/registry/cache", "cargo/registry/src", "cargo/git/db"):
        assert (tmp_path / root).is_dir()  # the cache roots stay
    assert "sccache: 3 files, 2.9 KiB before → 2 files, 2.0 KiB after" in output
    assert "1 by age, 0 by size" in output


def test_size_removes_the_least_recently_used_first(tmp_path, caches):
    output = maintain(tmp_path, max_age_days=365, max_size_gb=1500 / GIB)

    # sccache holds 3000 bytes: the oldest two go, the newest stays (1000 <= 1500).
    assert not caches["sc_old"].exists() and not caches["sc_mid"].exists()
    assert caches["sc_new"].exists()
    # cargo holds 2410 bytes. Least recently used first: git db (60 days, 700 B) and checkout
    # (60 days, 100 B), then serde's crate (40 days, 500 B): 1110 B left, under the cap, so
    # serde's unpacked source (also 40 days) and everything newer stay.
    assert not (tmp_path / "cargo/git/db/botlib-1234").exists()
    assert not caches["co_old"].exists()
    assert not caches["crate_old"].exists()
    assert caches["src_old"].exists()
    assert caches["crate_new"].exists() and caches["src_used"].exists()
    assert "sccache: 3 files, 2.9 KiB before → 1 files, 1000 B after" in output
    assert "cargo: 7 files, 2.4 KiB before → 4 files, 1.1 KiB after" in output
    assert "(freed 1.3 KiB: 0 by age, 3 by size)" in output


def test_a_crate_whose_sources_a_build_read_recently_is_kept(tmp_path):
    """A build reads a crate's unpacked sources without writing them: one file read yesterday
    (its atime) keeps the whole crate directory, though every file was written long ago."""
    crates = tmp_path / "cargo/registry/src/index.x"
    read = put(crates / "tokio-1.0.0/src/lib.rs", 300, 60)
    os.utime(read, (NOW - 1 * DAY, NOW - 60 * DAY))  # (atime, mtime)
    put(crates / "serde-1.0.0/src/lib.rs", 300, 60)
    age_directories(tmp_path, 60)

    maintain(tmp_path, max_age_days=14, max_size_gb=10)

    assert (crates / "tokio-1.0.0/src/lib.rs").exists()
    assert not (crates / "serde-1.0.0").exists()


def test_dry_run_lists_what_would_go_and_removes_nothing(tmp_path, caches):
    before = sorted(p for p in tmp_path.rglob("*"))
    output = maintain(tmp_path, dry_run=True, max_age_days=14, max_size_gb=10)

    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert "dry run: nothing is changed" in output
    assert f"remove {caches['sc_old']} (1000 B, file, last used" in output
    assert "git/db/botlib-1234 (700 B, 1 files, last used" in output
    assert "would free" in output


def test_symlinks_are_removed_as_links_never_followed(tmp_path, caches):
    outside = tmp_path / "precious"
    keep = put(outside / "data", 5000, 90)
    sc = tmp_path / "sccache"
    link = sc / "f" / "link"
    link.parent.mkdir()
    link.symlink_to(outside)
    age_directories(tmp_path / "sccache", 90)
    # (after: following a link to list its target updates the link's atime)
    os.utime(link, (NOW - 90 * DAY, NOW - 90 * DAY), follow_symlinks=False)
    index_dir = tmp_path / "cargo/registry/src/index.x"
    index_dir.mkdir(parents=True)
    (index_dir / "linked-1.0.0").symlink_to(outside)
    old = (NOW - 90 * DAY, NOW - 90 * DAY)
    os.utime(index_dir / "linked-1.0.0", old, follow_symlinks=False)
    # a linked cargo cache directory is not entered at all
    (tmp_path / "cargo/git/checkouts").rename(tmp_path / "checkouts-real")
    (tmp_path / "cargo/git/checkouts").symlink_to(outside)

    output = maintain(tmp_path, max_age_days=0, max_size_gb=0)

    assert keep.exists() and keep.read_bytes() == b"x" * 5000
    assert not link.is_symlink()  # the link itself went (it was old)
    assert not (index_dir / "linked-1.0.0").is_symlink()
    assert (tmp_path / "cargo/git/checkouts").is_symlink()
    assert "git/checkouts is a symlink, not followed, skipped" in output


def test_missing_caches_are_skipped_with_a_note(tmp_path):
    output = maintain(tmp_path, max_age_days=14, max_size_gb=10)
    assert f"sccache: {tmp_path / 'sccache'} does not exist, skipped" in output
    assert f"cargo: {tmp_path / 'cargo'} does not exist, skipped" in output
    assert "sccache: 0 files, 0 B before → 0 files, 0 B after" in output


def test_defaults_come_from_config(tmp_path, caches):
    out = io.StringIO()
    config = settings(tmp_path, max_age_days=3, max_size_gb=10.0)
    run_maintain(config, Reporter(stream=out), now=NOW)
    assert not caches["sc_mid"].exists()  # 5 days > 3
    assert caches["sc_new"].exists()


@pytest.mark.parametrize(
    "option",
    [
        {"max_age_days": -1},
        {"max_size_gb": "-0.5"},
        {"max_age_days": "soon"},
        {"max_size_gb": "inf"},
        {"max_age_days": "1e400"},
        {"max_size_gb": "nan"},
    ],
)
def test_negative_limits_are_refused(tmp_path, option):
    with pytest.raises(UsageError):
        maintain(tmp_path, **option)


def test_command_line_limits_arrive_as_text(tmp_path, caches):
    maintain(tmp_path, max_age_days="3", max_size_gb="10")  # as Invoke passes them
    assert not caches["sc_mid"].exists() and caches["sc_new"].exists()
