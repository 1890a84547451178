"""Checks on the LXD host itself: its containers, their LXD config, proxy devices, ZFS, the
firewall (ufw, the persisted forward rule) and fail2ban."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import DoctorSettings
from ..output import human_bytes
from ..remote.connection import CommandResult, quote
from .daemons import describe, fail2ban_jail_check, schedule_check
from .model import (
    Check,
    FollowUp,
    Verdict,
    container_tool,
    doctor_call,
    list_containers,
    output_of,
    read_command,
)
from .parsers import (
    CONTAINER_MARKER,
    DAY,
    HOUR,
    ParseError,
    ScheduledJob,
    UnitFileCommand,
    accepts_forwarding,
    parse_config_dump,
    parse_iptables_save,
    parse_lxc_config,
    parse_shell_assignments,
    parse_unit_file_commands,
    parse_zfs_snapshots,
    split_sections,
    stale_snapshots,
)


def containers_check(d: DoctorSettings) -> Check:
    listing = list_containers(container_tool(d))
    wanted = {
        role: name
        for role in ("system", "ci_runner", "proxy", "dns", "email")
        if (name := getattr(d, role))
    }

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"`{listing}` failed: {output_of(result)}")
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
        listing,
        judge,
        f"make sure the ssh user on doctor.host may use {d.via} (in the `lxd`/`incus-admin` "
        f"group, or doctor.sudo: true with a NOPASSWD sudo rule for {d.via}: doctor never waits "
        f"for a password): `{listing}` must work",
    )


def container_names(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip()}


def privileged_check(name: str, tool: str = "lxc") -> Check:
    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"{tool} config show failed: {output_of(result)}")
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
        f"{tool} config show {quote(name)} --expanded",
        judge,
        f"{tool} config set {quote(name)} security.privileged true && "
        f"{tool} restart {quote(name)}  "
        "(restarts botserver and botui: pick a quiet moment)",
    )


def runner_mounts_check(name: str, tool: str = "lxc") -> Check:
    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"{tool} config show failed: {output_of(result)}")
        disks = [d for d in parse_lxc_config(result.stdout).devices if d.type == "disk"]
        mounts = [d for d in disks if d.is_host_mount]
        if not mounts:
            return Verdict("pass", f"{name}: {len(disks)} disk device(s), all from storage pools")
        return Verdict(
            "fail",
            f"{name} mounts host paths: "
            + ", ".join(f"{d.name} ({d.source} -> {d.path})" for d in mounts),
            "; ".join(f"{tool} config device remove {quote(name)} {quote(d.name)}" for d in mounts)
            + "  (deploy over ssh instead; then delete the snapshots taken while they were "
            "mounted, see host.zfs-snapshots)",
        )

    return Check(
        "host.ci-runner-no-host-mounts",
        None,
        f"{tool} config show {quote(name)} --expanded",
        judge,
        "remove the disk devices that are not storage-pool volumes",
    )


def proxy_devices_check(d: DoctorSettings) -> Check:
    tool = container_tool(d)
    command = doctor_call("container_configs", CONTAINER_MARKER, *tool.split())

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"listing devices failed: {output_of(result)}")
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
            f"for each missing port, on the container that serves it: {tool} config device add "
            "CONTAINER NAME proxy listen=tcp:0.0.0.0:PORT connect=tcp:127.0.0.1:PORT (port 53 "
            "needs a udp one too); never remove these devices",
        )

    return Check("host.proxy-devices", None, command, judge, "")


def snapshots_check(d: DoctorSettings) -> Check:
    days = d.snapshot_retention_days

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"zfs list failed: {output_of(result)}")
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


_TAKES_SNAPSHOTS = re.compile(r"zfs(-auto)?[- ]snapshot|sanoid")
# zfs-auto-snapshot's options: `--label=daily`/`-l daily`, `--keep=31`/`-k 31`.
_LABEL = re.compile(r"(?:--label[= ]|-l ?)([\w.:-]+)")
_KEEP = re.compile(r"(?:--keep[= ]|-k ?)(\d+)")


@dataclass(frozen=True)
class SnapshotRetention:
    """How long one job's snapshots stay: `keep` of its label, one taken every `period`."""

    job: ScheduledJob
    label: str
    keep: int
    period: float

    @property
    def days(self) -> float:
        return self.keep * self.period / DAY

    def __str__(self) -> str:
        every = describe_period(self.period)
        amount, unit = (self.days, "day") if self.days >= 1 else (self.days * 24, "hour")
        span = f"{amount:.3g} {unit}{'' if f'{amount:.3g}' == '1' else 's'}"
        return f"--label={self.label or '(none)'} keeps {self.keep}, one {every}: {span}"


def describe_period(seconds: float) -> str:
    for name, length in (("a month", 30 * DAY), ("a week", 7 * DAY), ("a day", DAY)):
        if abs(seconds - length) <= length * 0.1:
            return name
    if seconds >= HOUR:
        return f"every {seconds / HOUR:g} hours" if seconds != HOUR else "an hour"
    return f"every {seconds / 60:g} minutes"


def snapshot_retentions(jobs: tuple[ScheduledJob, ...]) -> list[SnapshotRetention]:
    """For each job that keeps a number of snapshots of its label (zfs-auto-snapshot's cron.d,
    cron.hourly … cron.monthly files), how long they stay: that number in that job's period."""
    found = []
    for job in jobs:
        keep = _KEEP.search(job.command)
        if keep and job.period and _TAKES_SNAPSHOTS.search(job.command):
            label = _LABEL.search(job.command)
            found.append(
                SnapshotRetention(job, label.group(1) if label else "", int(keep[1]), job.period)
            )
    return found


def zfs_schedule_check(d: DoctorSettings) -> Check:
    days = d.snapshot_retention_days

    def judge(jobs: tuple[ScheduledJob, ...]) -> Verdict:
        takes = [j for j in jobs if _TAKES_SNAPSHOTS.search(j.command)]
        daily = [j for j in takes if j.daily]
        retentions = snapshot_retentions(tuple(takes))
        prunes = [j for j in jobs if j.daily and "zfs destroy" in j.command]
        if not daily:
            seen = "; ".join(describe(j) for j in takes) or "no job takes ZFS snapshots"
            return Verdict("fail", f"no daily ZFS snapshot job ({seen})")
        too_long = [r for r in retentions if r.days > days + 0.5]
        if too_long:
            return Verdict(
                "fail",
                f"snapshots kept longer than {days} days: "
                + "; ".join(f"{r.job.source}: {r}" for r in too_long),
                f"lower --keep in those files so each label keeps at most {days} days "
                f"(`--label=daily --keep={days}` in cron.daily; remove the weekly and monthly "
                "jobs), then delete the older snapshots (see host.zfs-snapshots)",
            )
        if retentions and all(r.days < 1 for r in retentions) and not prunes:
            return Verdict(
                "fail",
                "no snapshot is kept a day: "
                + "; ".join(f"{r.job.source}: {r}" for r in retentions),
            )
        if not retentions and not prunes:
            return Verdict(
                "fail",
                f"{describe(daily[0])} takes daily snapshots but no daily job removes old ones "
                f"(no `--keep={days}` and no `zfs destroy`)",
            )
        kept = (
            "; ".join(f"{r.job.source}: {r}" for r in retentions)
            if retentions
            else f"pruned by {describe(prunes[0])}"
        )
        return Verdict("pass", kept)

    return schedule_check(
        "host.zfs-snapshot-schedule",
        None,
        d.cron_etc,
        judge,
        f"a daily cron job that snapshots the containers and keeps {days} days, e.g. "
        f"/etc/cron.daily/zfs-auto-snapshot running `zfs-auto-snapshot --label=daily "
        f"--keep={days} //`",
    )


def ufw_forward_check(d: DoctorSettings) -> Check:
    path = d.ufw_defaults

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"cannot read {path}: {output_of(result)} (is ufw installed?)")
        policy = parse_shell_assignments(result.stdout).get("DEFAULT_FORWARD_POLICY")
        if policy == "ACCEPT":
            return Verdict("pass", f'{path}: DEFAULT_FORWARD_POLICY="ACCEPT"')
        saw = f'"{policy}"' if policy is not None else "not set (ufw drops forwarded packets)"
        return Verdict(
            "fail", f"{path}: DEFAULT_FORWARD_POLICY is {saw}: the containers have no internet"
        )

    return Check(
        "host.ufw-forward-policy",
        None,
        read_command(path),
        judge,
        f"sed -i 's/^DEFAULT_FORWARD_POLICY=.*/DEFAULT_FORWARD_POLICY=\"ACCEPT\"/' "
        f"{quote(path)} && ufw reload",
    )


SERVICE_FILES = doctor_call("service_files")
ENABLED_STATES = ("enabled", "enabled-runtime")


NETFILTER_PERSISTENT = "netfilter-persistent.service"  # iptables-persistent's unit (Debian)


def files_mentioning(paths: list[str], word: str) -> str:
    """Each of `paths` that is a text file holding `word`, after a `### PATH` line."""
    return doctor_call("files_mentioning", word, *paths)


def forward_rule_check(d: DoctorSettings) -> Check:
    bridge, rules_file = d.lxd_bridge, d.iptables_rules_file

    def judge(result: CommandResult) -> Verdict | FollowUp:
        if not result.ok:
            return Verdict("fail", f"listing services failed: {output_of(result)}")
        units = parse_unit_file_commands(result.stdout)
        restoring = [u for u in units if "FORWARD" in u.command and bridge in u.command.split()]
        enabled = [u for u in restoring if u.state in ENABLED_STATES]
        if enabled:
            shown = " ".join(enabled[0].command.split())[:120]
            return Verdict("pass", f"{enabled[0].unit} ({enabled[0].state}) runs: {shown}")
        # What an enabled unit reads: iptables-persistent's saved rules, or the scripts it runs.
        running = [u for u in units if u.state in ENABLED_STATES]
        read_by: dict[str, UnitFileCommand] = {}
        for unit in running:
            if unit.unit == NETFILTER_PERSISTENT:
                read_by.setdefault(rules_file, unit)
            for word in unit.command.split():
                if word.startswith("/"):
                    read_by.setdefault(word, unit)
        if not read_by:
            return not_restored(units, restoring)
        return FollowUp(
            files_mentioning(list(read_by), "FORWARD"),
            lambda files: judge_files(files, units, restoring, read_by),
        )

    def judge_files(
        result: CommandResult,
        units: tuple[UnitFileCommand, ...],
        restoring: list[UnitFileCommand],
        read_by: dict[str, UnitFileCommand],
    ) -> Verdict:
        for path, text in split_sections(result.stdout).items():
            unit = read_by.get(path)
            if unit is None:
                continue
            if path == rules_file and unit.unit == NETFILTER_PERSISTENT:
                found = [r for r in parse_iptables_save(text) if accepts_forwarding(r, bridge)]
                how = f"restores {path}"
            else:
                found = [
                    tuple(line.split())
                    for line in text.splitlines()
                    if not line.lstrip().startswith("#")
                    and accepts_forwarding(line.split(), bridge)
                ]
                how = f"runs {path}"
            if found:
                return Verdict(
                    "pass", f"{unit.unit} ({unit.state}) {how}: {' '.join(found[0])[:120]}"
                )
        return not_restored(units, restoring)

    def not_restored(
        units: tuple[UnitFileCommand, ...], restoring: list[UnitFileCommand]
    ) -> Verdict:
        if restoring:
            unit = restoring[0]
            return Verdict(
                "fail",
                f"{unit.unit} restores the FORWARD rule for {bridge} but is {unit.state}: the "
                "rule is lost at the next reboot",
                f"systemctl enable {quote(unit.unit)}",
            )
        return Verdict(
            "fail",
            f"none of the {len(units)} services adds a FORWARD rule for {bridge} (nor a script "
            f"they run, nor {rules_file} through {NETFILTER_PERSISTENT}): the rule is lost at "
            "the next reboot",
        )

    return Check(
        "host.lxd-forward-rule-persisted",
        None,
        SERVICE_FILES,
        judge,
        f"a oneshot unit (e.g. lxd-forward.service: Type=oneshot, ExecStart=iptables -I FORWARD "
        f"-i {bridge} -j ACCEPT and one for -o {bridge}, WantedBy=multi-user.target), then "
        "`systemctl enable --now lxd-forward.service` — or, with iptables-persistent, "
        f"`iptables-save > {rules_file}` once the rule is in place",
        when_missing="skip",
    )


def fail2ban_sshd_check() -> Check:
    return fail2ban_jail_check("host.fail2ban-sshd", None, "the LXD host", ["sshd"])
