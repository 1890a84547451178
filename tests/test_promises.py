"""The promises an audit's breaks slipped past, each seen where a user sees it: the service's
state, the target's files, the remotes' refs, the exit code.

The old service here can be told what to do when it gets SIGTERM (`GB_ON_TERM`, see the stand-in
service): take its time to exit, or hold the stop until the test says go and then damage what
the rest of the service script needs — so a failure happens *inside* that script, after the stop,
at the step chosen, with or without the deploy that sent it still alive.
"""

from __future__ import annotations

import io
import json
import os
import pty
import pwd
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gbdeploy import deploy
from gbdeploy.artifact import file_sha256
from gbdeploy.cli import CI_VARIABLES
from gbdeploy.config import DEFAULTS, Settings
from gbdeploy.config_layers import load_settings
from gbdeploy.errors import (
    CIRunFailed,
    ConfigError,
    DeployFailed,
    ForgeUnavailable,
    LockHeld,
    UsageError,
    VerificationFailed,
)
from gbdeploy.forge import ForgeClient, wait_for_run
from gbdeploy.maintenance import run_maintain
from gbdeploy.output import Reporter
from gbdeploy.verify import run_verify
from gbdeploy.workflows import render_workflow
from gbdeploy_sandbox.clock import FakeClock
from gbdeploy_sandbox.forgejo import Script
from gbdeploy_sandbox.gitworld import GitWorld, git
from gbdeploy_sandbox.procs import kill_pids, pids_under, wait_for
from gbdeploy_sandbox.runner import run_job
from gbdeploy_sandbox.service import Fault
from gbdeploy_sandbox.sshd import LoopbackSshd, free_port
from gbdeploy_sandbox.standins import StandinWorld
from tests.deploy_world import (
    NEW,
    OLD,
    Artifacts,
    World,
    cli_env,
    command_line,
    deployed,
    snapshot,
    stalled_mid_upload,
)
from tests.test_doctor import doctor, rows
from tests.test_runner import checkout as runner_checkout  # noqa: F401  (a fixture)
from tests.test_runner import context as runner_context
from tests.test_runner import settings as runner_settings

HOLD_SECONDS = 60  # a bound on the hook's wait for the test's word, never reached when all is well


# --- the old service's SIGTERM hook ---------------------------------------------------------------
class StopHook:
    """What the old service does on SIGTERM: says so, optionally waits for `go()`, then runs
    `then` (as the service user, in the binary's directory)."""

    def __init__(self, world: World) -> None:
        self.directory = world.root / "hook"
        self.directory.mkdir(mode=0o777, exist_ok=True)
        self.directory.chmod(0o777)  # the service user writes its marks here
        world.binary.parent.chmod(0o777)  # … and may damage what lies beside the binary

    def command(self, then: str = ":", *, hold: bool = False) -> str:
        here = shlex.quote(str(self.directory))
        wait = (
            f"i=0; while [ ! -e {here}/go ] && [ $i -lt {HOLD_SECONDS * 20} ]; do sleep 0.05;"
            " i=$((i + 1)); done; "
            if hold
            else ""
        )
        return f": > {here}/term-received; {wait}{then}"

    def termed(self) -> bool:
        return wait_for((self.directory / "term-received").exists, deadline_seconds=60)

    def go(self) -> None:
        (self.directory / "go").touch()


def running_with_hook(world: World, artifacts: Artifacts, monkeypatch, hook: str) -> str:
    """OLD installed and started by hand with `hook` as its GB_ON_TERM; its sha256."""
    monkeypatch.setenv("GB_ON_TERM", hook)
    try:
        return deployed(world, artifacts)
    finally:
        monkeypatch.delenv("GB_ON_TERM")


def cli(world: World, directory: Path, **config_changes) -> list[str]:
    """`python -m gbdeploy` with a gbdeploy.yaml for `world` (its component changed as given)."""
    program = command_line(world, directory)
    path = directory / "gbdeploy.yaml"
    config = json.loads(path.read_text())
    config["components"]["botserver"].update(config_changes)
    path.write_text(json.dumps(config))
    return program


def spawn(program: list[str], directory: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*program, *args],
        cwd=directory,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def serves(world: World, commit: str) -> bool:
    return (world.health() or {}).get("commit") == commit


# Each sabotage breaks one step of the service script that follows the stop. As the service user
# in the binary's directory: the upload vanishes (swap), the upload is a dangling link (chown),
# the remembered sha256 cannot be written (remember sha256).
SABOTAGE = {
    "swap": "rm -f ./botserver.new",
    "chown": "rm -f ./botserver.new && ln -s /nonexistent/botserver ./botserver.new",
    "remember sha256": "mkdir ./botserver.sha256.tmp",
}


def assert_old_service_back(world: World, old_sha: str) -> None:
    assert serves(world, OLD)
    assert file_sha256(world.binary) == old_sha
    assert len(world.running()) == 1


# --- the fused service script undoes itself -------------------------------------------------------
@pytest.mark.parametrize("step", list(SABOTAGE))
def test_a_failure_inside_the_service_script_restarts_the_old_binary(
    world, artifacts, monkeypatch, step
):
    hook = StopHook(world)
    old_sha = running_with_hook(world, artifacts, monkeypatch, hook.command(SABOTAGE[step]))

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW), component={"stop_timeout": 30.0})

    assert raised.value.exit_code == 1
    assert "rolled back" in str(raised.value)
    assert f"failed {step}" in str(raised.value)  # the script saw it, not only the health check
    assert (hook.directory / "term-received").exists()  # the failure came after the stop
    assert_old_service_back(world, old_sha)
    assert not Path(f"{world.binary}.lock").exists()


@pytest.mark.parametrize("step", list(SABOTAGE))
def test_the_service_script_undoes_itself_when_its_deploy_was_killed(
    world, artifacts, monkeypatch, tmp_path, step
):
    hook = StopHook(world)
    old_sha = running_with_hook(
        world, artifacts, monkeypatch, hook.command(SABOTAGE[step], hold=True)
    )
    program = cli(world, tmp_path, stop_timeout=HOLD_SECONDS + 30)
    process = spawn(program, tmp_path, "deploy", "botserver", "--artifact", str(artifacts(NEW)))
    try:
        assert hook.termed(), process.communicate(timeout=60)
        process.kill()  # nothing of gbdeploy is left to undo anything
        process.communicate(timeout=60)
    finally:
        process.kill()
    hook.go()

    # Only the script on the target can put the old binary back now.
    assert wait_for(lambda: serves(world, OLD), deadline_seconds=60)
    assert wait_for(lambda: file_sha256(world.binary) == old_sha, deadline_seconds=30)
    assert_old_service_back(world, old_sha)


def test_a_deploy_cancelled_while_the_service_script_runs_puts_the_old_binary_back(
    world, artifacts, monkeypatch, tmp_path
):
    hook = StopHook(world)
    old_sha = running_with_hook(world, artifacts, monkeypatch, hook.command(hold=True))
    program = cli(world, tmp_path, stop_timeout=HOLD_SECONDS + 30)
    process = spawn(program, tmp_path, "deploy", "botserver", "--artifact", str(artifacts(NEW)))
    try:
        assert hook.termed(), process.communicate(timeout=60)
        process.terminate()  # what a cancelled CI job sends
        hook.go()
        stdout, stderr = process.communicate(timeout=HOLD_SECONDS + 60)
    finally:
        process.kill()

    assert process.returncode == 1, stdout + stderr
    assert_old_service_back(world, old_sha)
    assert not Path(f"{world.binary}.lock").exists()


class SigtermAtTheFirstProgress(io.StringIO):
    """A terminal the upload draws its progress on, from inside the upload: at the first draw,
    this process gets SIGTERM (what a cancelled CI job sends), mid-upload whatever the load."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = False

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text.startswith("\r→ upload") and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return super().write(text)


@pytest.mark.parametrize("strategy", ["staged", "seed"])
def test_sigterm_during_the_upload_leaves_the_old_service_running(world, artifacts, strategy):
    # seed: the service was stopped before the upload, so the undo must start it again
    old_sha = deployed(world, artifacts)
    terminal = SigtermAtTheFirstProgress()

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW, pad_to=16 << 20), strategy=strategy, out=terminal)

    assert terminal.sent
    assert raised.value.exit_code == 1
    assert "interrupted" in str(raised.value)
    assert_old_service_back(world, old_sha)
    assert not Path(f"{world.binary}.new").exists()
    assert not Path(f"{world.binary}.lock").exists()


@pytest.mark.parametrize("strategy", ["staged", "seed"])
def test_a_cancelled_ci_job_mid_upload_exits_1_with_the_old_service_running(
    world, artifacts, tmp_path, strategy
):
    old_sha = deployed(world, artifacts)
    process = stalled_mid_upload(world, tmp_path, artifacts(NEW, pad_to=16 << 20), strategy)
    try:
        process.terminate()  # what a cancelled CI job sends
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()

    assert process.returncode == 1, stdout + stderr
    assert "interrupted" in stderr
    assert_old_service_back(world, old_sha)
    assert not Path(f"{world.binary}.new").exists()
    assert not Path(f"{world.binary}.lock").exists()


def test_a_deploy_killed_with_the_service_stopped_is_described_then_recovered(
    world, artifacts, tmp_path
):
    world.deploy(artifacts(OLD), commit=OLD)  # a release that passed health
    big = artifacts(NEW, pad_to=16 << 20)
    process = stalled_mid_upload(world, tmp_path, big, "seed")  # seed: stopped first
    process.kill()  # nothing of gbdeploy is left to undo anything
    process.communicate(timeout=60)
    assert world.running() == []

    status = io.StringIO()
    deploy.run_status(world.settings(), Reporter(stream=status), component="botserver")
    assert "LOCKED" in status.getvalue() and "it had STOPPED the service" in status.getvalue()
    deploy.run_deploy(world.settings(), "botserver", Reporter(stream=io.StringIO()), recover=True)

    assert serves(world, OLD) and len(world.running()) == 1
    assert not Path(f"{world.binary}.lock").exists()
    assert not Path(f"{world.binary}.journal").exists()


# --- the stop -------------------------------------------------------------------------------------
def test_the_stop_gives_the_service_its_stop_timeout_to_exit_gracefully(
    world, artifacts, monkeypatch
):
    # A service that needs two seconds to shut down after SIGTERM, well inside its stop_timeout.
    running_with_hook(world, artifacts, monkeypatch, "sleep 2")
    out = io.StringIO()

    world.deploy(artifacts(NEW), out=out, component={"stop_timeout": 60.0})

    assert serves(world, NEW)
    log = world.log.read_text()
    assert f"gbdeploy-standin-commit={OLD}: graceful exit after SIGTERM" in log, out.getvalue()
    assert "killed" not in out.getvalue()


# --- the lock -------------------------------------------------------------------------------------
# A `mkdir` first on the target's PATH that, while `.mkdir-barrier` lies in the directory it creates
# in, waits there until two callers arrived: two deploys then take the lock at the same instant.
# (Bounded at 2 minutes, which leaves a mark: then the round proves nothing and fails.)
BARRIER_MKDIR = """#!/bin/sh
for last; do :; done
d=$(dirname -- "$last")
if [ -f "$d/.mkdir-barrier" ]; then
  : > "$d/.mkdir-barrier.arrived.$$"
  i=0
  while [ "$(ls -a -- "$d" | grep -c '^\\.mkdir-barrier\\.arrived\\.')" -lt 2 ]; do
    [ "$i" -lt 12000 ] || { : > "$d/.mkdir-barrier.timeout"; break; }
    sleep 0.01; i=$((i + 1))
  done
fi
exec /bin/mkdir "$@"
"""


@pytest.fixture(scope="module")
def barrier_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    base = Path(tmp_path_factory.mktemp("barrier"))
    base.chmod(0o755)
    bin_dir = base / "bin"
    bin_dir.mkdir()
    (bin_dir / "mkdir").write_text(BARRIER_MKDIR)
    (bin_dir / "mkdir").chmod(0o755)
    standins = StandinWorld(base / "standins").install()
    with LoopbackSshd(base / "sshd", extra_path=[bin_dir, standins.bin]) as server:
        yield server


@pytest.fixture
def racing_world(barrier_sshd, remote_root: Path, service_user: str) -> Iterator[World]:
    (remote_root / "opt/gbo/bin").mkdir(parents=True)
    (remote_root / "opt/gbo/logs").mkdir(parents=True)
    yield World(barrier_sshd, remote_root, service_user, free_port())
    kill_pids(pids_under(remote_root))


def race(world: World, artifacts: Artifacts, contenders: dict[str, str]) -> dict[str, str]:
    """Deploy each contender's commit at once, each from its own thread: name → outcome."""
    start = threading.Barrier(len(contenders))
    outcomes: dict[str, str] = {}

    def contend(name: str, commit: str) -> None:
        start.wait()
        try:
            world.deploy(artifacts(commit), commit=commit, force=True)
            outcomes[name] = "ok"
        except LockHeld:
            outcomes[name] = "locked"
        except Exception as error:  # any other outcome fails the round
            outcomes[name] = repr(error)

    threads = [threading.Thread(target=contend, args=item) for item in contenders.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_two_deploys_racing_for_the_lock_never_both_hold_it(racing_world, artifacts):
    world = racing_world
    deployed(world, artifacts)
    contenders = {"first": "ccccccc0001", "second": "ccccccc0002"}
    for commit in contenders.values():
        artifacts(commit)  # built before the race, not inside it
    directory = world.binary.parent
    for round_ in range(5):
        for arrived in directory.glob(".mkdir-barrier.arrived.*"):
            arrived.unlink()
        (directory / ".mkdir-barrier").touch()

        outcomes = race(world, artifacts, contenders)

        arrivals = len(list(directory.glob(".mkdir-barrier.arrived.*")))
        assert arrivals >= 2, "the lock is no longer taken with a mkdir beside the binary"
        assert not (directory / ".mkdir-barrier.timeout").exists(), "one deploy came 2 min late"
        assert sorted(outcomes.values()) == ["locked", "ok"], f"round {round_}: {outcomes}"
        [winner] = [name for name, outcome in outcomes.items() if outcome == "ok"]
        assert serves(world, contenders[winner]) and len(world.running()) == 1
        assert not Path(f"{world.binary}.lock").exists()
    (directory / ".mkdir-barrier").unlink()


# --- releases and recovery ------------------------------------------------------------------------
KEPT = ("ddddddd0001", "ddddddd0002", "ddddddd0003")


def test_recover_after_a_killed_deploy_puts_back_the_newest_healthy_release(
    world, artifacts, tmp_path
):
    hook = StopHook(world)
    for commit in KEPT[:-1]:
        world.deploy(artifacts(commit), commit=commit)
    newest = KEPT[-1]
    # The newest release, when stopped, holds its stop until the deploy below was killed.
    env = {**world.component().env, "GB_ON_TERM": hook.command(hold=True)}
    world.deploy(artifacts(newest), commit=newest, component={"env": env})
    program = cli(world, tmp_path, stop_timeout=HOLD_SECONDS + 30)
    process = spawn(program, tmp_path, "deploy", "botserver", "--artifact", str(artifacts(NEW)))
    try:
        assert hook.termed(), process.communicate(timeout=60)
        process.kill()
        process.communicate(timeout=60)
    finally:
        process.kill()
    hook.go()
    assert wait_for(lambda: serves(world, NEW), deadline_seconds=60)  # the script finished …
    assert Path(f"{world.binary}.lock").exists()  # … but nobody ended the deploy

    out = io.StringIO()
    deploy.run_deploy(world.settings(), "botserver", Reporter(stream=out), recover=True)

    assert serves(world, newest), out.getvalue()
    assert file_sha256(world.binary) == file_sha256(artifacts(newest))
    assert len(world.running()) == 1
    assert not Path(f"{world.binary}.lock").exists()


def test_a_successful_deploy_leaves_no_journal(world, artifacts):
    deployed(world, artifacts)
    world.deploy(artifacts(NEW))
    assert not Path(f"{world.binary}.journal").exists()

    out = io.StringIO()
    world.deploy(artifacts(OLD), commit=OLD, out=out)  # the next deploy finds nothing left over

    assert "earlier deploy left" not in out.getvalue()
    status = io.StringIO()
    deploy.run_status(world.settings(), Reporter(stream=status), component="botserver")
    assert "interrupted" not in status.getvalue().lower(), status.getvalue()


# --- the artifact's machine -----------------------------------------------------------------------
EM_AARCH64 = 183


def test_an_artifact_for_another_machine_is_refused_by_deploy(world, artifacts, tmp_path):
    old_sha = deployed(world, artifacts)
    pids = world.running()
    foreign = tmp_path / "botserver"
    shutil.copyfile(artifacts(NEW), foreign)
    with open(foreign, "r+b") as elf:  # e_machine, little-endian, at offset 18
        elf.seek(18)
        elf.write(EM_AARCH64.to_bytes(2, "little"))

    with pytest.raises(UsageError) as raised:
        world.deploy(foreign)

    assert raised.value.exit_code == 2
    assert "cannot run there" in str(raised.value)
    assert serves(world, OLD) and world.running() == pids
    assert file_sha256(world.binary) == old_sha
    left = {path.name for path in world.binary.parent.iterdir()}
    assert not left & {"botserver.new", "botserver.lock", "botserver.journal"}, left


# --- verify ---------------------------------------------------------------------------------------
def test_verify_fails_when_the_binary_lacks_the_commit_though_health_reports_it(world, artifacts):
    world.deploy(artifacts(NEW))
    settings = world.settings()
    run_verify(settings, "botserver", Reporter(stream=io.StringIO()), commit=NEW)  # all pass
    # Other bytes put in place under the running process (which keeps answering with NEW).
    other = world.binary.with_name("botserver.other")
    shutil.copyfile(artifacts(OLD), other)
    shutil.chown(other, user=world.user)
    other.chmod(0o755)
    os.replace(other, world.binary)

    with pytest.raises(VerificationFailed) as raised:
        run_verify(settings, "botserver", Reporter(stream=io.StringIO()), commit=NEW)

    assert "binary contains the commit" in str(raised.value)


# --- rollback asks from a terminal ----------------------------------------------------------------
def run_on_a_terminal(argv: list[str], cwd: Path, answer: str) -> tuple[int, str]:
    """Run `argv` on a new pseudo-terminal; answer its [y/N] question; (exit code, output)."""
    pid, master = pty.fork()
    if pid == 0:  # the child: its stdin and stdout are the terminal
        try:
            os.chdir(cwd)
            person = {k: v for k, v in cli_env().items() if k not in CI_VARIABLES}  # not a job
            os.execve(argv[0], argv, person)
        finally:
            os._exit(127)
    output = b""
    asked = False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not asked and b"[y/N]" in output:
                os.write(master, answer.encode() + b"\n")
                asked = True
    finally:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_rollback_from_a_terminal_asks_and_a_no_changes_nothing(world, artifacts, tmp_path):
    deployed(world, artifacts)
    world.deploy(artifacts(NEW))
    program = command_line(world, tmp_path)
    before, pids = snapshot(world), world.running()

    code, output = run_on_a_terminal([*program, "rollback", "botserver"], tmp_path, "n")

    assert "roll back botserver" in output and "[y/N]" in output
    assert code == 0, output  # a no is the person's answer, not a failure
    assert "not confirmed: nothing done" in output
    assert snapshot(world) == before and world.running() == pids

    code, output = run_on_a_terminal([*program, "rollback", "botserver"], tmp_path, "y")

    assert code == 0, output
    assert serves(world, OLD)


# --- configuration --------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0, -1])
def test_keep_releases_below_one_is_a_config_error(tmp_path, gbdeploy_env, keep):
    (tmp_path / "gbdeploy.yaml").write_text(
        f"components:\n  botserver: {{keep_releases: {keep}}}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(start=tmp_path)
    assert raised.value.exit_code == 2
    assert "components.botserver.keep_releases" in str(raised.value)


# --- doctor ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "owner"), [(0o640, "root"), (0o604, "root"), (0o600, "service")])
def test_vault_init_readable_by_anyone_but_root_fails_doctor(production, service_user, mode, owner):
    if owner == "service" and service_user == "root":
        pytest.skip("needs a service user other than root (.ci/setup creates gbuser)")
    production.make_good()
    production.vault_init.chmod(mode)
    shutil.chown(production.vault_init, user=service_user if owner == "service" else "root")

    text, failed = doctor(production.settings())

    assert failed is not None and failed.exit_code == 1
    status, saw = rows(text)["system.vault-init-protected"]
    assert status == "FAIL", saw
    assert f"mode {mode:o}" in saw


# --- release: the order the remotes receive -------------------------------------------------------
def record_arrivals(world: GitWorld, log: Path) -> None:
    """A post-receive hook in every bare remote that appends `REPO@REMOTE REF SHA` per update."""
    for remote in ("origin", "alm"):
        for repo in ("gb", world.submodule_name):
            hook = world.bare(remote, repo) / "hooks" / "post-receive"
            hook.write_text(
                "#!/bin/sh\nwhile read old new ref; do"
                f' echo "{repo}@{remote} $ref $new" >> {shlex.quote(str(log))}; done\n'
            )
            hook.chmod(0o755)


def test_release_pushes_the_root_only_after_the_submodule_reached_every_remote(
    git_world: GitWorld, run_gbdeploy, tmp_path
):
    sha = git_world.commit_in_submodule()
    arrivals = tmp_path / "arrivals"
    record_arrivals(git_world, arrivals)

    result = run_gbdeploy("release", "botserver", "--no-wait")

    assert result.code == 0, result.text
    order = [line.split()[0] for line in arrivals.read_text().splitlines()]
    assert sorted(order[:2]) == ["botserver@alm", "botserver@origin"], order
    assert order[2:] == ["gb@alm"], order
    assert f"botserver@origin refs/heads/main {sha}" in arrivals.read_text()
    assert git(git_world.bare("alm", "gb"), "rev-parse", "main") in arrivals.read_text()


# --- forge: a dispatch is sent once -------------------------------------------------------------
def test_a_dispatch_answered_with_a_gateway_error_is_not_sent_again(forgejo):
    # A proxy's 502 says nothing of whether Forgejo started the run: a second POST could deploy
    # the release twice.
    forgejo.set_ref("main", "3f2a9c0d1e4b5a6978877665544332211000aaaa")
    forgejo.fail_next(1, status=502)
    clock = FakeClock()
    client = ForgeClient(forgejo.forge_settings(), sleep=clock.sleep, clock=clock)

    with pytest.raises(ForgeUnavailable) as raised:
        client.dispatch("botserver.yaml", "main")

    assert "502" in str(raised.value)
    assert len(forgejo.requests("/dispatches", method="POST")) == 1
    assert clock.sleeps == []


# --- workflows: the deploy checks the target's host key -------------------------------------------
@pytest.mark.slow  # the emulated runner's job
def test_the_ci_deploy_is_given_the_known_hosts_from_its_secret(request, tmp_path):
    """The deploy step's gbdeploy verifies the target's host key against DEPLOY_KNOWN_HOSTS
    (GBDEPLOY_SSH_KNOWN_HOSTS names the file), never against whatever the runner has."""
    checkout = request.getfixturevalue("runner_checkout")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "known-hosts-seen"
    stub = bin_dir / "gbdeploy"
    stub.write_text(f'#!/bin/bash\ncp -- "$GBDEPLOY_SSH_KNOWN_HOSTS" {shlex.quote(str(seen))}\n')
    stub.chmod(0o755)
    hosts = "[203.0.113.7]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheTarget"
    workflow = tmp_path / "botserver.yaml"
    workflow.write_text(render_workflow(runner_settings(), "botserver"))
    ctx = runner_context(checkout, bin_dir, secrets={"DEPLOY_KNOWN_HOSTS": hosts})

    result = run_job(workflow, checkout, ctx)

    assert result.status == "success", result.log
    assert seen.read_text() == hosts + "\n"


# --- maintenance: a cache read recently is in use -------------------------------------------------
def test_maintenance_keeps_a_cache_entry_read_recently_though_written_long_ago(tmp_path):
    """sccache hits and cargo builds read their cache entries without rewriting them: the last
    read (atime) says an entry is in use as much as the last write does."""
    now = time.time()
    day = 86400
    read_yesterday = tmp_path / "sccache/a/b/hit"
    never_read = tmp_path / "sccache/a/c/stale"
    for path in (read_yesterday, never_read):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    os.utime(read_yesterday, (now - 1 * day, now - 60 * day))  # (atime, mtime)
    os.utime(never_read, (now - 60 * day, now - 60 * day))
    caches = {"sccache_dir": str(tmp_path / "sccache"), "cargo_home": str(tmp_path / "cargo")}
    settings = Settings.from_mapping({**DEFAULTS, "workflows": {**DEFAULTS["workflows"], **caches}})

    run_maintain(settings, Reporter(stream=io.StringIO()), now=now, max_age_days=14, max_size_gb=10)

    assert read_yesterday.exists()
    assert not never_read.exists()


# --- verify: a second copy as another user --------------------------------------------------------
def test_verify_fails_when_a_copy_runs_as_another_user_beside_the_services(world, artifacts):
    """Started by hand (as root here) beside the service's own process: it holds files and ports
    as that user, and the service user could not stop it."""
    me = pwd.getpwuid(os.getuid()).pw_name
    if me == world.user:
        pytest.skip("needs a service user other than this one (.ci/setup creates gbuser)")
    world.deploy(artifacts(NEW))
    with open(world.log, "ab") as log:
        beside = subprocess.Popen(
            [str(world.binary), "--noconsole"],
            cwd=world.binary.parent,
            env={**os.environ, "PORT": str(free_port())},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        assert wait_for(lambda: len(world.running()) == 2)

        with pytest.raises(VerificationFailed) as raised:
            run_verify(world.settings(), "botserver", Reporter(stream=io.StringIO()), commit=NEW)

        assert "process runs the binary" in str(raised.value)
        assert f"{beside.pid} as {me}" in str(raised.value)
    finally:
        beside.kill()
        beside.wait()


# --- the remembered sha256 ------------------------------------------------------------------------
def test_a_binary_replaced_by_hand_is_not_taken_for_the_one_deployed(world, artifacts):
    """The sha256 a deploy remembers beside the binary holds only while the file is the same
    one: replaced by hand (another inode, size or mtime), it is hashed again."""
    world.deploy(artifacts(NEW))
    by_hand = world.binary.with_name("botserver.by-hand")
    shutil.copyfile(artifacts(OLD), by_hand)
    by_hand.chmod(0o755)
    os.replace(by_hand, world.binary)  # the process still runs NEW from the replaced file
    out = io.StringIO()

    world.deploy(artifacts(NEW), out=out)

    assert "unchanged" not in out.getvalue()
    assert file_sha256(world.binary) == file_sha256(artifacts(NEW))
    assert serves(world, NEW) and len(world.running()) == 1


# --- a service that was not running ---------------------------------------------------------------
def test_a_failed_deploy_to_a_stopped_service_puts_the_binary_back_and_starts_nothing(
    world, artifacts
):
    deployed(world, artifacts)
    kill_pids(world.running())  # stopped by someone on purpose before the deploy
    old_sha = file_sha256(world.binary)

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW, Fault.FAIL_AT_START))

    assert "it was not running before, so it was not started" in str(raised.value)
    assert file_sha256(world.binary) == old_sha
    assert world.running() == []
    assert not Path(f"{world.binary}.lock").exists()


def test_an_unchanged_binary_whose_service_is_down_says_force_restarts_it(world, artifacts):
    world.deploy(artifacts(OLD), commit=OLD)
    kill_pids(world.running())

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(OLD), commit=OLD)

    assert "unchanged but the service does not run" in str(raised.value)
    assert "gbdeploy deploy botserver --force" in (raised.value.hint or "")
    assert world.running() == []


def test_an_unchanged_binary_whose_service_is_down_is_left_in_place(world, artifacts):
    # With an older binary kept as B.prev: the failed health check must not put it back.
    world.deploy(artifacts(OLD), commit=OLD)
    world.deploy(artifacts(NEW))
    kill_pids(world.running())

    with pytest.raises(DeployFailed) as raised:
        world.deploy(artifacts(NEW))

    assert raised.value.exit_code == 1
    assert "unchanged but the service does not run" in str(raised.value)
    assert file_sha256(world.binary) == file_sha256(artifacts(NEW))
    assert world.running() == []
    assert not Path(f"{world.binary}.lock").exists()


def test_recover_takes_over_a_lock_left_without_a_holder_record(world, artifacts):
    """Killed between creating the lock and writing its holder: an empty lock directory."""
    world.deploy(artifacts(OLD), commit=OLD)
    world.deploy(artifacts(NEW))
    Path(f"{world.binary}.lock").mkdir()
    with pytest.raises(LockHeld):
        world.deploy(artifacts(NEW), force=True)

    deploy.run_deploy(world.settings(), "botserver", Reporter(stream=io.StringIO()), recover=True)

    assert serves(world, NEW) and len(world.running()) == 1
    assert not Path(f"{world.binary}.lock").exists()


# --- the component's environment is data ----------------------------------------------------------
def test_environment_values_reach_the_service_as_they_are_never_run(world, artifacts):
    injected = world.root / "injected"
    value = f'it\'s $(touch {injected}) ; `touch {injected}` "quoted" $HOME'
    env = {**world.component().env, "GB_GREETING": value}

    world.deploy(artifacts(NEW), component={"env": env})

    [pid] = world.running()
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"GB_GREETING={value}".encode() in environ
    assert not injected.exists()


# --- forge: who superseded a cancelled run --------------------------------------------------------
def test_a_cancelled_run_is_not_blamed_on_a_later_run_of_another_workflow(forgejo_factory):
    workflow = (
        'on: {push: {branches: [main]}}\njobs: {deploy: {runs-on: gbo, steps: [{run: "true"}]}}\n'
    )
    forgejo = forgejo_factory(
        workflows={"botserver.yaml": workflow, "botui.yaml": workflow}, runner_labels=["gbo"]
    )
    sha = "3f2a9c0d1e4b5a6978877665544332211000aaaa"
    [cancelled] = forgejo.on_push(sha, workflows=["botserver.yaml"], script=Script(hold=True))
    forgejo.finish(cancelled, "cancelled")  # by a person, in the web UI
    [other] = forgejo.on_push("0123456789abcdef0123456789abcdef01234567", workflows=["botui.yaml"])
    clock = FakeClock()
    client = ForgeClient(forgejo.forge_settings(), sleep=clock.sleep, clock=clock)

    with pytest.raises(CIRunFailed) as raised:
        wait_for_run(client, cancelled, timeout=60, poll_interval=5, reporter=Reporter())

    assert "finished with status cancelled" in str(raised.value)
    assert f"gbdeploy wait {other}" not in (raised.value.hint or "")


# --- doctor: snapshots kept too long --------------------------------------------------------------
def test_a_daily_snapshot_job_keeping_more_than_the_retention_fails_doctor(
    production, service_user
):
    production.make_good()
    job = production.etc / "cron.daily/zfs-auto-snapshot"
    job.write_text(job.read_text().replace("--keep=7", "--keep=30"))

    text, failed = doctor(production.settings())

    assert failed is not None
    status, saw = rows(text)["host.zfs-snapshot-schedule"]
    assert status == "FAIL", saw
    assert "kept longer than 7 days" in saw and "keeps 30, one a day: 30 days" in saw


# --- exit 5 ---------------------------------------------------------------------------------------
def test_the_gbdeploy_process_exits_5_when_the_previous_state_could_not_be_restored(
    world, artifacts, tmp_path
):
    deployed(world, artifacts)
    # A start hook that damages the kept binary, so the restore has nothing good to put back.
    hook = "printf 'not a binary' > ./botserver.prev; exec ./botserver --noconsole"
    program = cli(world, tmp_path, start=hook)
    artifact = str(artifacts(NEW, Fault.FAIL_AT_START))

    done = subprocess.run(
        [*program, "deploy", "botserver", "--artifact", artifact],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 5, done.stdout + done.stderr
    assert "a person must act" in done.stderr
