"""Signal sweeps: `gbdeploy deploy` and `gbdeploy rollback` SIGTERMed (a cancelled CI job) or
SIGKILLed at a moment that moves 20-50 ms later each round, counted from when the run's lock
appears on the target, so every round lands in the part of the run that changes the target,
whatever the machine's load does to its start-up. Every round must end with the service healthy,
or with a lock and journal that `deploy --recover` turns into a healthy service: one process,
from B's path, not ignoring SIGTERM, running a kept release whose commit its health names; no lock
or journal left."""

from __future__ import annotations

import io
import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gbdeploy import deploy
from gbdeploy.artifact import file_sha256
from gbdeploy.output import Reporter
from gbdeploy_sandbox.procs import executable_of, wait_for
from tests.deploy_world import NEW, OLD, World, cli_env, command_line

ROUNDS = 10  # per action and signal: bounded, each a whole CLI run (and a recover)
STEP = (0.020, 0.050)  # seconds the signal moves later each round, from the lock's appearance
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def healthy_and_recorded(world: World) -> str:
    """The invariant after each round; returns the commit that runs."""
    assert wait_for(lambda: (world.health() or {}).get("status") == "ok", deadline_seconds=15)
    [pid] = world.running()
    assert executable_of(pid) == str(world.binary)
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(next(ln for ln in status.splitlines() if ln.startswith("SigIgn:")).split()[1], 16)
    assert ignored & SIGTERM_BIT == 0
    sha = file_sha256(world.binary)
    releases = dict(
        line.split()[:2] for line in Path(f"{world.binary}.releases/list").read_text().splitlines()
    )
    assert sha in releases  # what runs is a release that passed health
    commit = world.health()["commit"]
    assert releases[sha] == commit
    assert not Path(f"{world.binary}.lock").exists()
    assert not Path(f"{world.binary}.journal").exists()
    return commit


def interrupted(command: list[str], directory: Path, lock: Path, after: float, sig: int) -> None:
    """Run `command` and send it `sig` `after` seconds past the moment its lock appears on the
    target (or at once if it ends without taking one)."""
    process = subprocess.Popen(
        command, cwd=directory, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(
            lambda: lock.exists() or process.poll() is not None,
            deadline_seconds=120,
            interval=0.002,
        )
        time.sleep(after)  # the moment of the signal within the locked run, not a wait for a state
        process.send_signal(sig)
        process.wait(timeout=300)
    finally:
        process.kill()
        process.wait()


def run_whole(command: list[str], directory: Path) -> None:
    done = subprocess.run(
        command, cwd=directory, env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


def recover_if_locked(world: World) -> bool:
    """`deploy --recover` when the round left a lock or a journal; whether it did."""
    if Path(f"{world.binary}.lock").exists() or Path(f"{world.binary}.journal").exists():
        deploy.run_deploy(
            world.settings(), "botserver", Reporter(stream=io.StringIO()), recover=True
        )
        return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("action", ["deploy", "rollback"])
def test_signal_sweep_ends_healthy_or_recoverable(world, artifacts, tmp_path, action):
    for commit in (OLD, NEW):
        world.deploy(artifacts(commit), commit=commit)
    program = command_line(world, tmp_path)
    config = json.loads((tmp_path / "gbdeploy.yaml").read_text())
    config["components"]["botserver"]["health_settle"] = 0.05
    (tmp_path / "gbdeploy.yaml").write_text(json.dumps(config))

    def command(to: str) -> list[str]:
        if action == "rollback":
            return [*program, "rollback", "botserver", "--to", to, "--yes"]
        return [*program, "deploy", "botserver", "--artifact", str(artifacts(to)), "--commit", to]

    def other(commit: str) -> str:
        return OLD if commit == NEW else NEW

    running = healthy_and_recorded(world)
    run_whole(command(other(running)), tmp_path)
    running = healthy_and_recorded(world)
    lock = Path(f"{world.binary}.lock")
    seed = random.randrange(1 << 30)
    steps = random.Random(seed)
    recovered = {signal.SIGTERM: 0, signal.SIGKILL: 0}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        after = steps.uniform(0, STEP[0])
        for round_number in range(ROUNDS):
            interrupted(command(other(running)), tmp_path, lock, after, sig)
            try:
                recovered[sig] += recover_if_locked(world)
                running = healthy_and_recorded(world)
            except BaseException as error:
                raise AssertionError(
                    f"{action} {sig.name} {after:.3f}s after the lock (round {round_number}, "
                    f"seed {seed}): {error!r}"
                ) from error
            after += steps.uniform(*STEP)
    # the sweep reached the target: a SIGKILLed run leaves its lock for --recover
    assert recovered[signal.SIGKILL] >= 1, recovered
