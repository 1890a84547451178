"""Shared fixtures. Each area keeps its fixtures in its own delimited block."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gbdeploy_sandbox import service as testing_service
from gbdeploy_sandbox.forgejo import ForgejoEmulator
from gbdeploy_sandbox.gitworld import GitWorld
from gbdeploy_sandbox.procs import kill_pids, pids_under
from gbdeploy_sandbox.production import ProductionWorld
from gbdeploy_sandbox.sshd import LoopbackSshd, free_port
from gbdeploy_sandbox.standins import StandinWorld
from tests.deploy_world import Artifacts, World
from tests.forgejo_schema import ForgejoSchema, exchange_violations

# --- loopback only -------------------------------------------------------------------------------
# Tests talk to 127.0.0.1 and nothing else: a lookup or connection to any other host fails the
# test at once instead of reaching it (a default like forge.url would otherwise be contacted).
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_local(host: object) -> bool:
    if host in (None, "", b""):
        return True
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def loopback_only() -> Iterator[None]:
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            raise socket.gaierror(f"tests may only reach 127.0.0.1, not {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):  # type: ignore[index]
            raise ConnectionRefusedError(f"tests may only reach 127.0.0.1, not {address!r}")

    def connect(self, address):
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(self, address)
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    yield
    socket.getaddrinfo = real_getaddrinfo
    socket.socket.connect = real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = real_connect_ex  # type: ignore[method-assign]


# --- no silent skips in CI ----------------------------------------------------------------------
# A skipped test guards nothing. Locally a missing part (no tmpfs, no shared/ beside the clone) may
# skip with its reason; in CI (CI set, as the CI runner sets it) any skip fails the run, so a guard
# that lost its setup is seen rather than counted as passed.
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SKIPPED and os.environ.get("CI") and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SKIPPED and os.environ.get("CI"):
        terminalreporter.section("skipped in CI (each one fails the run)")
        for line in _SKIPPED:
            terminalreporter.line(line)


# --- ssh target ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def service_user() -> str:
    return testing_service.service_user()


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


# --- deploy world ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """Stand-in service binaries, built once per (commit, fault, size)."""
    return Artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture
def world(sshd: LoopbackSshd, remote_root: Path, service_user: str) -> Iterator[World]:
    """A target directory under remote_root, its own port; every process started from it is
    stopped by pid afterwards."""
    (remote_root / "opt/gbo/bin").mkdir(parents=True)
    (remote_root / "opt/gbo/logs").mkdir(parents=True)
    yield World(sshd, remote_root, service_user, free_port())
    kill_pids(pids_under(remote_root))


# --- end deploy world -----------------------------------------------------------------------------


# --- git world ---------------------------------------------------------------------------------
TEST_TOKEN = "tok-3f9c2e7a1b5d"  # distinctive, so a leak is unmistakable in captured output

WORLD_CONFIG = """\
forge:
  url: http://127.0.0.1:9
git:
  message: "Update submodule {component} to {short_sha} ({sha})"
"""


@pytest.fixture
def gbdeploy_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No gbdeploy or git configuration from the machine: an empty HOME, no system or global git
    config, no GBDEPLOY_*/FORGEJO_* variables. The empty HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.delenv("INVOKE_RUNTIME_CONFIG", raising=False)
    for name in list(os.environ):
        if name.startswith(("GBDEPLOY_", "FORGEJO_")):
            monkeypatch.delenv(name)
    return home


@pytest.fixture(scope="session")
def git_world_template(tmp_path_factory: pytest.TempPathFactory) -> GitWorld:
    """The world `git_world` copies: built once (some thirty git commands), never changed."""
    world = GitWorld.build(tmp_path_factory.mktemp("git-world-template") / "world")
    world.write_config(WORLD_CONFIG)
    return world


def copy_git_world(template: GitWorld, base: Path) -> GitWorld:
    """A copy of `template` at `base`: the same repositories and commits, with every absolute path
    into the template (remote urls in the clones' `config`, `FETCH_HEAD`, reflogs) moved along."""
    shutil.copytree(template.base, base, symlinks=True)
    old, new = str(template.base).encode(), str(base).encode()
    for path in base.rglob("*"):
        if path.is_file() and "objects" not in path.parts:
            data = path.read_bytes()
            if old in data:
                path.write_bytes(data.replace(old, new))
    return GitWorld(base, template.submodule_name, template.branch)


@pytest.fixture
def git_world(
    tmp_path: Path, gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch, git_world_template
) -> GitWorld:
    """A fresh gb-like world (see gbdeploy_sandbox.gitworld) with a committed gbdeploy.yaml, the
    current directory at its root clone, and GBDEPLOY_FORGE_TOKEN set to TEST_TOKEN."""
    world = copy_git_world(git_world_template, tmp_path / "world")
    monkeypatch.chdir(world.root)
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", TEST_TOKEN)
    return world


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@pytest.fixture
def run_gbdeploy(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run the real `gbdeploy` program in-process: `run_gbdeploy("release", "botserver")`."""
    from gbdeploy.program import program

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            program.run(["gbdeploy", *args])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


# --- end git world ---


# --- forgejo ------------------------------------------------------------------------------------
# Every emulator made here checks, when the test ends, each request it received and each answer
# it sent against Forgejo's swagger (tests/forgejo_schema.py); a violation fails the test.


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


# --- the emulated runner's persistent home ------------------------------------------------------
INSTALL_STEP = "Install gbdeploy (pinned)"


@pytest.fixture(scope="session")
def share_runner_venvs() -> Iterator[Callable[[Path], None]]:
    """`share_runner_venvs(sandbox.runner_home)`: the sandbox's runner finds gbdeploy installed
    in its venv cache (`$HOME/.cache/gbdeploy`), as a host-mode runner that ran a job before does
    (a real runner keeps its HOME; the job still checks the lock's key and runs what it finds).
    The cache is filled once a session by the rendered install step itself: a fresh install,
    checked here."""
    from gbdeploy.config import DEFAULTS, Settings
    from gbdeploy.install_lock import install_files
    from gbdeploy.workflows import render_workflow
    from gbdeploy_sandbox.runner import DAEMON_PATH

    home = _world_directory("gbdeploy-runner-home-")
    workspace = home / "workspace"
    for relative, data in install_files(with_wheel=True).items():
        (workspace / relative).parent.mkdir(parents=True, exist_ok=True)
        (workspace / relative).write_bytes(data)
    workflow = yaml.safe_load(render_workflow(Settings.from_mapping(DEFAULTS), "botserver"))
    [step] = [s for s in workflow["jobs"]["deploy"]["steps"] if s.get("name") == INSTALL_STEP]
    installed = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=workspace,
        env={**step["env"], "HOME": str(home), "PATH": DAEMON_PATH, "RUNNER_TEMP": str(home)},
        capture_output=True,
        text=True,
        check=False,
    )
    venvs = home / ".cache" / "gbdeploy"
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert list(venvs.glob("venv-*/.installed")), installed.stdout + installed.stderr

    def share(runner_home: Path) -> None:
        (runner_home / ".cache").mkdir(parents=True, exist_ok=True)
        (runner_home / ".cache" / "gbdeploy").symlink_to(venvs, target_is_directory=True)

    yield share
    shutil.rmtree(home, ignore_errors=True)


# --- end the emulated runner's persistent home --------------------------------------------------


# --- doctor -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def doctor_host() -> Iterator[tuple[LoopbackSshd, StandinWorld]]:
    """An LXD host of doctor's own (alias `pragmatismo-host`): its `lxc list` must show only the
    containers of the production under test, and its stand-in `iptables` must be on no other
    PATH."""
    standins_directory = _world_directory("gbdeploy-doctor-standins-")
    world = StandinWorld(standins_directory).install()
    sshd_directory = _world_directory("gbdeploy-doctor-sshd-")
    with LoopbackSshd(sshd_directory, alias="pragmatismo-host", extra_path=[world.bin]) as server:
        yield server, world
    shutil.rmtree(sshd_directory, ignore_errors=True)
    shutil.rmtree(standins_directory, ignore_errors=True)


@pytest.fixture
def production(doctor_host, remote_root: Path, service_user: str) -> Iterator[ProductionWorld]:
    """The production of the operations guide under `remote_root`, empty until `make_good()` or
    `make_broken()`."""
    server, standins = doctor_host
    world = ProductionWorld(
        standins, remote_root, service_user, ssh_alias=server.alias, ssh_config=server.ssh_config
    ).install()
    yield world
    world.close()


# --- end doctor ---------------------------------------------------------------------------------


# --- tiers --------------------------------------------------------------------------------------
# `-m "not slow"` is the fast tier: pure code and LocalRemote, no sshd, no git world, no emulator,
# no compiled stand-in. A test is marked slow by the fixtures it uses, so a new end-to-end test is
# marked without anyone remembering to; a test that starts its real part itself (Caddy, a
# compiler, a linter, a subprocess of gbdeploy) carries the mark itself.
SLOW_FIXTURES = {
    "sshd",  # also behind world, remote, session
    "doctor_host",  # also behind production
    "barrier_sshd",
    "incus_host",
    "host_of_a_non_root_user",
    "git_world",
    "forgejo_factory",  # also behind forgejo
    "artifacts",  # compiles the stand-in service
    "checkout",  # test_runner's git repos, built by the emulated runner's real jobs
    "root_checkout",  # the same, as test_workflows imports it
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# --- end tiers ----------------------------------------------------------------------------------
