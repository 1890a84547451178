"""Checks per component, where its binary lives: its owner, no systemd unit beside a process-mode
service, and an ssh user that can stop the service."""

from __future__ import annotations

from ..config import Component
from ..connection import CommandResult, quote
from ..doctor_parsers import parse_unit_table
from .model import ACTIVE_STATES, Check, Repair, Verdict, output_of


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


UNITS_COMMAND = (
    "command -v systemctl >/dev/null || exit 127; "
    "systemctl list-units --type=service --all --plain --no-legend --no-pager | "
    "while read -r unit load active rest; do "
    'printf \'%s\\t%s\\t%s\\t%s\\n\' "$unit" "$active" '
    '"$(systemctl is-enabled "$unit" 2>/dev/null)" '
    '"$(systemctl show -p ExecStart --value "$unit")"; done'
)
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
