"""Checks per component, where its binary lives: its owner, no systemd unit beside a process-mode
service, and an ssh user that can stop the service."""

from __future__ import annotations

from ..config import Component
from ..remote.connection import CommandResult, quote
from .model import ACTIVE_STATES, Check, Repair, Verdict, doctor_call, output_of
from .parsers import parse_process_owners, parse_unit_table


def owner_check(component: Component, container: str) -> Check:
    binary, user = component.binary, component.user
    owner = f"{user}:{user}"

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict(
                "fail",
                f"{binary}: {output_of(result)}",
                f"deploy it: gbdeploy deploy {component.name} --artifact PATH",
            )
        found = result.stdout.strip()
        if found.split(":")[0] == user:
            return Verdict("pass", f"{binary} is owned by {found}")
        return Verdict("fail", f"{binary} is owned by {found}, not {user}")

    def repair(result: CommandResult) -> Repair | str:
        if not result.ok:
            return f"{binary} is not there"
        return Repair(
            f"chowned {binary} to {owner} (was {result.stdout.strip()})",
            f"chown -- {quote(owner)} {quote(binary)}",
        )

    return Check(
        f"system.owner.{component.name}",
        container,
        f"stat -c %U:%G -- {quote(binary)}",
        judge,
        f"chown -- {quote(owner)} {quote(binary)}  (gbdeploy doctor --fix does this)",
        repair=repair,
    )


UNITS_COMMAND = doctor_call("service_units")
ENABLED_STATES = ("enabled", "enabled-runtime")


def not_in_systemd_check(component: Component, container: str) -> Check:
    binary = component.binary

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"listing systemd units failed: {output_of(result)}")
        runs_it = [u for u in parse_unit_table(result.stdout) if u.exec_path == binary]
        # Active, it restarts the old binary behind a deploy; enabled, it starts a second copy
        # at the next boot.
        managing = [u for u in runs_it if u.active in ACTIVE_STATES or u.enabled in ENABLED_STATES]
        if managing:
            units = ", ".join(f"{u.unit} ({u.active}, {u.enabled or '?'})" for u in managing)
            return Verdict(
                "fail",
                f"{units} runs {binary}, but components.{component.name}.restart is `process`: "
                "systemd restarts or boots the old binary beside the deployed one",
                f"either let systemd manage it (components.{component.name}.restart: "
                f"{{systemd: {managing[0].unit}}}) or `systemctl disable --now "
                f"{quote(managing[0].unit)}` and run it as a process",
            )
        idle = ", ".join(f"{u.unit} ({u.active}, {u.enabled or '?'})" for u in runs_it)
        return Verdict(
            "pass",
            f"no active or enabled unit runs {binary}" + (f"; idle: {idle}" if idle else ""),
        )

    return Check(
        f"system.not-in-systemd.{component.name}",
        container,
        UNITS_COMMAND,
        judge,
        "",
        when_missing="skip",
    )


def process_owners_command(binary: str) -> str:
    """`PID USER` of every process running exactly `binary` (by /proc/PID/exe)."""
    return doctor_call("process_owners", binary)


def ssh_user_check(component: Component, container: str, ssh_user: str, target: str) -> Check:
    """The deploy stops the service as the target's ssh user: that must be root or the service
    user, and a service user can signal only its own processes."""
    name, user, binary = component.name, component.user, component.binary
    who = f"the ssh user of target {target} ({ssh_user})"

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"listing processes failed: {output_of(result)}")
        owners = parse_process_owners(result.stdout)
        running = ", ".join(f"pid {pid} as {owner}" for pid, owner in owners) or "not running"
        if ssh_user == "root":
            return Verdict("pass", f"{who} can signal any process; {binary}: {running}")
        if ssh_user != user:
            return Verdict(
                "fail",
                f"{who} is neither root nor {user}: the deploy cannot stop {name} "
                f"({binary}: {running})",
            )
        foreign = [(pid, owner) for pid, owner in owners if owner != user]
        if foreign:
            return Verdict(
                "fail",
                f"{who} cannot signal {binary} running as "
                + ", ".join(f"{owner} (pid {pid})" for pid, owner in foreign),
                f"stop it as root and start it as {user} (gbdeploy deploy does), or ssh as root",
            )
        return Verdict("pass", f"{who} is the service user; {binary}: {running}")

    return Check(
        f"system.ssh-user-signals.{name}",
        container,
        process_owners_command(binary),
        judge,
        f"ssh to target {target} as root or as {user} (User in the ssh config's Host entry)",
    )
