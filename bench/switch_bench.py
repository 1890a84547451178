"""Failed requests through a real Caddy during a deploy, under steady load, on loopback.

    python bench/switch_bench.py [--runs 3] [--clients 8] [--slow-start] [--settle S]

Debian's Caddy (2.6) runs on loopback in front of the stand-in service; a load generator
(`gbdeploy_sandbox.load`: N clients, a new connection per request, GET /health, bounded in time
and count) sends requests through Caddy for the whole of each measured operation and counts the
ones that fail (refused, reset, or any answer but 200 — Caddy answers 502 while nothing listens).

Measured, `--runs` rounds each, medians and every run printed:

- a `staged` deploy (`gbdeploy deploy`, as a user runs it, alternating two commits): its restart
  window is where requests fail;
- the proxy half of a `switch`, alone: `caddy_switch.CaddySwitch` over ssh (back up, write,
  validate, reload) moving the upstream from the running service to a second one already serving
  on the other port, and back — what a switch adds over `staged` on the proxy, and that Caddy's
  reload drops nothing.

Caddy's reload drops nothing only where `net.ipv4.tcp_migrate_req` is 1 (`.ci/setup` sets it;
a production proxy needs it too): Caddy binds a new SO_REUSEPORT socket per config and closes the
old one, whose queued connections the kernel otherwise resets.

`--slow-start` uses the stand-in that listens only after 0.3 s, as a botserver that loads its
stack before it serves: the staged window grows by that much.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploy_bench import World

from gbdeploy.caddy_switch import CaddySwitch
from gbdeploy.config import SshSettings, Target
from gbdeploy.connection import Remote
from gbdeploy_sandbox.load import Load, LoadResult
from gbdeploy_sandbox.procs import kill_pids, wait_for
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


def start_beside(binary: Path, port: int, log: Path) -> int:
    """The other commit serving on the idle port, as a switch's new process would be."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            ["runuser", "-u", service_user(), "--", str(binary)],
            env={**os.environ, "PORT": str(port)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    return process.pid


def answers(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
            return True
    except OSError:
        return False


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
            extra: list[int] = []
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
                    Target("proxy", sshd.alias), SshSettings(config=str(sshd.ssh_config))
                )
                idle = free_port()
                extra.append(start_beside(binaries[1 - current], idle, directory / "beside.log"))
                if not wait_for(lambda: answers(idle)):
                    raise SystemExit("the second service did not answer on the idle port")
                proxy, proxy_seconds = [], []
                pid = caddy.pid
                with remote:
                    for attempt in range(runs):
                        there = CaddySwitch(str(caddy.caddyfile), "127.0.0.1", world.port, idle)
                        back = CaddySwitch(str(caddy.caddyfile), "127.0.0.1", idle, world.port)
                        for switch in (there, back):
                            result, seconds = measured(
                                caddy, options.clients, lambda s=switch: s.apply(remote)
                            )
                            proxy.append(result)
                            proxy_seconds.append(seconds)
                        print(f"  proxy switch {attempt + 1}/{runs} done", file=sys.stderr)
                if caddy.pid != pid or not caddy.running():
                    raise SystemExit("Caddy was restarted: a switch must only reload it")
            finally:
                caddy.stop()
                kill_pids(extra)
                world.stop_service()
        print(line("staged deploy", staged, staged_seconds))
        print(line("proxy switch (there, back)", proxy, proxy_seconds))
        print(
            "A switch deploy adds the proxy switch and the drain to the staged steps, and takes "
            "the restart window out of the served path."
        )


if __name__ == "__main__":
    main()
