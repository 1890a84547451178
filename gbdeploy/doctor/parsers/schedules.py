"""cron and systemd timers: which jobs run daily, and how often each runs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .base import ParseError, yaml_mapping

# --- cron and systemd timers ---------------------------------------------------------------------
SCHEDULE_MARKER = "### "
_DAILY_SPECIALS = ("@daily", "@midnight", "@hourly")
_ALL_WEEKDAYS = ("*", "0-6", "1-7", "0-7", "*/1")
HOUR, DAY = 3600.0, 86400.0
YEAR = 365 * DAY
_SPECIAL_PERIODS = {
    "@hourly": HOUR, "@daily": DAY, "@midnight": DAY, "@weekly": 7 * DAY, "@monthly": YEAR / 12,
    "@yearly": YEAR, "@annually": YEAR,
}  # fmt: skip
# The directories run-parts runs from /etc/crontab (Debian's cron), and how often.
CRON_DIRECTORIES = {"hourly": HOUR, "daily": DAY, "weekly": 7 * DAY, "monthly": YEAR / 12}


@dataclass(frozen=True)
class ScheduledJob:
    source: str  # `crontab -l`, the file, or the timer
    daily: bool  # runs at least once a day
    command: str
    schedule: str
    period: float | None = None  # seconds between two runs, on average; None: not periodic


def cron_is_daily(fields: list[str]) -> bool:
    """Five cron fields (or one `@special`): does the job run at least once every day?"""
    if fields[0].startswith("@"):
        return fields[0] in _DAILY_SPECIALS
    day_of_month, month, weekday = fields[2], fields[3], fields[4]
    return day_of_month in ("*", "*/1") and month in ("*", "*/1") and weekday in _ALL_WEEKDAYS


def _values_in(field: str, low: int, high: int) -> int:
    """How many values of low..high a cron field (`*`, `*/15`, `1-5`, `0,30`, `mon`) matches."""
    count = 0
    for part in field.split(","):
        span, _, step = part.partition("/")
        every = int(step) if step.isdigit() and int(step) > 0 else 1
        if span == "*":
            first, last = low, high
        elif "-" in span and all(x.isdigit() for x in span.split("-", 1)):
            first, last = (int(x) for x in span.split("-", 1))
        else:
            first = last = int(span) if span.isdigit() else low  # a name (`mon`) is one value
            if step:
                last = high
        count += len(range(first, last + 1, every))
    return max(count, 1)


def cron_period(fields: list[str]) -> float | None:
    """Five cron fields (or one `@special`): the average time between two runs (`*/15 * * * *`:
    900 s, `0 3 * * *`: a day, `0 4 * * 0`: a week); None for `@reboot`."""
    if fields[0].startswith("@"):
        return _SPECIAL_PERIODS.get(fields[0])
    minute, hour, day_of_month, month, weekday = fields[:5]
    per_day = _values_in(minute, 0, 59) * _values_in(hour, 0, 23)
    any_day_of_month = day_of_month in ("*", "*/1")
    any_weekday = weekday in _ALL_WEEKDAYS
    if any_day_of_month and any_weekday:
        days = 365.0
    elif any_day_of_month:  # cron runs on the listed weekdays
        days = 365 / 7 * min(_values_in(weekday, 0, 6), 7)
    elif any_weekday:
        days = 12.0 * _values_in(day_of_month, 1, 31)
    else:  # either field matching is enough
        days = min(
            365.0, 12 * _values_in(day_of_month, 1, 31) + 365 / 7 * _values_in(weekday, 0, 6)
        )
    days *= _values_in(month, 1, 12) / 12
    return YEAR / (per_day * days)


def calendar_is_daily(calendar: str) -> bool:
    """A systemd OnCalendar as `systemctl show -p TimersCalendar` normalizes it (`daily` is
    `*-*-* 00:00:00`): every day of every month, without a weekday restriction."""
    if calendar.strip() in ("daily", "hourly", "minutely"):
        return True
    words = calendar.split()
    return bool(words) and words[0] in ("*-*-*", "*-*-*/1")


def _calendar_values(spec: str, low: int, high: int) -> int:
    """How many values a systemd calendar component (`*`, `00`, `00/15`, `8..17`, `0,30`) takes."""
    count = 0
    for part in spec.split(","):
        span, _, step = part.partition("/")
        every = int(step) if step.isdigit() and int(step) > 0 else 1
        if span == "*":
            first, last = low, high
        elif ".." in span:
            first, last = (int(x) if x.isdigit() else low for x in span.split("..", 1))
        else:
            first = int(span) if span.isdigit() else low
            last = high if step else first
        count += len(range(first, last + 1, every))
    return max(count, 1)


def calendar_period(calendar: str) -> float | None:
    """The average time between two elapses of a normalized OnCalendar
    (`[WEEKDAYS] YYYY-MM-DD HH:MM:SS`), roughly as cron_period does for cron."""
    words = calendar.split()
    shortcuts = {"minutely": 60.0, "hourly": HOUR, "daily": DAY, "weekly": 7 * DAY}
    if len(words) == 1 and words[0] in shortcuts:
        return shortcuts[words[0]]
    weekdays = words.pop(0) if words and words[0][:1].isalpha() else None
    if len(words) != 2 or words[0].count("-") != 2 or words[1].count(":") < 1:
        return None
    _, month, day = words[0].split("-")
    hour, minute = words[1].split(":")[:2]
    per_day = _calendar_values(hour, 0, 23) * _calendar_values(minute, 0, 59)
    days = 365.0 if day == "*" else 12.0 * _calendar_values(day, 1, 31)
    if weekdays:
        days = days / 7 * min(len(weekdays.split(",")) + 4 * weekdays.count(".."), 7)
    if month != "*":
        days *= _calendar_values(month, 1, 12) / 12
    return YEAR / (per_day * days)


def _crontab_jobs(source: str, lines: list[str], *, with_user: bool) -> list[ScheduledJob]:
    jobs = []
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        words = stripped.split()
        if "=" in words[0] and not words[0].startswith("@"):
            continue  # SHELL=/bin/sh, MAILTO=…
        size = 1 if words[0].startswith("@") else 5
        if len(words) <= size + (1 if with_user else 0):
            raise ParseError(f"{source}: not a crontab line: {stripped!r}")
        command = " ".join(words[size + (1 if with_user else 0) :])
        schedule = " ".join(words[:size])
        daily = cron_is_daily(words[:size])
        jobs.append(ScheduledJob(source, daily, command, schedule, cron_period(words[:size])))
    return jobs


def _timer_jobs(lines: list[str]) -> list[ScheduledJob]:
    jobs = []
    for line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise ParseError(f"expected TIMER<TAB>UNIT<TAB>CALENDAR<TAB>EXECSTART: {line!r}")
        calendars = re.findall(r"OnCalendar=([^;]+?)\s*;", fields[2])
        schedule = ", ".join(calendars) or "no OnCalendar"
        daily = any(calendar_is_daily(c) for c in calendars)
        periods = [p for c in calendars if (p := calendar_period(c)) is not None]
        command = " ".join(re.findall(r"argv\[\]=([^;]+?)\s*;", fields[3])) or fields[3]
        source = f"{fields[0]} -> {fields[1]}"
        jobs.append(ScheduledJob(source, daily, command, schedule, min(periods, default=None)))
    return jobs


def parse_schedules(text: str) -> tuple[ScheduledJob, ...]:
    """The schedule probe's output: `### crontab -l`, `### file PATH` (crontab format with a user
    field), `### hourly|daily|weekly|monthly PATH` (a script in cron.daily and its siblings) and
    `### timers` (TIMER, UNIT, TimersCalendar, ExecStart by tabs) sections."""
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith(SCHEDULE_MARKER):
            sections.append((line[len(SCHEDULE_MARKER) :].strip(), []))
        elif sections:
            sections[-1][1].append(line)
        elif line.strip():
            raise ParseError(f"schedule probe output does not start with a marker: {line!r}")
    jobs: list[ScheduledJob] = []
    for header, lines in sections:
        kind, _, path = header.partition(" ")
        if header == "crontab -l":
            jobs += _crontab_jobs("crontab -l", lines, with_user=False)
        elif kind == "file":
            jobs += _crontab_jobs(path, lines, with_user=True)
        elif kind in CRON_DIRECTORIES:
            script = [x.strip() for x in lines if x.strip() and not x.strip().startswith("#")]
            period = CRON_DIRECTORIES[kind]
            jobs.append(
                ScheduledJob(path, period <= DAY, "; ".join(script), f"cron.{kind}", period)
            )
        elif header == "timers":
            jobs += _timer_jobs(lines)
        else:
            raise ParseError(f"unknown section {header!r} in the schedule probe's output")
    return tuple(jobs)


def parse_workflow_schedules(text: str, source: str) -> tuple[ScheduledJob, ...]:
    """A Forgejo Actions workflow's `on: schedule: - cron: …` entries: each `run:` step of the
    workflow's jobs, once per schedule (Forgejo reads the five fields as cron does)."""
    data = yaml_mapping(text, source)
    # YAML 1.1 (PyYAML) reads the bare key `on` as true.
    triggers = data.get("on", data.get(True))
    schedules = triggers.get("schedule") if isinstance(triggers, dict) else None
    if not schedules:
        return ()
    if not isinstance(schedules, list):
        raise ParseError(f"{source}: `on.schedule` is not a list")
    steps = [
        (str(step.get("name") or f"step {number}"), str(step["run"]))
        for job in (data.get("jobs") or {}).values()
        if isinstance(job, dict)
        for number, step in enumerate(job.get("steps") or (), 1)
        if isinstance(step, dict) and "run" in step
    ]
    jobs = []
    for entry in schedules:
        cron = entry.get("cron") if isinstance(entry, dict) else None
        fields = str(cron or "").split()
        if len(fields) != 5:
            raise ParseError(f"{source}: a schedule without five cron fields: {entry!r}")
        for name, run in steps:
            lines = [
                x.strip() for x in run.splitlines() if x.strip() and not x.strip().startswith("#")
            ]
            jobs.append(
                ScheduledJob(
                    f"{source}, step {name!r}",
                    cron_is_daily(fields),
                    "; ".join(lines),
                    " ".join(fields),
                    cron_period(fields),
                )
            )
    return tuple(jobs)
