"""`logs`: a component's log on its target, the same way in as a deploy (ssh, container).

The log is the component's `log` file, or, for a systemd component without one, its unit's
journal. `--follow` streams until Ctrl-C: the remote `tail -F` (or `journalctl -f`) runs beside a
`cat` that waits on the channel's input, so closing our side ends the remote follower too instead
of leaving it behind on the target.

`--grep RE` keeps the lines that match the extended regular expression RE (grep -E on the target,
so only matching lines cross the network); with `-f` the follower feeds grep through a fifo, so
both end with us. `--since TIME` (ISO time, or `30m`, `2h`, `1d` ago) keeps, for a log file, the
lines from the first one stamped at or after TIME: a line is stamped when it starts with an ISO
date and time (`2026-12-07T10:00:00…`, `2026-12-07 10:00:00`, or inside `[`), read as UTC, and an
unstamped line (a continuation) goes with the stamped line before it; for a journal it is
`journalctl --since`. `-n N` then shows the last N of the lines kept.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading
from datetime import datetime, timedelta, timezone

from .config import Component, Settings
from .errors import RemoteError, UsageError
from .output import Reporter
from .remote import far_end
from .remote.connection import Remote, quote

STOP_WAIT = 5.0  # seconds for the remote follower to end once our side is closed
MISSING_EXIT = 66  # the remote command's "no such log" answer, distinct from tail's own failures
BAD_PATTERN_EXIT = 67  # grep on the target refused the --grep pattern
# what far_end/logs.sh's `since` says on stderr when no line of the log is stamped
UNSTAMPED = "gbdeploy: no line starts with a timestamp"
_AGO = re.compile(r"^(\d{1,9})\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO time (UTC unless it says otherwise) or an age like `30m`, `2h`, `1d`: in UTC."""
    now = now or datetime.now(timezone.utc)
    ago = _AGO.match(text.strip())
    if ago:
        return now - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither an ISO time nor an age",
            hint="e.g. --since 2026-12-07T09:30 (UTC) or --since 30m (also s, h, d, w)",
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def check_pattern(grep: str | None) -> None:
    if grep is not None and (not grep or "\n" in grep or "\0" in grep):
        raise UsageError("--grep expects a regular expression on one line, not empty")


def uses_journal(component: Component) -> bool:
    return component.restart.mode == "systemd" and component.log is None


def source(component: Component) -> str:
    if uses_journal(component):
        return f"journal of {component.restart.unit}"
    return component.log_path


def tail_command(
    component: Component,
    lines: int,
    *,
    follow: bool = False,
    since: datetime | None = None,
    grep: str | None = None,
) -> str:
    """The remote command that prints the last `lines` lines (and, with `follow`, what comes),
    of those at or after `since` that match `grep`."""
    if since is not None or grep is not None:
        return _filtered_command(component, lines, follow=follow, since=since, grep=grep)
    if uses_journal(component):
        reader = ["journalctl", "--no-pager", "-u", component.restart.unit, "-n", int(lines)]
        if not follow:
            return _call(*reader)
        return _script(_call("follow", *reader, "-f"))
    path = component.log_path
    if follow:
        return _script(_exists(path), _call("follow", "tail", "-n", int(lines), "-F", "--", path))
    return _script(_exists(path), _call("tail", "-n", int(lines), "--", path))


def _filtered_command(
    component: Component,
    lines: int,
    *,
    follow: bool,
    since: datetime | None,
    grep: str | None,
) -> str:
    if follow and since is not None:
        raise UsageError(
            "--since picks from the lines already written; with -f use -n N",
            hint="e.g. gbdeploy logs botserver -f -n 100 --grep ERROR",
        )
    checks = [_call("pattern", grep, BAD_PATTERN_EXIT)] if grep is not None else []
    if uses_journal(component):
        reader = ["journalctl", "--no-pager", "-u", component.restart.unit]
        if since is not None:
            reader += ["--since", f"@{int(since.timestamp())}"]
        if follow:
            reader += ["-n", int(lines), "-f"]
        read = _call(*reader)
    else:
        path = component.log_path
        checks.insert(0, _exists(path))
        reader = ["tail", "-n", int(lines), "-F", "--", path] if follow else ["cat", "--", path]
        read = _call(*reader)
        if since is not None:
            moment = since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            read += f" | {_call('since', moment)}"
    if follow:
        return _script(*checks, _call("follow_matching", grep or "", *reader))
    matcher = _call("grep", "-E", "-e", grep) if grep is not None else "cat"
    return _script(*checks, f"{read} | {matcher} | tail -n {int(lines)}")


def _call(*words: object) -> str:
    return " ".join(quote(str(word)) for word in words)


def _exists(path: str) -> str:
    return _call("log_file", path, MISSING_EXIT)


def _script(*lines: str) -> str:
    """far_end/logs.sh's functions, then `lines`."""
    return "\n".join([far_end.logs(), *lines])


def _missing(component: Component, where: str) -> RemoteError:
    return RemoteError(
        f"no log at {component.log_path} on {where}",
        hint=f"the service writes it once started; the path is components.{component.name}.log",
    )


def show_logs(
    remote: Remote,
    component: Component,
    reporter: Reporter,
    lines: int,
    *,
    since: datetime | None = None,
    grep: str | None = None,
) -> None:
    result = remote.run(tail_command(component, lines, since=since, grep=grep), check=False)
    if result.exit_code == MISSING_EXIT:
        raise _missing(component, remote.description)
    if result.exit_code == BAD_PATTERN_EXIT:
        raise _bad_pattern(grep or "", remote.description)
    if UNSTAMPED in result.stderr:
        raise UsageError(
            f"no line of {component.log_path} on {remote.description} starts with a date and "
            "time, so --since cannot tell which are recent",
            hint="use -n N (the last N lines) and --grep RE instead",
        )
    if not result.ok:
        detail = (result.stderr.strip() or result.stdout.strip())[-500:]
        raise RemoteError(
            f"on {remote.description}: reading the {source(component)} failed "
            f"(exit {result.exit_code})" + (f"\n  {detail}" if detail else "")
        )
    if result.stdout:
        reporter.write(result.stdout if result.stdout.endswith("\n") else result.stdout + "\n")
    if (since is not None or grep is not None) and result.stderr.strip():
        print(result.stderr.rstrip(), file=sys.stderr)  # e.g. the log could not be read


def _bad_pattern(grep: str, where: str) -> UsageError:
    return UsageError(
        f"--grep {grep!r}: grep -E on {where} refuses this pattern",
        hint="an extended regular expression, e.g. --grep 'ERROR|panic'",
    )


def follow_logs(
    remote: Remote, component: Component, reporter: Reporter, lines: int, grep: str | None = None
) -> None:
    """Stream until the remote side ends or the user presses Ctrl-C (a clean end, not an error)."""
    channel = remote.channel(tail_command(component, lines, follow=True, grep=grep))
    channel.settimeout(0.5)  # wake up now and then, so Ctrl-C is seen at once
    pending = b""
    # Ctrl-C only sets a flag the loop reads: a KeyboardInterrupt raised inside paramiko's
    # buffers can leave one of its locks held, and the close below would then wait forever.
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    try:
        while not interrupted.is_set():
            try:
                chunk = channel.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            pending += chunk
            complete, _, pending = pending.rpartition(b"\n")
            if complete:
                reporter.write(complete.decode(errors="replace") + "\n")
    finally:
        signal.signal(signal.SIGINT, previous)
        with contextlib.suppress(OSError, EOFError):
            channel.shutdown_write()  # the remote `cat` sees end of input and stops the follower
            channel.status_event.wait(STOP_WAIT)
        channel.close()
    if pending:
        reporter.write(pending.decode(errors="replace") + "\n")
    if channel.exit_status_ready() and channel.recv_exit_status() == MISSING_EXIT:
        raise _missing(component, remote.description)
    if channel.exit_status_ready() and channel.recv_exit_status() == BAD_PATTERN_EXIT:
        raise _bad_pattern(grep or "", remote.description)


def run_logs(
    settings: Settings,
    reporter: Reporter,
    component: str,
    *,
    lines: int = 20,
    follow: bool = False,
    since: str | None = None,
    grep: str | None = None,
    dry_run: bool = False,
) -> None:
    comp = settings.component(component)
    moment = parse_since(since) if since is not None else None
    check_pattern(grep)
    command = tail_command(comp, lines, follow=follow, since=moment, grep=grep)  # checks too
    with Remote(settings.target_of(comp), settings.ssh) as remote:
        if dry_run:
            reporter.plan(f"logs of {comp.name} on {remote.description}", [remote.wrap(command)])
            return
        if follow:
            if not reporter.quiet:
                print(
                    f"following the {source(comp)} on {remote.description} (Ctrl-C stops)",
                    file=sys.stderr,
                )
            follow_logs(remote, comp, reporter, lines, grep)
        else:
            show_logs(remote, comp, reporter, lines, since=moment, grep=grep)
