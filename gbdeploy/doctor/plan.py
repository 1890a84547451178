"""Which checks run, in which order, and the exact commands they run (`--dry-run`'s plan)."""

from __future__ import annotations

from ..config import Component, DoctorSettings, Settings
from ..errors import ConfigError
from .ci_runner import cache_size_check
from .components import not_in_systemd_check, owner_check
from .dns_email import corefile_acl_check
from .host import (
    containers_check,
    privileged_check,
    proxy_devices_check,
    runner_mounts_check,
    snapshots_check,
)
from .model import Check, disabled_check, where
from .proxy import caddy_storage_check, caddy_valid_check, caddy_vhosts_check
from .system import botui_url_check, loopback_check, valkey_check


def build_checks(settings: Settings) -> list[Check]:
    """Every check, in the order they run and print. The first lists the host's containers."""
    d = settings.doctor
    checks = [containers_check(d)]
    checks.append(
        privileged_check(d.system)
        if d.system
        else disabled_check("host.system-privileged", "system")
    )
    checks.append(
        runner_mounts_check(d.ci_runner)
        if d.ci_runner
        else disabled_check("host.ci-runner-no-host-mounts", "ci_runner")
    )
    checks += [proxy_devices_check(d), snapshots_check(d)]
    if d.system:
        checks += [
            loopback_check(d, d.system),
            valkey_check(d, d.system),
            botui_url_check(d, d.system),
        ]
    else:
        checks += [
            disabled_check(n, "system")
            for n in ("system.loopback-accept", "system.valkey-ping", "system.botui-botserver-url")
        ]
    for component in settings.components.values():
        container = container_of(settings, component)
        if container is None:
            checks.append(disabled_check(f"system.owner.{component.name}", "system"))
            continue
        checks.append(owner_check(component, container))
        if component.restart.mode == "process":
            checks.append(not_in_systemd_check(component, container))
    if d.proxy:
        checks += [
            caddy_storage_check(d, d.proxy),
            caddy_valid_check(d, d.proxy),
            caddy_vhosts_check(d, d.proxy),
        ]
    else:
        checks += [
            disabled_check(n, "proxy")
            for n in ("proxy.caddy-storage", "proxy.caddy-valid", "proxy.caddy-vhosts")
        ]
    checks.append(
        corefile_acl_check(d, d.dns) if d.dns else disabled_check("dns.corefile-acl", "dns")
    )
    if d.ci_runner:
        checks += [
            cache_size_check("sccache", d.sccache_dir, d.sccache_max_gb, d.ci_runner),
            cache_size_check("cargo", d.cargo_home, d.cargo_max_gb, d.ci_runner),
        ]
    else:
        checks += [disabled_check(n, "ci_runner") for n in ("ci.sccache-size", "ci.cargo-size")]
    return checks


def container_of(settings: Settings, component: Component) -> str | None:
    """Where a component's binary lives: its target's container, else the system container."""
    target = settings.targets.get(component.target)
    return (target.lxc if target else None) or settings.doctor.system


def doctor_plan(settings: Settings) -> list[str]:
    """The exact commands, one line per check: `NAME: on WHERE: COMMAND`."""
    host = require_host(settings.doctor)
    return [
        f"{c.name}: skipped ({c.disabled})"
        if c.disabled
        else f"{c.name}: on {where(c.place, host)}: {c.command}"
        for c in build_checks(settings)
    ]


def require_host(d: DoctorSettings) -> str:
    if not d.host:
        raise ConfigError(
            "doctor.host",
            "is not set: doctor checks the LXD host over ssh and needs its ssh Host alias",
            hint="add `doctor: {host: ALIAS}` to gbdeploy.yaml, ALIAS being the Host entry in "
            "~/.ssh/config of the machine where `lxc list` shows pragmatismo-system",
        )
    return d.host
