"""doctor's checks for a switch component, over the real sshd against the stand-in production:
its ports served by it alone, the Caddyfile's upstream dialling the port that answers, the storage
rule in the Caddyfile the switch edits, and a proxy kernel that keeps queued connections on a
Caddy reload. The service is the stand-in, really listening."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from gbdeploy.config import DEFAULTS, Settings
from gbdeploy.doctor import Doctor, doctor_plan
from gbdeploy.doctor.host import containers_check
from gbdeploy.doctor.plan import switch_checks_of
from gbdeploy_sandbox.procs import kill_pids, pids_running, wait_for
from gbdeploy_sandbox.production import PROXY, SYSTEM, ProductionWorld
from gbdeploy_sandbox.sshd import free_port
from tests.deploy_world import OLD, Artifacts

NAMES = [
    "system.switch-ports.botserver",
    "system.switch-direct-clients.botserver",
    "proxy.switch-upstream.botserver",
    "proxy.switch-caddy-storage.botserver",
    "proxy.switch-reload-keeps-connections.botserver",
    "config.switch-direct-env.botserver",
]


class SwitchProduction:
    def __init__(self, production: ProductionWorld, artifacts: Artifacts) -> None:
        self.production = production
        self.ports = [free_port(), free_port()]
        production.standins.add_container(SYSTEM)
        production.standins.add_container(PROXY)
        binary = production.botserver
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifacts(OLD), binary)
        binary.chmod(0o755)
        production.caddy_storage.mkdir(parents=True, exist_ok=True)
        self.dial(self.ports[0])

    def dial(self, *ports: int, storage: bool = True) -> None:
        upstreams = " ".join(f"127.0.0.1:{p}" for p in ports)
        global_block = (
            f"{{\n\tstorage file_system {{\n\t\troot {self.production.caddy_storage}\n\t}}\n}}\n\n"
            if storage
            else ""
        )
        path = self.production.caddyfile
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            global_block + f"chat.example.com {{\n\treverse_proxy {upstreams}\n}}\n\n"
            "ui.example.com {\n\treverse_proxy 127.0.0.1:5859\n}\n"
        )

    def start(self, port: int) -> None:
        subprocess.Popen(
            [str(self.production.botserver)],
            env={**os.environ, "PORT": str(port)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert wait_for(lambda: answers(port))

    def settings(self) -> Settings:
        mapping = self.production.settings_mapping()
        mapping["targets"]["proxy"] = {"ssh": self.production.ssh_alias, "lxc": PROXY}
        mapping["components"]["botserver"].update(
            health="http://localhost:{port}/health",
            switch={
                "ports": self.ports,
                "proxy": "proxy",
                "caddyfile": str(self.production.caddyfile),
                "upstream_host": "127.0.0.1",
            },
        )
        merged = {name: dict(section) for name, section in DEFAULTS.items()}
        for name, section in mapping.items():
            merged[name] = (
                section
                if name in ("targets", "components")
                else {
                    **merged[name],
                    **section,
                }
            )
        return Settings.from_mapping(merged)

    def findings(self) -> dict[str, tuple[str, str]]:
        settings = self.settings()
        checks = [
            containers_check(settings.doctor),
            *switch_checks_of(settings, settings.component("botserver")),
        ]
        found = Doctor(settings).examine(checks)[1:]
        return {f.check: (f.status, f.saw) for f in found}


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def world(production: ProductionWorld, artifacts: Artifacts) -> Iterator[SwitchProduction]:
    made = SwitchProduction(production, artifacts)
    yield made
    kill_pids(pids_running(production.botserver))


def test_a_serving_switch_component_passes_every_check(world: SwitchProduction):
    live = world.ports[0]
    world.start(live)
    found = world.findings()

    assert list(found) == NAMES
    assert all(status == "pass" for status, _ in found.values()), found
    assert f"{live} by pid" in found[NAMES[0]][1]
    assert found[NAMES[2]][1].startswith(
        f"Caddy dials 127.0.0.1:{live} (line 8), which answers ok (commit {OLD}); "
        "set components.botserver.switch.site"
    )


def test_another_process_on_the_idle_port_fails_naming_it(world: SwitchProduction):
    live, idle = world.ports
    world.start(live)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", idle))
        squatter.listen()
        status, saw = world.findings()[NAMES[0]]
    assert status == "fail"
    assert f"port {idle} by {os.path.realpath('/proc/self/exe')}" in saw


def test_a_caddyfile_dialling_the_port_nothing_serves_fails(world: SwitchProduction):
    live, idle = world.ports
    world.start(live)
    world.dial(idle)
    status, saw = world.findings()[NAMES[2]]
    assert status == "fail"
    assert f"Caddy dials 127.0.0.1:{idle} (line 8), and from the proxy no answer" in saw


def test_a_caddyfile_dialling_both_ports_fails(world: SwitchProduction):
    world.start(world.ports[0])
    world.dial(*world.ports)
    status, saw = world.findings()[NAMES[2]]
    assert status == "fail"
    assert (
        f"dials 127.0.0.1 on both ports: {world.ports[0]} (line 8), {world.ports[1]} (line 8)"
        in saw
    )


def test_a_caddyfile_the_next_switch_would_refuse_fails(world: SwitchProduction):
    world.start(world.ports[0])
    world.dial(world.ports[0])
    path = world.production.caddyfile
    path.write_text(
        path.read_text() + f"\nhttp://x {{\n\tforward_auth 127.0.0.1:{world.ports[0]}\n}}\n"
    )
    status, saw = world.findings()[NAMES[2]]
    assert status == "fail"
    assert "the next switch would refuse" in saw and "forward_auth" in saw


def test_the_storage_rule_is_checked_in_the_caddyfile_the_switch_edits(world: SwitchProduction):
    world.start(world.ports[0])
    world.dial(world.ports[0], storage=False)
    status, saw = world.findings()[NAMES[3]]
    assert status == "fail"
    assert "no `storage`" in saw


def test_the_checks_show_in_the_plan_only_for_a_switch_component(world: SwitchProduction):
    plan = "\n".join(doctor_plan(world.settings()))
    for name in NAMES:
        assert f"{name}: on " in plan
    assert "switch-" not in "\n".join(doctor_plan(world.production.settings()))


def test_a_proxy_that_resets_queued_connections_on_reload_fails(world: SwitchProduction):
    """The proxy's kernel is read (here it is set: .ci/setup); its judge on the value 0."""
    from gbdeploy.doctor.switch import reload_keeps_connections_check
    from gbdeploy.remote.connection import CommandResult

    settings = world.settings()
    check = reload_keeps_connections_check(settings.component("botserver"), PROXY)
    verdict = check.judge(CommandResult(check.command, 0, "0\n", ""))
    assert verdict.status == "fail"
    assert "net.ipv4.tcp_migrate_req = 0: each caddy reload resets" in verdict.saw
    assert "sysctl -w net.ipv4.tcp_migrate_req=1" in check.fix
    assert world.findings()[NAMES[4]] == ("pass", "net.ipv4.tcp_migrate_req = 1")


def test_botui_dialling_botserver_on_a_switched_port_fails(world: SwitchProduction):
    """The operations guide's BOTSERVER_URL=http://localhost:5858 reaches botserver directly: a
    switch moves it to the other port every other deploy."""
    live, idle = world.ports
    world.start(live)
    world.production.standins.add_unit(
        "ui.service",
        exec_start=str(world.production.botui),
        environment={"BOTSERVER_URL": f"http://localhost:{live}", "PORT": "5859"},
    )
    status, saw = world.findings()[NAMES[1]]
    assert status == "fail"
    assert f"BOTSERVER_URL=http://localhost:{live} dials botserver on port {live} directly" in saw
    assert f"after a switch to {idle} it reaches nothing" in saw
