"""Checks for a component deployed with `--strategy switch` behind Caddy: its two ports, the
upstream Caddy dials for it, and the proxy's rules (storage in the Caddyfile the switch edits, and
a kernel that hands a closing listener's queued connections to the new one on a reload)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

from ..caddyfile import CaddyfileRefused, dialled_ports, switch_upstream
from ..config import Component, DoctorSettings, Switch
from ..remote.connection import CommandResult, quote
from ..remote.probes import Health, probe_health
from .model import Check, FollowUp, Verdict, doctor_call, output_of, read_command
from .parsers import ParseError, parse_environment, split_sections
from .proxy import caddy_storage_check

MIGRATE_REQUESTS = "/proc/sys/net/ipv4/tcp_migrate_req"


def switch_checks(d: DoctorSettings, component: Component, system: str, proxy: str) -> list[Check]:
    """The checks of a switch component: its ports where it runs (`system`), the rest where
    Caddy runs (`proxy`)."""
    switch = component.switch
    assert switch is not None
    storage = caddy_storage_check(replace(d, caddyfile=switch.caddyfile), proxy)
    direct = (
        [direct_client_check(d, component, switch, system)] if component.name == "botserver" else []
    )
    return [
        ports_check(component, switch, system),
        *direct,
        upstream_check(component, switch, proxy),
        replace(storage, name=f"proxy.switch-caddy-storage.{component.name}"),
        reload_keeps_connections_check(component, proxy),
    ]


def listeners_command(ports: list[int]) -> str:
    """For each port, `### PORT` then `PID EXE` of each process listening on it (`? ?` for a
    socket whose process this user cannot see)."""
    return doctor_call("listeners", *(int(p) for p in ports))


def ports_check(component: Component, switch: Switch, container: str) -> Check:
    name, binary = component.name, component.binary

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"listing listeners failed: {output_of(result)}")
        sections = split_sections(result.stdout)
        served, foreign = [], []
        for port in switch.ports:
            for line in sections.get(str(port), "").splitlines():
                pid, _, exe = line.partition(" ")
                if exe.removesuffix(" (deleted)") == binary:
                    served.append(f"{port} by pid {pid}")
                else:
                    foreign.append(f"{port} by {exe or '?'} (pid {pid})")
        if foreign:
            return Verdict(
                "fail",
                f"port {', '.join(foreign)}, not {binary}: a switch would start {name} on a "
                "port another process holds, or send traffic to it",
                f"free the port or choose two others in components.{name}.switch.ports",
            )
        if not served:
            return Verdict("pass", f"ports {switch.ports[0]} and {switch.ports[1]} are free")
        return Verdict("pass", f"served by {binary} only: {'; '.join(served)}")

    return Check(
        f"system.switch-ports.{name}",
        container,
        listeners_command(switch.ports),
        judge,
        f"only {binary} may listen on {switch.ports[0]} and {switch.ports[1]}",
        when_missing="skip",
    )


def direct_client_check(
    d: DoctorSettings, component: Component, switch: Switch, container: str
) -> Check:
    """botui reaches botserver at BOTSERVER_URL, by the operations guide http://localhost:5858:
    a port a switch takes away every other deploy."""
    unit, name = d.botui_unit, component.name

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("pass", f"{unit}: {output_of(result)}: no direct client found")
        url = parse_environment(result.stdout.strip()).get("BOTSERVER_URL", "")
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return Verdict("pass", f"{unit}: BOTSERVER_URL={url!r} names no port of {name}")
        if _is_loopback(parts.hostname or "") and port in switch.ports:
            return Verdict(
                "fail",
                f"{unit}: BOTSERVER_URL={url} dials {name} on port {port} directly, not through "
                f"Caddy: after a switch to {switch.idle_port(port)} it reaches nothing",
            )
        return Verdict(
            "pass", f"{unit}: BOTSERVER_URL={url or '(unset)'}: not a port a switch moves"
        )

    return Check(
        f"system.switch-direct-clients.{name}",
        container,
        f"systemctl show -p Environment --value {quote(unit)}",
        judge,
        f"point BOTSERVER_URL of {unit} at an address that follows the switch (Caddy's), or "
        f"deploy {name} without switch",
        when_missing="skip",
    )


_HOST_PORT = re.compile(r"(?:[a-z][a-z0-9+.-]*://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})\b")


def direct_env_dials(components: Iterable[Component], component: Component) -> list[str]:
    """`components.OTHER.env.NAME=VALUE` for each other component whose environment dials
    `component` on one of its switch ports directly (loopback, or its upstream_host), not
    through Caddy: the operations guide's botui `BOTSERVER_URL=http://localhost:5858`."""
    switch = component.switch
    assert switch is not None
    hosts = {switch.upstream_host.strip("[]").lower()}
    found = []
    for other in components:
        if other.name == component.name:
            continue
        for key, value in other.env.items():
            for match in _HOST_PORT.finditer(value):
                host, port = match.group(1).strip("[]").lower(), int(match.group(2))
                if port in switch.ports and (_is_loopback(host) or host in hosts):
                    found.append(f"components.{other.name}.env.{key}={value}")
                    break
    return found


def direct_env_check(components: Iterable[Component], component: Component, place: str) -> Check:
    """The config's side of `direct_client_check`: a gbdeploy component started with an
    environment that dials a switch component's port reaches nothing after the next switch."""
    name, switch = component.name, component.switch
    assert switch is not None
    dials = direct_env_dials(components, component)

    def judge(result: CommandResult) -> Verdict:
        if dials:
            return Verdict(
                "fail",
                f"{'; '.join(dials)}: dials {name} on a port a switch moves "
                f"({switch.ports[0]}/{switch.ports[1]}), not through Caddy",
            )
        return Verdict("pass", f"no component's env dials {name} on its ports directly")

    return Check(
        f"config.switch-direct-env.{name}",
        place,
        "true",  # judged on gbdeploy.yaml alone
        judge,
        f"point it at the address Caddy serves {name} on (the site whose reverse_proxy dials "
        f"{switch.upstream_host}:PORT), so it follows every switch",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def upstream_check(component: Component, switch: Switch, container: str) -> Check:
    """The Caddyfile dials the component's host on exactly one of its two ports, the next switch
    could change it, and the component answers health there, as Caddy reaches it."""
    name, host, path = component.name, switch.upstream_host, switch.caddyfile

    def judge(result: CommandResult) -> Verdict | FollowUp:
        if not result.ok:
            return Verdict("fail", f"cannot read {path}: {output_of(result)}")
        try:
            dialled = dialled_ports(result.stdout, host)
        except CaddyfileRefused as refused:
            raise ParseError(refused.message) from None
        live = [p for p in switch.ports if p in dialled]
        if len(live) != 1:
            seen = ", ".join(f"{p} (line {', '.join(map(str, dialled[p]))})" for p in live)
            return Verdict(
                "fail",
                f"{path} dials {host} on "
                + (
                    f"both ports: {seen}"
                    if live
                    else f"neither {switch.ports[0]} nor "
                    f"{switch.ports[1]} (it dials {host} on {sorted(dialled) or 'no port'})"
                ),
                f"make the reverse_proxy of {name} dial {host}:PORT, PORT the one of "
                f"components.{name}.switch.ports that serves; back up, validate, reload",
            )
        port = live[0]
        try:
            switch_upstream(result.stdout, host, port, switch.idle_port(port))
        except CaddyfileRefused as refused:
            return Verdict("fail", f"the next switch would refuse {path}: {refused.message}")
        probe = probe_health(health_through(component, host, port))
        lines = ", ".join(map(str, dialled[port]))
        return FollowUp(probe.command, lambda answer: answered(port, lines, probe.parse(answer)))

    def answered(port: int, lines: str, health: Health) -> Verdict:
        if health.ok:
            commit = f" (commit {health.commit})" if health.commit else ""
            unconfirmed = (
                ""
                if switch.site
                else f"; set components.{name}.switch.site (the address users reach {name} by "
                "through Caddy) so that a switch confirms the new commit answers there"
            )
            return Verdict(
                "pass",
                f"Caddy dials {host}:{port} (line {lines}), which answers ok{commit}{unconfirmed}",
            )
        return Verdict(
            "fail",
            f"Caddy dials {host}:{port} (line {lines}), and from the proxy {health.describe()}",
            f"start {name} on {port}, or deploy it again with --strategy switch",
        )

    return Check(
        f"proxy.switch-upstream.{name}",
        container,
        read_command(path),
        judge,
        f"the reverse_proxy of {name} in {path} must dial {host} on the port that serves",
    )


def health_through(component: Component, host: str, port: int) -> str:
    """The component's health URL as Caddy reaches it: its path on `host:port`."""
    assert component.health is not None
    parts = urlsplit(component.on_port(port).health or "")
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def reload_keeps_connections_check(component: Component, container: str) -> Check:
    def judge(result: CommandResult) -> Verdict:
        value = result.stdout.strip()
        if result.ok and value == "1":
            return Verdict("pass", "net.ipv4.tcp_migrate_req = 1")
        saw = f"net.ipv4.tcp_migrate_req = {value}" if result.ok else output_of(result)
        return Verdict(
            "fail",
            f"{saw}: each caddy reload resets the connections still queued on the listener it "
            "closes (Caddy binds a new SO_REUSEPORT socket per config), so a switch under load "
            "fails a few requests",
        )

    return Check(
        f"proxy.switch-reload-keeps-connections.{component.name}",
        container,
        read_command(MIGRATE_REQUESTS),
        judge,
        "in the proxy container: `sysctl -w net.ipv4.tcp_migrate_req=1` and "
        "`echo net.ipv4.tcp_migrate_req=1 > /etc/sysctl.d/60-gbdeploy-switch.conf` "
        "(Linux 5.14 or later)",
    )
