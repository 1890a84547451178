"""Which checks run, in which order, and the exact commands they run (`--dry-run`'s plan)."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Component, DoctorSettings, Settings
from ..errors import ConfigError
from ..remote.connection import Remote
from .ci_runner import cache_cleanup_check, cache_size_check, maintenance_workflow_jobs
from .components import not_in_systemd_check, owner_check, ssh_user_check
from .dns_email import corefile_acl_check, mail_jail_check
from .host import (
    containers_check,
    fail2ban_sshd_check,
    forward_rule_check,
    privileged_check,
    proxy_devices_check,
    runner_mounts_check,
    snapshots_check,
    ufw_forward_check,
    zfs_schedule_check,
)
from .model import Check, container_tool, disabled_check, shown, where
from .proxy import (
    caddy_storage_check,
    caddy_valid_check,
    caddy_vhosts_check,
    dead_domains_check,
    flood_jail_check,
    proxy_sshd_jail_check,
)
from .switch import direct_env_check, switch_checks
from .system import botui_url_check, loopback_check, valkey_check, vault_init_check


def in_container(
    role: str, container: str | None, make: Callable[[str], list[Check]]
) -> list[Check]:
    """The checks `make` builds for a container, or each of them skipped when `doctor.ROLE` is
    null (built with a placeholder name only to know their names)."""
    if container:
        return make(container)
    return [disabled_check(check.name, role) for check in make("-")]


def build_checks(settings: Settings) -> list[Check]:
    """Every check, in the order they run and print. The first lists the host's containers."""
    d = settings.doctor
    tool = container_tool(d)
    checks = [containers_check(d)]
    checks += in_container("system", d.system, lambda c: [privileged_check(c, tool)])
    checks += in_container("ci_runner", d.ci_runner, lambda c: [runner_mounts_check(c, tool)])
    checks += [
        proxy_devices_check(d),
        snapshots_check(d),
        zfs_schedule_check(d),
        ufw_forward_check(d),
        forward_rule_check(d),
        fail2ban_sshd_check(),
    ]
    checks += in_container(
        "system",
        d.system,
        lambda c: [
            loopback_check(d, c),
            valkey_check(d, c),
            botui_url_check(d, c),
            vault_init_check(d, c),
        ],
    )
    for component in settings.components.values():
        checks += in_container(
            "system",
            container_of(settings, component),
            lambda c, component=component: component_checks(settings, component, c),
        )
    checks += in_container(
        "proxy",
        d.proxy,
        lambda c: [
            caddy_storage_check(d, c),
            caddy_valid_check(d, c),
            caddy_vhosts_check(d, c),
            dead_domains_check(d, c),
            flood_jail_check(d, c),
            proxy_sshd_jail_check(d, c),
        ],
    )
    for component in settings.components.values():
        if component.switch is not None:
            checks += switch_checks_of(settings, component)
    checks += in_container("dns", d.dns, lambda c: [corefile_acl_check(d, c)])
    checks += in_container("email", d.email, lambda c: [mail_jail_check(d, c)])
    checks += in_container(
        "ci_runner",
        d.ci_runner,
        lambda c: [
            cache_size_check("sccache", settings.workflows.sccache_dir, d.sccache_max_gb, c),
            cache_size_check("cargo", settings.workflows.cargo_home, d.cargo_max_gb, c),
            cache_cleanup_check(settings, c, maintenance_workflow_jobs(settings)),
        ],
    )
    return checks


def component_checks(settings: Settings, component: Component, container: str) -> list[Check]:
    checks = [owner_check(component, container)]
    if component.restart.mode == "process":
        target = settings.target_of(component)
        ssh_user = Remote(target, settings.ssh).user  # from the ssh config; nothing connects
        checks += [
            not_in_systemd_check(component, container),
            ssh_user_check(component, container, ssh_user, target.name),
        ]
    return checks


def switch_checks_of(settings: Settings, component: Component) -> list[Check]:
    """A switch component's checks: where it runs, and where its `switch.proxy` target's Caddy
    runs (that target's container, else doctor.proxy); skipped where that is null."""
    assert component.switch is not None
    system = container_of(settings, component)
    proxy_target = settings.targets.get(component.switch.proxy)
    proxy = (proxy_target.container if proxy_target else None) or settings.doctor.proxy
    built = switch_checks(settings.doctor, component, system or "-", proxy or "-")
    built.append(direct_env_check(settings.components.values(), component, system or "-"))
    return [
        check
        if check.place != "-"
        else disabled_check(check.name, "system" if check.name.startswith("system.") else "proxy")
        for check in built
    ]


def container_of(settings: Settings, component: Component) -> str | None:
    """Where a component's binary lives: its target's container, else the system container."""
    target = settings.targets.get(component.target)
    return (target.container if target else None) or settings.doctor.system


def doctor_plan(settings: Settings) -> list[str]:
    """The exact commands, one line per check: `NAME: on WHERE: COMMAND`."""
    host = require_host(settings.doctor)
    tool = container_tool(settings.doctor)
    return [
        f"{c.name}: skipped ({c.disabled})"
        if c.disabled
        else f"{c.name}: on {where(c.place, host, tool)}: {shown(c.command)}"
        for c in build_checks(settings)
    ]


def require_host(d: DoctorSettings) -> str:
    """doctor.host, once the doctor settings are usable (ConfigError, exit 2, otherwise)."""
    if not d.host:
        raise ConfigError(
            "doctor.host",
            "is not set: doctor checks the LXD host over ssh and needs its ssh Host alias",
            hint="add `doctor: {host: ALIAS}` to gbdeploy.yaml, ALIAS being the Host entry in "
            "~/.ssh/config of the machine where `lxc list` shows pragmatismo-system",
        )
    return d.host
