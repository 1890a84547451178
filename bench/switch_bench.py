"""Failed requests through a real Caddy during a deploy, under steady load, on loopback.

    python bench/switch_bench.py [--runs 3] [--clients 8] [--slow-start] [--settle S]

Debian's Caddy (2.6) runs on loopback in front of the stand-in service; a load generator
(`gbdeploy_sandbox.load`: N clients, a new connection per request, GET /health, bounded in time
and count) sends requests through Caddy for the whole of each measured operation and counts the
ones that fail (refused, reset, or any answer but 200 — Caddy answers 502 while nothing listens).

Measured, `--runs` rounds each, medians and every run printed:

- a `staged` deploy (`gbdeploy deploy`, as a user runs it, alternating two commits): its restart
  window is where requests fail;
- a `switch` from its parts (`bench.switch_bench.Switching`: what `deploy --strategy switch`
  will run, without its lock, upload and journal), there and back: the new binary started on the
  idle port beside the old one, healthy there, Caddy switched (`caddy_switch`: back up, write,
  validate, reload, confirm), the old port drained, the old process stopped by its pid.

Caddy's reload drops nothing only where `net.ipv4.tcp_migrate_req` is 1 (`.ci/setup` sets it;
a production proxy needs it too): Caddy binds a new SO_REUSEPORT socket per config and closes the
old one, whose queued connections the kernel otherwise resets.

`--slow-start` uses the stand-in that listens only after 0.3 s, as a botserver that loads its
stack before it serves: the staged window grows by that much.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from deploy_bench import World

from gbdeploy.caddy_switch import CaddySwitch
from gbdeploy.config import SshSettings, Target
from gbdeploy.remote.connection import Remote
from gbdeploy.switch_process import (
    drain_command,
    parse_pids,
    serving_pid_command,
    stop_pid_command,
)
from gbdeploy_sandbox.load import Load, LoadResult
from gbdeploy_sandbox.procs import wait_for
from gbdeploy_sandbox.proxy import LoopbackCaddy
from gbdeploy_sandbox.service import Fault, build_service, service_user
from gbdeploy_sandbox.sshd import LoopbackSshd, free_port

COMMITS = ("aaaaaaa1111", "bbbbbbb2222")
WARM_REQUESTS = 40  # sent before and after each measured operation: the load really runs


def measured(caddy: LoopbackCaddy, clients: int, operation) -> tuple[LoadResult, float]:
    """Run `operation()` under load through Caddy; (what the load saw, the operation's seconds)."""
    with Load(f"{caddy.url}/health", clients=clients, max_seconds=300) as load:
        if not load.wait_for_requests(WARM_REQUESTS):
            raise SystemExit(f"the load through Caddy does not run: {load.result.summary()}")
        started = time.monotonic()
        operation()
        seconds = time.monotonic() - started
        load.wait_for_requests(WARM_REQUESTS)
    return load.result, seconds


def start_beside(binary: Path, port: int, log: Path) -> None:
    """The new binary serving on the idle port, as a switch starts it (the test's own start: the
    deploy layer's recipe replaces it)."""
    with open(log, "ab") as out:
        subprocess.Popen(
            ["runuser", "-u", service_user(), "--", str(binary)],
            env={**os.environ, "PORT": str(port)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


class Switching:
    """One switch from its parts, as the deploy will run it (without lock, upload and journal):
    the new binary renamed over the path, started on the idle port beside the old process,
    healthy there with its commit, Caddy switched and confirmed, the old port drained, the old
    process stopped by its pid."""

    def __init__(
        self, remote: Remote, binary: Path, caddy: LoopbackCaddy, live: int, idle: int
    ) -> None:
        self.remote, self.binary, self.caddy = remote, binary, caddy
        self.live, self.idle = live, idle
        self.proxy_seconds = 0.0

    def run(self, artifact: Path, commit: str, directory: Path) -> None:
        path = str(self.binary)
        (old_pid,) = parse_pids(self.remote.run(serving_pid_command(path, self.live)).stdout)
        staged = self.binary.with_name("botserver.switch-new")
        shutil.copyfile(artifact, staged)
        staged.chmod(0o755)
        shutil.chown(staged, user=service_user())
        staged.rename(self.binary)
        start_beside(self.binary, self.idle, directory / "beside.log")
        if not wait_for(lambda: answers(self.idle) == commit, deadline_seconds=30):
            raise SystemExit(f"{commit} did not get healthy on {self.idle}")
        started = time.monotonic()
        switch = CaddySwitch(str(self.caddy.caddyfile), "127.0.0.1", self.live, self.idle)
        switch.apply(self.remote)
        switch.confirm(self.remote)
        self.proxy_seconds = time.monotonic() - started
        self.remote.run(drain_command(self.live, 10.0))
        self.remote.run(stop_pid_command(path, old_pid, 5.0))


def answers(port: int) -> str | None:
    """The commit the service on `port` answers health with, if it does."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
            return json.loads(answer.read()).get("commit")
    except (OSError, ValueError):
        return None


def line(name: str, results: list[LoadResult], seconds: list[float]) -> str:
    failed = [r.failed for r in results]
    sent = [r.sent for r in results]
    why = sum((r.failures for r in results), start=type(results[0].failures)())
    reasons = ", ".join(f"{n} {reason}" for reason, n in why.most_common()) or "none"
    return (
        f"{name:<28} failed requests: median {statistics.median(failed):g} "
        f"(runs: {', '.join(map(str, failed))}; of {', '.join(map(str, sent))} sent; {reasons})\n"
        f"{'':<28} time: median {statistics.median(seconds):.2f}s "
        f"(runs: {', '.join(f'{s:.2f}' for s in seconds)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--slow-start", action="store_true")
    parser.add_argument("--settle", type=float, default=0.25, help="health_settle, seconds")
    options = parser.parse_args()
    runs = max(1, min(options.runs, 3))
    fault = Fault.SLOW_START if options.slow_start else Fault.NONE
    with tempfile.TemporaryDirectory(prefix="gbdeploy-switch-bench-") as scratch:
        directory = Path(scratch)
        directory.chmod(0o755)
        binaries = [build_service(directory / c / "botserver", c, fault=fault) for c in COMMITS]
        with LoopbackSshd(directory / "sshd") as sshd:
            world = World(
                sshd,
                directory / "target",
                directory / "project",
                free_port(),
                service_user(),
                settle=options.settle,
            )
            world.prepare()
            caddy = LoopbackCaddy(directory / "proxy", upstream_port=world.port)
            try:
                world.deploy(binaries[0], COMMITS[0])  # gbdeploy installs and starts it
                caddy.start()
                print(
                    f"caddy {caddy.pid} on {caddy.url} → 127.0.0.1:{world.port}; "
                    f"{options.clients} clients; stand-in{' (slow start)' if fault.value else ''}"
                )
                staged, staged_seconds = [], []
                current = 0
                for attempt in range(runs):
                    current = 1 - current
                    result, seconds = measured(
                        caddy,
                        options.clients,
                        lambda c=current: world.deploy(binaries[c], COMMITS[c]),
                    )
                    staged.append(result)
                    staged_seconds.append(seconds)
                    print(f"  staged {attempt + 1}/{runs}: {result.summary()}", file=sys.stderr)

                remote = Remote(
                    Target("system", sshd.alias), SshSettings(config=str(sshd.ssh_config))
                )
                sequence, sequence_seconds, proxy_seconds = [], [], []
                pid = caddy.pid
                live, idle = world.port, free_port()
                with remote:
                    for attempt in range(2 * runs):  # there and back, `runs` times
                        current = 1 - current
                        step = Switching(remote, world.binary, caddy, live, idle)
                        result, seconds = measured(
                            caddy,
                            options.clients,
                            lambda s=step, c=current: s.run(binaries[c], COMMITS[c], directory),
                        )
                        sequence.append(result)
                        sequence_seconds.append(seconds)
                        proxy_seconds.append(step.proxy_seconds)
                        live, idle = idle, live
                        print(
                            f"  switch {attempt + 1}/{2 * runs}: {result.summary()}",
                            file=sys.stderr,
                        )
                if caddy.pid != pid or not caddy.running():
                    raise SystemExit("Caddy was restarted: a switch must only reload it")
            finally:
                caddy.stop()
                world.stop_service()
        print(line("staged deploy", staged, staged_seconds))
        print(line("switch (there, back)", sequence, sequence_seconds))
        print(
            f"{'':<28} of which the proxy (backup, write, validate, reload, confirm): median "
            f"{statistics.median(proxy_seconds):.2f}s"
        )
        print(
            "A switch deploy adds the proxy switch and the drain to the staged steps, and takes "
            "the restart window out of the served path."
        )


if __name__ == "__main__":
    main()
