"""`history`: the deploys and rollbacks recorded on a target, newest first, and which one runs.

The deploy step appends one JSON object per line to `<binary>.deploys.log` (time, component,
action, commit, sha256, strategy, result, duration in seconds, who ran it, and from a CI job the
person who released and the run: `released_by` {git, forge_user}, `ci_run` {id, number, url}).
The log is read as it is: unknown keys are kept, a line that is not a JSON object is counted and
skipped. The binary that runs now is told by its sha256: the one the deploy step keeps beside it
(`<binary>.sha256`, while the binary's size, mtime and inode are those it kept: the deploy's own
rule), else hashed on the target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .config import Component, Settings
from .deploy import layout
from .deploy.layout import Paths
from .output import Reporter, short_sha, table
from .provenance import describe_person
from .remote import probes
from .remote.connection import Remote, quote

SUCCESS_RESULTS = ("ok", "unchanged")


@dataclass(frozen=True)
class LogEntry:
    """One line of the deploy log; `fields` holds every key the line had."""

    fields: dict[str, Any]

    def get(self, key: str) -> Any:
        return self.fields.get(key)

    @property
    def sha256(self) -> str | None:
        value = self.fields.get("sha256")
        return value if isinstance(value, str) and value else None

    @property
    def succeeded(self) -> bool:
        return self.fields.get("result") in SUCCESS_RESULTS


@dataclass(frozen=True)
class History:
    component: str
    target: str
    entries: list[LogEntry]  # newest first
    running_sha256: str | None  # None: no binary on the target
    unreadable_lines: int = 0
    current: int | None = field(default=None)  # index in `entries` of the one that runs now

    def as_json(self, limit: int | None = None) -> dict[str, Any]:
        shown = self.entries[:limit] if limit else self.entries
        return {
            "component": self.component,
            "target": self.target,
            "running_sha256": self.running_sha256,
            "unreadable_lines": self.unreadable_lines,
            "entries": [
                {**entry.fields, "current": index == self.current}
                for index, entry in enumerate(shown)
            ],
        }


def parse_log(text: str) -> tuple[list[LogEntry], int]:
    """The entries of a deploy log, newest first (the log is append-only), and how many lines
    could not be read."""
    entries: list[LogEntry] = []
    unreadable = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            unreadable += 1
            continue
        if not isinstance(value, dict):
            unreadable += 1
            continue
        entries.append(LogEntry(value))
    entries.reverse()
    return entries, unreadable


def running_entry(entries: list[LogEntry], running_sha256: str | None) -> int | None:
    """The newest successful entry that put the running binary in place."""
    if not running_sha256:
        return None
    for index, entry in enumerate(entries):
        if entry.succeeded and entry.sha256 == running_sha256:
            return index
    return None


def build_history(
    component: str, target: str, log_text: str, running_sha256: str | None
) -> History:
    entries, unreadable = parse_log(log_text)
    return History(
        component,
        target,
        entries,
        running_sha256,
        unreadable,
        running_entry(entries, running_sha256),
    )


def when(value: Any) -> str:
    """An ISO time as `2026-11-28 09:40:12Z` (in UTC); anything else as it is."""
    if not isinstance(value, str):
        return "?"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc)
    return parsed.strftime("%Y-%m-%d %H:%M:%S") + ("Z" if parsed.tzinfo else "")


def seconds(value: Any) -> str:
    """A recorded duration (whole seconds, measured on the target) as a person reads it:
    `42s`, `3m 05s`, `1h 02m`."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        return "?"
    total = round(value)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m {total % 60:02d}s"
    return f"{total // 3600}h {total % 3600 // 60:02d}m"


def by_whom(entry: LogEntry) -> str:
    """The person who released (git identity, forge user), else the account that ran it."""
    return describe_person(entry.fields) or str(entry.get("who") or "?")


def which_run(entry: LogEntry) -> str:
    run = entry.get("ci_run")
    if not isinstance(run, dict):
        return "-"  # run by hand, not by CI
    return f"#{run['number']}" if "number" in run else f"id {run.get('id', '?')}"


def strategy(entry: LogEntry) -> str:
    """The strategy, and for a switch the port it left live (`switch :5868`)."""
    name = str(entry.get("strategy") or "?")
    switch = entry.get("switch")
    if isinstance(switch, dict) and isinstance(switch.get("live"), int):
        return f"{name} :{switch['live']}"
    return name


def format_history(history: History, limit: int | None = None) -> list[str]:
    shown = history.entries[:limit] if limit else history.entries
    lines = [f"{history.component} on {history.target}: deploys and rollbacks, newest first"]
    if not history.entries:
        lines.append("  (no deploy recorded yet)")
    else:
        rows = [
            [
                "*" if index == history.current else " ",
                when(entry.get("time")),
                str(entry.get("action") or "deploy"),
                short_sha(entry.get("commit")),
                short_sha(entry.sha256, 12),
                strategy(entry),
                str(entry.get("result") or "?"),
                seconds(entry.get("duration")),
                which_run(entry),
                by_whom(entry),
            ]
            for index, entry in enumerate(shown)
        ]
        header = [" ", "when (UTC)", "action", "commit", "sha256", "strategy", "result"]
        lines += ["  " + line for line in table(rows, header=[*header, "took", "CI run", "by"])]
        runs = [entry.get("ci_run") for entry in shown]
        urls = [f"{r['number']} {r['url']}" for r in runs if isinstance(r, dict) and "url" in r]
        if urls:
            lines.append("  CI runs: " + ", ".join(f"#{url}" for url in dict.fromkeys(urls)))
        if len(shown) < len(history.entries):
            lines.append(f"  … {len(history.entries) - len(shown)} older (--limit to see more)")
    if history.unreadable_lines:
        lines.append(f"  ({history.unreadable_lines} unreadable line(s) in the log skipped)")
    lines.append("  " + describe_running(history, limit))
    return lines


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def describe_running(history: History, limit: int | None = None) -> str:
    sha = history.running_sha256
    if sha is None:
        return "runs now: no binary on the target"
    if history.current is None:
        return f"runs now: sha256 {short_sha(sha, 12)}, which no successful deploy here recorded"
    entry = history.entries[history.current]
    shown = not limit or history.current < limit
    where = "*" if shown else f"the {ordinal(history.current + 1)} newest entry (beyond --limit)"
    return (
        f"runs now: {where} — commit {short_sha(entry.get('commit'))}, sha256 {short_sha(sha, 12)}"
    )


# --- reading the target ---------------------------------------------------------------------------
def deploy_log_path(component: Component) -> str:
    return Paths(component.binary).deploy_log


def read_log_command(path: str) -> str:
    p = quote(path)
    return f"[ -e {p} ] || exit 0\ncat -- {p}"


def sidecar_command(binary: str) -> str:
    """The sha256 the deploy kept beside the binary (B.sha256), by the deploy's own rule: only
    while the binary's size, mtime and inode are still those it kept (lib.sh's `remembered`)."""
    return f"{layout.prelude(Paths(binary))}\nremembered"


def parse_sidecar(stdout: str) -> str | None:
    words = stdout.split()
    return words[0] if words and layout.SHA256.fullmatch(words[0]) else None


def read_history(settings: Settings, component: Component) -> History:
    with Remote(settings.target_of(component), settings.ssh) as remote:
        log = remote.run(read_log_command(deploy_log_path(component)))
        kept = parse_sidecar(remote.run(sidecar_command(component.binary), check=False).stdout)
        running = kept or probes.probe_sha256(component.binary).run(remote)
        return build_history(component.name, remote.description, log.stdout, running)


def run_history(
    settings: Settings,
    reporter: Reporter,
    component: str,
    *,
    limit: int | None = None,
    as_json: bool = False,
) -> None:
    comp = settings.component(component)
    history = read_history(settings, comp)
    if as_json:
        reporter.say(json.dumps(history.as_json(limit), indent=2, sort_keys=True))
        return
    for line in format_history(history, limit):
        reporter.say(line)
