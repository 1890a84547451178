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


# --- forgejo ------------------------------------------------------------------------------------
# Every emulator made here checks, when the test ends, each request it received and each answer
# it sent against Forgejo's swagger (tests/forgejo_schema.py); a violation fails the test.
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from gbdeploy.testing.forgejo import ForgejoEmulator  # noqa: E402
from tests.forgejo_schema import ForgejoSchema, exchange_violations  # noqa: E402


@pytest.fixture(scope="session")
def forgejo_schema() -> ForgejoSchema:
    return ForgejoSchema()


@pytest.fixture
def forgejo_factory(forgejo_schema: ForgejoSchema) -> Iterator[Callable[..., ForgejoEmulator]]:
    """`forgejo_factory(version="11.0.0", appear_after=2)`: a started, schema-checked emulator."""
    made: list[ForgejoEmulator] = []

    def make(**options: Any) -> ForgejoEmulator:
        options.setdefault("token", "emulator-token-0123456789")
        emulator = ForgejoEmulator(**options).start()
        made.append(emulator)
        return emulator

    yield make
    problems: list[str] = []
    for emulator in made:
        emulator.stop()
        problems += exchange_violations(forgejo_schema, emulator.exchanges)
    if problems:
        pytest.fail("Forgejo API violations:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def forgejo(forgejo_factory: Callable[..., ForgejoEmulator]) -> ForgejoEmulator:
    return forgejo_factory()


# --- end forgejo --------------------------------------------------------------------------------
