"""`doctor`: the production invariants of the operations guide, checked on the LXD host.

`doctor` reaches the LXD host over ssh (`doctor.host`); host-level checks run there (`lxc config
show`, `zfs list`), and checks inside a container run through `lxc exec NAME -- sh -c '…'` on that
host. Every check is a small value: a name, where it runs, the one exact command it runs, a judge
that turns the command's result into pass/fail/skip with what it saw, the fix to apply by hand,
and — only for the few repairs that are safe — a repair that `--fix` runs:

- the loopback ACCEPT rule in the system container (inserted first in INPUT, then persisted),
- a component binary's owner (chown),
- the Caddyfile's `storage file_system` (added to the global block after a backup, validated,
  reloaded; never when the file looks partial or fails to validate; rolled back if reload fails).

Nothing else is changed: what needs a restart, a deletion or a judgement is printed as the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from .config import Component, DoctorSettings, Settings, Target
from .connection import CommandResult, Remote, quote
from .doctor_parsers import (
    CONTAINER_MARKER,
    ParseError,
    loopback_verdict,
    parse_caddyfile,
    parse_config_dump,
    parse_corefile,
    parse_du_bytes,
    parse_environment,
    parse_iptables_chain,
    parse_lxc_config,
    parse_unit_table,
    parse_zfs_snapshots,
    stale_snapshots,
    with_file_system_storage,
)
from .errors import ConfigError, DoctorFailed, RemoteError
from .output import Reporter, human_bytes

Status = Literal["pass", "fail", "skip"]
GIB = 1024**3
COMMAND_TIMEOUT = 60.0
VALKEY_TIMEOUT = 10
ACTIVE_STATES = ("active", "activating", "reloading")
LIST_CONTAINERS = "lxc list --format csv -c n"


@dataclass(frozen=True)
class Finding:
    """One line of the report; `to_json` is DESIGN.md's fixed format."""

    check: str
    status: Status
    saw: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "saw": self.saw, "fix": self.fix}


@dataclass(frozen=True)
class Verdict:
    status: Status
    saw: str
    fix: str | None = None  # None: the check's own fix text (shown unless the check passes)


@dataclass(frozen=True)
class Repair:
    says: str  # what it changes, in the words the user reads
    command: str  # the exact command, run where the check runs


Judge = Callable[[CommandResult], Verdict]
Repairer = Callable[[CommandResult], "Repair | str"]  # a str says why it is not safe now


@dataclass(frozen=True)
class Check:
    name: str
    place: str | None  # a container on the LXD host; None for the host itself
    command: str
    judge: Judge
    fix: str
    when_missing: Status = "fail"  # the status when the command is not installed (exit 127)
    repair: Repairer | None = None
    disabled: str | None = None  # why it is not run (a container set to null)


def _where(place: str | None, host: str) -> str:
    return f"{host}: lxc exec {place}" if place else host


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _output(result: CommandResult) -> str:
    return _last_line(result.stderr) or _last_line(result.stdout) or f"exit {result.exit_code}"


# --- the LXD host ------------------------------------------------------------------------------
def containers_check(d: DoctorSettings) -> Check:
    wanted = {
        role: name for role in ("system", "ci_runner", "proxy", "dns") if (name := getattr(d, role))
    }

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"`{LIST_CONTAINERS}` failed: {_output(result)}")
        present = container_names(result.stdout)
        missing = {role: name for role, name in wanted.items() if name not in present}
        if not missing:
            return Verdict("pass", f"present: {', '.join(wanted.values())}")
        listed = ", ".join(sorted(present)) or "none"
        return Verdict(
            "fail",
            f"missing: {', '.join(f'{n} (doctor.{r})' for r, n in missing.items())}; "
            f"the host has: {listed}",
            f"set {', '.join(f'doctor.{r}' for r in missing)} to the container's real name, or to "
            "null to skip its checks",
        )

    return Check(
        "host.containers",
        None,
        LIST_CONTAINERS,
        judge,
        "make sure the ssh user on doctor.host is in the `lxd` group (`lxc list` must work)",
    )


def container_names(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip()}


def privileged_check(name: str) -> Check:
    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"lxc config show failed: {_output(result)}")
        config = parse_lxc_config(result.stdout)
        value = config.config.get("security.privileged", "unset")
        if config.privileged:
            return Verdict("pass", f"{name}: security.privileged: {value}")
        return Verdict(
            "fail",
            f"{name}: security.privileged is {value} (botserver must own the /opt/gbo mounts)",
        )

    return Check(
        "host.system-privileged",
        None,
        f"lxc config show {quote(name)} --expanded",
        judge,
        f"lxc config set {quote(name)} security.privileged true && lxc restart {quote(name)}  "
        "(restarts botserver and botui: pick a quiet moment)",
    )


def runner_mounts_check(name: str) -> Check:
    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"lxc config show failed: {_output(result)}")
        disks = [d for d in parse_lxc_config(result.stdout).devices if d.type == "disk"]
        mounts = [d for d in disks if d.is_host_mount]
        if not mounts:
            return Verdict("pass", f"{name}: {len(disks)} disk device(s), all from storage pools")
        return Verdict(
            "fail",
            f"{name} mounts host paths: "
            + ", ".join(f"{d.name} ({d.source} -> {d.path})" for d in mounts),
            "; ".join(f"lxc config device remove {quote(name)} {quote(d.name)}" for d in mounts)
            + "  (deploy over ssh instead; then delete the snapshots taken while they were "
            "mounted, see host.zfs-snapshots)",
        )

    return Check(
        "host.ci-runner-no-host-mounts",
        None,
        f"lxc config show {quote(name)} --expanded",
        judge,
        "remove the disk devices that are not storage-pool volumes",
    )


def proxy_devices_check(d: DoctorSettings) -> Check:
    command = (
        f"for c in $({LIST_CONTAINERS}); do printf '{CONTAINER_MARKER}%s\\n' \"$c\"; "
        'lxc config show "$c" --expanded; done'
    )

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"listing devices failed: {_output(result)}")
        where: dict[int, list[str]] = {}
        for container, config in parse_config_dump(result.stdout).items():
            for device in config.devices:
                for port in device.listen_ports:
                    where.setdefault(port, []).append(container)
        required = list(dict.fromkeys(d.proxy_ports))
        missing = [p for p in required if p not in where]
        by_container: dict[str, list[int]] = {}
        for port in required:
            for container in where.get(port, []):
                by_container.setdefault(container, []).append(port)
        found = "; ".join(
            f"{', '.join(map(str, ports))} on {c}" for c, ports in sorted(by_container.items())
        )
        if not missing:
            return Verdict("pass", f"all {len(required)} ports: {found}")
        return Verdict(
            "fail",
            f"no proxy device listens on {', '.join(map(str, missing))}"
            + (f" (found: {found})" if found else ""),
            "for each missing port, on the container that serves it: lxc config device add "
            "CONTAINER NAME proxy listen=tcp:0.0.0.0:PORT connect=tcp:127.0.0.1:PORT (port 53 "
            "needs a udp one too); never remove these devices",
        )

    return Check("host.proxy-devices", None, command, judge, "")


def snapshots_check(d: DoctorSettings) -> Check:
    days = d.snapshot_retention_days

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"zfs list failed: {_output(result)}")
        now_line, _, listing = result.stdout.partition("\n")
        if not now_line.strip().isdigit():
            raise ParseError(f"expected the host's time first, got {now_line!r}")
        snapshots = parse_zfs_snapshots(listing)
        stale = stale_snapshots(snapshots, now=int(now_line), retention_days=days)
        if not stale:
            return Verdict("pass", f"{len(snapshots)} snapshot(s), none older than {days} days")
        held = human_bytes(sum(s.used for s in stale))
        shown = ", ".join(
            f"{s.name} ({(int(now_line) - s.created) // 86400} days, {human_bytes(s.used)})"
            for s in stale[:5]
        )
        more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
        return Verdict(
            "fail",
            f"{len(stale)} snapshot(s) older than {days} days hold {held}: {shown}{more}",
            "; ".join(f"zfs destroy {quote(s.name)}" for s in stale[:5])
            + (" …" if more else "")
            + "  (check each is not needed first; the daily cron should keep "
            f"{days} days)",
        )

    return Check(
        "host.zfs-snapshots",
        None,
        "date +%s && zfs list -H -p -t snapshot -o name,creation,used",
        judge,
        "",
        when_missing="skip",
    )


# --- the system container ----------------------------------------------------------------------
def loopback_check(d: DoctorSettings, container: str) -> Check:
    rules_file = d.iptables_rules_file
    insert = "iptables -I INPUT 1 -i lo -j ACCEPT"
    persist = (
        f"mkdir -p -- {quote(os.path.dirname(rules_file) or '/')} && "
        f"iptables-save > {quote(rules_file)}"
    )

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"iptables -S INPUT failed: {_output(result)}")
        verdict = loopback_verdict(parse_iptables_chain(result.stdout))
        return Verdict("pass" if verdict.ok else "fail", verdict.saw)

    def repair(result: CommandResult) -> Repair | str:
        return Repair(
            f"inserted `-A INPUT -i lo -j ACCEPT` as rule 1 of INPUT in {container} and saved "
            f"the rules to {rules_file}",
            f"{insert} && {persist}",
        )

    return Check(
        "system.loopback-accept",
        container,
        "iptables -S INPUT",
        judge,
        f"{insert} && {persist}  (gbdeploy doctor --fix does this)",
        when_missing="skip",
        repair=repair,
    )


def valkey_check(d: DoctorSettings, container: str) -> Check:
    command = f"timeout {VALKEY_TIMEOUT} {quote(d.valkey_cli)} -h 127.0.0.1 -p 6379 ping"

    def judge(result: CommandResult) -> Verdict:
        answer = result.stdout.strip()
        if result.ok and answer == "PONG":
            return Verdict("pass", "PONG from 127.0.0.1:6379")
        if result.exit_code == 124:
            return Verdict("fail", f"no answer from 127.0.0.1:6379 within {VALKEY_TIMEOUT}s")
        return Verdict("fail", f"127.0.0.1:6379 answered {answer or _output(result)!r}")

    return Check(
        "system.valkey-ping",
        container,
        command,
        judge,
        "make system.loopback-accept pass first (a DROP rule on 6379 blocks loopback), check "
        "Valkey runs, then restart botserver so it reconnects",
    )


def botui_url_check(d: DoctorSettings, container: str) -> Check:
    unit = d.botui_unit
    expected = d.botserver_url.rstrip("/")

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"{unit}: {_output(result)}")
        url = parse_environment(result.stdout.strip()).get("BOTSERVER_URL")
        if url is None:
            return Verdict(
                "fail",
                f"BOTSERVER_URL is not set in {unit}'s Environment= "
                "(EnvironmentFile= is not read by this check)",
            )
        if url.rstrip("/") == expected:
            return Verdict("pass", f"{unit}: BOTSERVER_URL={url}")
        return Verdict(
            "fail",
            f"{unit}: BOTSERVER_URL={url} (the external URL drops the WebSocket before TALK runs)",
        )

    return Check(
        "system.botui-botserver-url",
        container,
        f"systemctl show -p Environment --value {quote(unit)}",
        judge,
        f"systemctl edit {quote(unit)}: [Service] Environment=BOTSERVER_URL={expected}; then "
        f"systemctl restart {quote(unit)}",
        when_missing="skip",
    )


def owner_check(component: Component, container: str) -> Check:
    binary, user = component.binary, component.user
    owner = f"{user}:{user}"

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict(
                "fail",
                f"{binary}: {_output(result)}",
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
            return Verdict("fail", f"listing systemd units failed: {_output(result)}")
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


# --- the proxy container -----------------------------------------------------------------------
def _read(path: str) -> str:
    return f"cat -- {quote(path)}"


def caddy_storage_check(d: DoctorSettings, container: str) -> Check:
    path, root, caddy = d.caddyfile, d.caddy_storage_root, d.caddy

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict(
                "fail",
                f"cannot read {path}: {_output(result)}",
                "set doctor.caddyfile to the Caddyfile's path",
            )
        summary = parse_caddyfile(result.stdout)
        if summary.stores_on_file_system and summary.storage:
            return Verdict("pass", f"storage file_system, root {summary.storage.root or '?'}")
        if summary.storage:
            return Verdict("fail", f"storage {summary.storage.module}, not file_system")
        place = "global options block" if summary.global_block_line else "file (no global block)"
        return Verdict(
            "fail",
            f"no `storage` in the {place}: Caddy keeps certificates in "
            "~/.local/share/caddy and loses them on restart",
        )

    def repair(result: CommandResult) -> Repair | str:
        if not result.ok:
            return f"cannot read {path}"
        summary = parse_caddyfile(result.stdout)
        if summary.storage is not None:
            return f"{path} already sets storage {summary.storage.module}: change it by hand"
        if summary.vhost_count < d.min_vhosts:
            return (
                f"{path} has only {summary.vhost_count} site addresses (minimum {d.min_vhosts}): "
                "it looks partial, and reloading it would drop sites"
            )
        candidate = with_file_system_storage(result.stdout, root)
        return Repair(
            f"added `storage file_system {{ root {root} }}` to the global block of {path} "
            "(backup, validate, reload)",
            caddy_storage_script(path, result.stdout, candidate, root=root, caddy=caddy),
        )

    return Check(
        "proxy.caddy-storage",
        container,
        _read(path),
        judge,
        f"add `storage file_system {{ root {root} }}` to the global block (copy the certificates "
        f"from ~/.local/share/caddy into {root} first), validate, then reload — or "
        "gbdeploy doctor --fix, once the storage root exists",
        repair=repair,
    )


def caddy_storage_script(path: str, original: str, candidate: str, *, root: str, caddy: str) -> str:
    """Backup → validate the new file → put it in place (same inode, owner, mode) → reload; on a
    failed reload the backup goes back and is reloaded. Refuses if the file changed since it was
    read, or the storage root does not exist yet (the certificates must be copied there first)."""
    digest = hashlib.sha256(original.encode()).hexdigest()
    f, new, c, r = quote(path), quote(path + ".gbdeploy-new"), quote(caddy), quote(root)
    adapter = "--adapter caddyfile"
    return "\n".join(
        [
            "set -e",
            f"test -d {r} || {{ echo 'storage root {root} does not exist: create it and copy the "
            "certificates from ~/.local/share/caddy into it first' >&2; exit 3; }",
            f"printf '%s  %s\\n' {digest} {f} | sha256sum -c --status || "
            f"{{ echo '{path} changed since doctor read it: run doctor again' >&2; exit 3; }}",
            f"trap 'rm -f {new}' EXIT",
            f"printf '%s' {quote(candidate)} > {new}",
            f"{c} validate --config {new} {adapter}",
            f"backup={f}.bak-$(date +%Y%m%d%H%M%S)",
            f'cp -p -- {f} "$backup"',
            f"cat {new} > {f}",
            f"{c} reload --config {f} {adapter} || "
            f'{{ cat "$backup" > {f}; {c} reload --config {f} {adapter}; '
            "echo 'reload failed: the backup is back in place' >&2; exit 4; }",
            'echo "backup: $backup"',
        ]
    )


def caddy_valid_check(d: DoctorSettings, container: str) -> Check:
    command = f"{quote(d.caddy)} validate --config {quote(d.caddyfile)} --adapter caddyfile"

    def judge(result: CommandResult) -> Verdict:
        if result.ok:
            return Verdict("pass", f"caddy validate: {_last_line(result.stdout + result.stderr)}")
        return Verdict("fail", f"caddy validate: {_output(result)}")

    return Check(
        "proxy.caddy-valid",
        container,
        command,
        judge,
        f"fix the error in a copy, validate the copy, then back up {d.caddyfile}, put the copy "
        "in place and `caddy reload` (never restart on an invalid file)",
    )


def caddy_vhosts_check(d: DoctorSettings, container: str) -> Check:
    path = d.caddyfile

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"cannot read {path}: {_output(result)}")
        summary = parse_caddyfile(result.stdout)
        count = summary.vhost_count
        imported = (
            f"; plus {len(summary.imports)} top-level import(s), not counted"
            if summary.imports
            else ""
        )
        if count >= d.min_vhosts:
            return Verdict(
                "pass",
                f"{count} site addresses in {len(summary.sites)} blocks "
                f"(minimum {d.min_vhosts}){imported}",
            )
        shown = ", ".join(a for site in summary.sites for a in site) or "none"
        return Verdict(
            "fail", f"only {count} site address(es) (minimum {d.min_vhosts}): {shown}{imported}"
        )

    return Check(
        "proxy.caddy-vhosts",
        container,
        _read(path),
        judge,
        f"this is a partial config: do not reload it. Restore the full one (ls -t {path}.bak-*), "
        f"validate, reload; lower doctor.min_vhosts only if sites were really removed",
    )


# --- the dns container -------------------------------------------------------------------------
def corefile_acl_check(d: DoctorSettings, container: str) -> Check:
    path = d.corefile

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict(
                "fail",
                f"cannot read {path}: {_output(result)}",
                "set doctor.corefile to the Corefile's path",
            )
        zones = parse_corefile(result.stdout)
        if not zones:
            return Verdict("fail", f"{path} has no server blocks")
        open_zones = [z for z in zones if not z.has_acl]
        if not open_zones:
            return Verdict("pass", f"{len(zones)} server block(s), each with acl")
        return Verdict(
            "fail",
            "no acl in: " + ", ".join(f"{' '.join(z.keys)} (line {z.line})" for z in open_zones),
        )

    return Check(
        "dns.corefile-acl",
        container,
        _read(path),
        judge,
        "add to each server block: acl { allow type ANY net 10.0.0.0/8 127.0.0.0/8; allow type "
        "A|AAAA|MX net 0.0.0.0/0; block } (one `allow` per line), then send CoreDNS SIGHUP",
    )


# --- the CI runner container -------------------------------------------------------------------
def cache_size_check(name: str, path: str, max_gb: float, container: str) -> Check:
    limit = int(max_gb * GIB)

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            if "No such file" in result.stderr:
                return Verdict("pass", f"{path} does not exist (nothing cached)")
            return Verdict("fail", f"du {path}: {_output(result)}")
        size = parse_du_bytes(result.stdout)
        verdict: Status = "pass" if size <= limit else "fail"
        return Verdict(verdict, f"{path}: {human_bytes(size)} (limit {human_bytes(limit)})")

    return Check(
        f"ci.{name}-size",
        container,
        f"du -sb -- {quote(path)}",
        judge,
        f"run `gbdeploy maintain` on the runner (a daily cron), or clear {path} between builds",
    )


# --- all of them -------------------------------------------------------------------------------
def _disabled(name: str, role: str) -> Check:
    return Check(
        name, None, "", lambda _: Verdict("skip", ""), "", disabled=f"doctor.{role} is null"
    )


def build_checks(settings: Settings) -> list[Check]:
    """Every check, in the order they run and print. The first lists the host's containers."""
    d = settings.doctor
    checks = [containers_check(d)]
    checks.append(
        privileged_check(d.system) if d.system else _disabled("host.system-privileged", "system")
    )
    checks.append(
        runner_mounts_check(d.ci_runner)
        if d.ci_runner
        else _disabled("host.ci-runner-no-host-mounts", "ci_runner")
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
            _disabled(n, "system")
            for n in ("system.loopback-accept", "system.valkey-ping", "system.botui-botserver-url")
        ]
    for component in settings.components.values():
        container = _container_of(settings, component)
        if container is None:
            checks.append(_disabled(f"system.owner.{component.name}", "system"))
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
            _disabled(n, "proxy")
            for n in ("proxy.caddy-storage", "proxy.caddy-valid", "proxy.caddy-vhosts")
        ]
    checks.append(corefile_acl_check(d, d.dns) if d.dns else _disabled("dns.corefile-acl", "dns"))
    if d.ci_runner:
        checks += [
            cache_size_check("sccache", d.sccache_dir, d.sccache_max_gb, d.ci_runner),
            cache_size_check("cargo", d.cargo_home, d.cargo_max_gb, d.ci_runner),
        ]
    else:
        checks += [_disabled(n, "ci_runner") for n in ("ci.sccache-size", "ci.cargo-size")]
    return checks


def _container_of(settings: Settings, component: Component) -> str | None:
    """Where a component's binary lives: its target's container, else the system container."""
    target = settings.targets.get(component.target)
    return (target.lxc if target else None) or settings.doctor.system


def doctor_plan(settings: Settings) -> list[str]:
    """The exact commands, one line per check: `NAME: on WHERE: COMMAND`."""
    host = _require_host(settings.doctor)
    return [
        f"{c.name}: skipped ({c.disabled})"
        if c.disabled
        else f"{c.name}: on {_where(c.place, host)}: {c.command}"
        for c in build_checks(settings)
    ]


def _require_host(d: DoctorSettings) -> str:
    if not d.host:
        raise ConfigError(
            "doctor.host",
            "is not set: doctor checks the LXD host over ssh and needs its ssh Host alias",
            hint="add `doctor: {host: ALIAS}` to gbdeploy.yaml, ALIAS being the Host entry in "
            "~/.ssh/config of the machine where `lxc list` shows pragmatismo-system",
        )
    return d.host


class Doctor:
    """Runs checks over ssh: one connection to the host, one per container (via `lxc exec`).
    A command that several checks read runs once per examination; the commands of different
    connections run at the same time (one thread per connection, in order within it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = _require_host(settings.doctor)
        self._remotes: dict[str | None, Remote] = {}
        self._results: dict[tuple[str | None, str], CommandResult | RemoteError] = {}

    def remote(self, place: str | None) -> Remote:
        if place not in self._remotes:
            target = Target(place or "lxd-host", self.host, lxc=place)
            self._remotes[place] = Remote(target, self.settings.ssh)
        return self._remotes[place]

    def run(self, place: str | None, command: str) -> CommandResult:
        """The command's result (RemoteError if ssh failed), run once per examination."""
        key = (place, command)
        if key not in self._results:
            try:
                self._results[key] = self.remote(place).run(
                    command, check=False, timeout=COMMAND_TIMEOUT
                )
            except RemoteError as error:
                self._results[key] = error
        outcome = self._results[key]
        if isinstance(outcome, RemoteError):
            raise outcome
        return outcome

    def _run_all(self, checks: list[Check]) -> None:
        by_place: dict[str | None, list[str]] = {}
        for check in checks:
            commands = by_place.setdefault(check.place, [])
            if check.command not in commands:
                commands.append(check.command)
        for place in by_place:
            self.remote(place)  # built here, not in the threads

        def run_in_order(place: str | None) -> None:
            for command in by_place[place]:
                with contextlib.suppress(RemoteError):  # kept in _results; the check reports it
                    self.run(place, command)

        with ThreadPoolExecutor(max_workers=max(1, len(by_place))) as pool:
            list(pool.map(run_in_order, by_place))

    def examine(self, checks: list[Check]) -> list[Finding]:
        self._results.clear()
        first, rest = checks[0], checks[1:]
        try:
            listing = self.run(None, first.command)
        except RemoteError as error:
            why = f"the LXD host {self.host} did not answer (see {first.name})"
            return [Finding(first.name, "fail", error.message, error.hint or first.fix)] + [
                Finding(c.name, "skip", why) for c in rest
            ]
        present = container_names(listing.stdout) if listing.ok else set()
        runnable = [c for c in rest if not c.disabled and (c.place is None or c.place in present)]
        self._run_all(runnable)
        findings = [self._finding(first)]
        for check in rest:
            if check.disabled:
                findings.append(Finding(check.name, "skip", check.disabled))
            elif check in runnable:
                findings.append(self._finding(check))
            else:
                findings.append(
                    Finding(check.name, "skip", f"no container {check.place} (see {first.name})")
                )
        return findings

    def _finding(self, check: Check) -> Finding:
        try:
            result = self.run(check.place, check.command)
        except RemoteError as error:
            return Finding(check.name, "fail", error.message, check.fix)
        if result.exit_code == 127:
            return Finding(
                check.name,
                check.when_missing,
                f"not installed on {_where(check.place, self.host)}: {_output(result)}",
                "" if check.when_missing == "skip" else check.fix,
            )
        try:
            verdict = check.judge(result)
        except ParseError as error:
            return Finding(
                check.name, "fail", f"unreadable output of `{check.command}`: {error}", check.fix
            )
        fix = (
            ""
            if verdict.status == "pass"
            else (verdict.fix if verdict.fix is not None else check.fix)
        )
        return Finding(check.name, verdict.status, verdict.saw, fix)

    def repair(self, checks: list[Check], findings: list[Finding]) -> list[str]:
        """Run the safe repairs of the failing checks; what changed, and what was left alone."""
        by_name = {c.name: c for c in checks}
        said: list[str] = []
        for finding in findings:
            check = by_name[finding.check]
            if finding.status != "fail" or check.repair is None:
                continue
            result = self._results.get((check.place, check.command))
            if not isinstance(result, CommandResult):
                continue
            try:
                repair = check.repair(result)
            except ParseError as error:
                said.append(f"not repaired: {check.name}: {error}")
                continue
            if isinstance(repair, str):
                said.append(f"not repaired: {check.name}: {repair}")
                continue
            try:
                outcome = self.remote(check.place).run(
                    repair.command, check=False, timeout=COMMAND_TIMEOUT
                )
            except RemoteError as error:
                said.append(f"not repaired: {check.name}: {error.message}")
                continue
            if outcome.ok:
                said.append(f"changed: {check.name}: {repair.says}")
            else:
                said.append(f"not repaired: {check.name}: {_output(outcome)}")
        return said

    def close(self) -> None:
        for remote in self._remotes.values():
            remote.close()

    def __enter__(self) -> Doctor:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@dataclass
class DoctorReport:
    findings: list[Finding]
    changes: list[str] = field(default_factory=list)
    repairable: frozenset[str] = frozenset()  # the checks `--fix` knows a safe repair for

    @property
    def failed(self) -> list[str]:
        return [f.check for f in self.findings if f.status == "fail"]

    def hint(self, *, fixed: bool) -> str:
        can_fix = [name for name in self.failed if name in self.repairable]
        if can_fix and not fixed:
            return (
                "the fix column says what to do; `gbdeploy doctor --fix` repairs the safe ones "
                f"({', '.join(can_fix)})"
            )
        return (
            "the fix column says what to do; these need a person (doctor --fix changes only "
            "what is safe to change unattended)"
        )


def examine(
    settings: Settings, *, fix: bool = False, say: Callable[[str], None] | None = None
) -> DoctorReport:
    """Run every check (and, with `fix`, the safe repairs, then every check again)."""
    checks = build_checks(settings)
    with Doctor(settings) as doctor:
        findings = doctor.examine(checks)
        changes: list[str] = []
        if fix and any(f.status == "fail" for f in findings):
            changes = doctor.repair(checks, findings)
            for line in changes:
                if say:
                    say(line)
            if any(line.startswith("changed:") for line in changes):
                findings = doctor.examine(checks)
    repairable = frozenset(c.name for c in checks if c.repair is not None)
    return DoctorReport(findings, changes, repairable)


def render_table(findings: list[Finding]) -> list[str]:
    width = max([len("CHECK"), *(len(f.check) for f in findings)])
    lines = [f"{'CHECK':<{width}}  STATUS  SAW"]
    for f in findings:
        mark = {"pass": "pass", "fail": "FAIL", "skip": "skip"}[f.status]
        lines.append(f"{f.check:<{width}}  {mark:<6}  {f.saw}")
        if f.fix:
            lines.append(f"{'':<{width}}          fix: {f.fix}")
    counts = {s: sum(1 for f in findings if f.status == s) for s in ("pass", "fail", "skip")}
    lines.append(
        f"{len(findings)} checks: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['skip']} skipped"
    )
    return lines


def run_doctor(
    settings: Settings, reporter: Reporter, *, fix: bool = False, as_json: bool = False
) -> None:
    """`gbdeploy doctor [--fix] [--json]`: prints the table (or the JSON list), then raises
    DoctorFailed (exit 1) if any check fails."""
    _require_host(settings.doctor)
    # With --json, stdout holds only the JSON list: what --fix changed goes to stderr.
    notes = Reporter(stream=sys.stderr, secrets=reporter.secrets) if as_json else reporter
    report = examine(settings, fix=fix, say=notes.say)
    if as_json:
        reporter.say(json.dumps([f.to_json() for f in report.findings], indent=2))
    else:
        if report.changes:
            reporter.say()
        for line in render_table(report.findings):
            reporter.say(line)
    if report.failed:
        raise DoctorFailed(
            f"doctor: {len(report.failed)} of {len(report.findings)} checks failed: "
            + ", ".join(report.failed),
            failed=report.failed,
            hint=report.hint(fixed=fix),
        )


__all__ = [
    "Check",
    "Doctor",
    "DoctorReport",
    "Finding",
    "Repair",
    "Verdict",
    "build_checks",
    "doctor_plan",
    "examine",
    "render_table",
    "run_doctor",
]
