"""What several places run and doctor reads the same way: fail2ban's jails, and the jobs cron and
systemd timers start (crontab, cron.d, cron.hourly … cron.monthly, timers)."""

from __future__ import annotations

from collections.abc import Callable

from ..remote.connection import CommandResult, quote
from .model import Check, Verdict, doctor_call, output_of
from .parsers import (
    CRON_DIRECTORIES,
    SCHEDULE_MARKER,
    ScheduledJob,
    parse_fail2ban_status,
    parse_schedules,
)

FAIL2BAN_DOWN = "Is fail2ban running?"


def fail2ban_trouble(result: CommandResult, where: str) -> str | None:
    """What a failed fail2ban-client said, in a user's words; None when it answered."""
    if result.ok:
        return None
    if FAIL2BAN_DOWN in result.stderr:
        return f"fail2ban is not running in {where}"
    if "does not exist" in result.stderr:
        return f"{where}: {output_of(result)}"
    return f"fail2ban-client failed in {where}: {output_of(result)}"


def fail2ban_jail_check(name: str, place: str | None, where: str, jails: list[str]) -> Check:
    """fail2ban runs in `place` with one of `jails` (the first is the one the fix names)."""
    command = "fail2ban-client status"
    if len(jails) == 1:
        command += f" && fail2ban-client status {quote(jails[0])}"

    def judge(result: CommandResult) -> Verdict:
        trouble = fail2ban_trouble(result, where)
        if trouble:
            return Verdict("fail", trouble)
        running = parse_fail2ban_status(result.stdout)
        found = [jail for jail in jails if jail in running]
        listed = ", ".join(running) or "none"
        if found:
            return Verdict("pass", f"fail2ban runs in {where} with jail {found[0]} ({listed})")
        wanted = " or ".join(jails)
        return Verdict(
            "fail", f"fail2ban runs in {where} without a {wanted} jail (jails: {listed})"
        )

    return Check(
        name,
        place,
        command,
        judge,
        f"apt-get install fail2ban; enable the [{jails[0]}] jail in /etc/fail2ban/jail.local "
        "(`enabled = true`), then `systemctl restart fail2ban`",
    )


def schedules_command(cron_etc: str) -> str:
    """Everything cron and systemd timers run here, as parse_schedules reads it."""
    etc = cron_etc.rstrip("/") or "/"
    return doctor_call("schedules", SCHEDULE_MARKER, etc, *CRON_DIRECTORIES)


def describe(job: ScheduledJob) -> str:
    command = " ".join(job.command.split())
    return f"{job.source} ({job.schedule}): {command[:100]}"


def schedule_check(
    name: str,
    place: str | None,
    cron_etc: str,
    judge_jobs: Callable[[tuple[ScheduledJob, ...]], Verdict],
    fix: str,
) -> Check:
    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"reading cron and timers failed: {output_of(result)}")
        return judge_jobs(parse_schedules(result.stdout))

    return Check(name, place, schedules_command(cron_etc), judge, fix)
