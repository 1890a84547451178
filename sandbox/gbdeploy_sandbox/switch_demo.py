"""`gbdeploy demo --switch`: a zero-downtime deploy behind Debian's real Caddy, on this machine.

A loopback sshd is the target (and the proxy), the stand-in botserver alternates between two
free ports, Caddy dials it. A first `deploy --strategy switch` installs it; then two more while
clients send requests through Caddy the whole time, and how many of them failed.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from gbdeploy.config import Switch, Target
from gbdeploy.deploy import run_deploy
from gbdeploy.output import Reporter

from .load import Load
from .procs import kill_pids, pids_under
from .proxy import LoopbackCaddy
from .service import build_service, service_user
from .settings import standin_component, target_settings
from .sshd import LoopbackSshd, find_sshd, free_port

COMMITS = ("aaaaaaa1111", "bbbbbbb2222", "ccccccc3333")


def run_switch_demo(reporter: Reporter) -> None:
    find_sshd()
    directory = Path(tempfile.mkdtemp(prefix="gbdeploy-switch-demo-"))
    directory.chmod(0o755)  # the service user must reach its binary
    user = service_user()
    binary = directory / "target/opt/gbo/bin/botserver"
    binary.parent.mkdir(parents=True)
    shutil.chown(binary.parent, user=user)
    ports = (free_port(), free_port())
    try:
        with reporter.step("build the stand-in botserver (three commits)"):
            artifacts = [build_service(directory / c / "botserver", c) for c in COMMITS]
        with (
            LoopbackSshd(directory / "sshd", alias="pragmatismo-system") as sshd,
            LoopbackCaddy(directory / "proxy", upstream_port=ports[0]) as caddy,
        ):
            component = standin_component(
                binary,
                directory / "target/opt/gbo/logs/error.log",
                user,
                ports[0],
                env={},
                health="http://localhost:{port}/health",
                health_settle=0.5,
                switch=Switch(
                    ports=list(ports),
                    proxy="proxy",
                    upstream_host="127.0.0.1",
                    caddyfile=str(caddy.caddyfile),
                    drain=10.0,
                    site=caddy.url,  # each switch confirms the new commit answers there
                ),
            )
            base = target_settings(sshd, component)
            settings = dataclasses.replace(
                base, targets={**base.targets, "proxy": Target("proxy", sshd.alias)}
            )
            reporter.say(
                f"  caddy (pid {caddy.pid}) serves {caddy.url}, dialling 127.0.0.1:{ports[0]} "
                f"({caddy.caddyfile}); botserver alternates between {ports[0]} and {ports[1]}"
            )

            def deploy(commit: str, artifact: Path) -> None:
                reporter.say(f"$ gbdeploy deploy botserver --strategy switch  ({commit})")
                run_deploy(
                    settings,
                    "botserver",
                    reporter,
                    artifact=str(artifact),
                    commit=commit,
                    strategy="switch",
                )

            deploy(COMMITS[0], artifacts[0])  # the first install: nothing served before it
            with Load(f"{caddy.url}/health", clients=4, max_seconds=600) as load:
                for commit, artifact in zip(COMMITS[1:], artifacts[1:], strict=True):
                    deploy(commit, artifact)
            reporter.say(
                f"through Caddy during the two switches: {load.result.summary()} "
                f"(Caddy still pid {caddy.pid}: reloaded, never restarted)"
            )
    finally:
        kill_pids(pids_under(directory))
        shutil.rmtree(directory, ignore_errors=True)
