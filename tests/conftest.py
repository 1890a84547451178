"""Shared fixtures. Each area keeps its fixtures in its own delimited block."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gbdeploy.testing.sshd import LoopbackSshd
from gbdeploy.testing.standins import StandinWorld


# --- ssh target ---------------------------------------------------------------------------------
def _service_user() -> str:
    """`gbuser` where it exists (.ci/setup creates it), else the user running the tests."""
    try:
        return pwd.getpwnam("gbuser").pw_name
    except KeyError:
        return pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture(scope="session")
def service_user() -> str:
    return _service_user()


def _world_directory(prefix: str) -> Path:
    # Not pytest's tmp_path: that is 0700, and the service user must traverse into it.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def standins() -> Iterator[StandinWorld]:
    directory = _world_directory("gbdeploy-standins-")
    yield StandinWorld(directory).install()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd(standins: StandinWorld) -> Iterator[LoopbackSshd]:
    """A real OpenSSH server on 127.0.0.1 (alias `pragmatismo-system`), stand-ins on its PATH."""
    directory = _world_directory("gbdeploy-sshd-")
    with LoopbackSshd(directory, extra_path=[standins.bin]) as server:
        yield server
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def remote_root() -> Iterator[Path]:
    """A fresh directory standing for the target's `/` (binaries, logs, locks live under it)."""
    directory = _world_directory("gbdeploy-target-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


# --- end ssh target -----------------------------------------------------------------------------
