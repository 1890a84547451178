"""Failed requests through a real Caddy during a deploy, under steady load, on loopback.

    python bench/switch_bench.py [--runs 3] [--clients 8] [--slow-start] [--settle S]

Debian's Caddy (2.6) runs on loopback in front of the stand-in service; a load generator
(`gbdeploy_sandbox.load`: N clients, a new connection per request, GET /health, bounded in time
and count) sends requests through Caddy for the whole of each measured operation and counts the
ones that fail (refused, reset, or any answer but 200 — Caddy answers 502 while nothing listens).

Measured, `--runs` rounds each, medians and every run printed:

- a `staged` deploy (`gbdeploy deploy`, as a user runs it, alternating two commits): its restart
  window is where requests fail;
- a `switch` deploy (`gbdeploy deploy --strategy switch`, as a user runs it, the same two
  commits), there and back: lock, upload, the new binary started on the idle port beside the old
  one, healthy there, Caddy switched (back up, write, validate, reload, confirm), the old port
  drained, the old process stopped by its pid, the release kept; and its extra time over staged.

Caddy's reload drops nothing only where `net.ipv4.tcp_migrate_req` is 1 (`.ci/setup` sets it;
a production proxy needs it too): Caddy binds a new SO_REUSEPORT socket per config and closes the
old one, whose queued connections the kernel otherwise resets.

`--slow-start` uses the stand-in that listens only after 0.3 s, as a botserver that loads its
stack before it serves: the staged window grows by that much.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from deploy_bench import World

from gbdeploy_sandbox.load import Load, LoadResult
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


def use_switch(world: World, caddy: LoopbackCaddy, ports: tuple[int, int]) -> None:
    """The bench's gbdeploy.yaml with botserver as a switch component behind `caddy`: `PORT` and
    `{port}` from the port in use, Caddy on the target `proxy` (the same loopback sshd)."""
    path = world.project / "gbdeploy.yaml"
    config = yaml.safe_load(path.read_text())
    botserver = config["components"]["botserver"]
    botserver["env"] = {}
    botserver["health"] = "http://127.0.0.1:{port}/health"
    botserver["switch"] = {
        "ports": list(ports),
        "proxy": "proxy",
        "caddyfile": str(caddy.caddyfile),
        "upstream_host": "127.0.0.1",
        "drain": 10,
    }
    config["targets"]["proxy"] = {"ssh": world.sshd.alias}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def step_seconds(output: str, step: str) -> float:
    """A step's seconds from the summary a deploy prints (`ok   proxy   0.41s …`)."""
    found = re.search(rf"^\s*ok\s+{re.escape(step)}\s+([0-9.]+)s", output, re.MULTILINE)
    return float(found[1]) if found else float("nan")


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

                use_switch(world, caddy, (world.port, free_port()))
                sequence, sequence_seconds, proxy_seconds = [], [], []
                pid = caddy.pid
                outputs: list[str] = []
                for attempt in range(2 * runs):  # there and back, `runs` times
                    current = 1 - current
                    result, seconds = measured(
                        caddy,
                        options.clients,
                        lambda c=current: outputs.append(
                            world.gbdeploy(
                                "deploy",
                                "botserver",
                                "--artifact",
                                str(binaries[c]),
                                "--commit",
                                COMMITS[c],
                                "--strategy",
                                "switch",
                            )[1]
                        ),
                    )
                    sequence.append(result)
                    sequence_seconds.append(seconds)
                    proxy_seconds.append(step_seconds(outputs[-1], "proxy"))
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
        print(line("switch deploy (there, back)", sequence, sequence_seconds))
        print(
            f"{'':<28} of which the proxy (backup, write, validate, reload, confirm): median "
            f"{statistics.median(proxy_seconds):.2f}s"
        )
        extra = statistics.median(sequence_seconds) - statistics.median(staged_seconds)
        print(f"{'':<28} a switch deploy takes {extra:+.2f}s over a staged one (medians)")


if __name__ == "__main__":
    main()
