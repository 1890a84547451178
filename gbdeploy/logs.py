"""`logs`: a component's log on its target, the same way in as a deploy (ssh, container).

The log is the component's `log` file, or, for a systemd component without one, its unit's
journal. `--follow` streams until Ctrl-C: the remote `tail -F` (or `journalctl -f`) runs beside a
`cat` that waits on the channel's input, so closing our side ends the remote follower too instead
of leaving it behind on the target.
"""

from __future__ import annotations

import contextlib
import sys

from .config import Component, Settings
from .connection import Remote, quote
from .errors import RemoteError
from .output import Reporter

STOP_WAIT = 5.0  # seconds for the remote follower to end once our side is closed
MISSING_EXIT = 66  # the remote command's "no such log" answer, distinct from tail's own failures


def uses_journal(component: Component) -> bool:
    return component.restart.mode == "systemd" and component.log is None


def source(component: Component) -> str:
    if uses_journal(component):
        return f"journal of {component.restart.unit}"
    return component.log_path


def tail_command(component: Component, lines: int, *, follow: bool = False) -> str:
    """The remote command that prints the last `lines` lines (and, with `follow`, what comes)."""
    if uses_journal(component):
        check = ""
        unit = quote(component.restart.unit)
        reader = f"journalctl --no-pager -u {unit} -n {int(lines)}" + (" -f" if follow else "")
    else:
        path = quote(component.log_path)
        check = f"[ -e {path} ] || {{ echo 'no such file' >&2; exit {MISSING_EXIT}; }}\n"
        reader = f"tail -n {int(lines)}" + (" -F" if follow else "") + f" -- {path}"
    if not follow:
        return check + reader
    # The follower runs in the background; `cat` returns when we close our side of the channel.
    return f'{check}{reader} &\nfollower=$!\ncat >/dev/null\nkill "$follower" 2>/dev/null\nexit 0'


def _missing(component: Component, where: str) -> RemoteError:
    return RemoteError(
        f"no log at {component.log_path} on {where}",
        hint=f"the service writes it once started; the path is components.{component.name}.log",
    )


def show_logs(remote: Remote, component: Component, reporter: Reporter, lines: int) -> None:
    result = remote.run(tail_command(component, lines), check=False)
    if result.exit_code == MISSING_EXIT:
        raise _missing(component, remote.description)
    if not result.ok:
        detail = (result.stderr.strip() or result.stdout.strip())[-500:]
        raise RemoteError(
            f"on {remote.description}: reading the {source(component)} failed "
            f"(exit {result.exit_code})" + (f"\n  {detail}" if detail else "")
        )
    if result.stdout:
        reporter.write(result.stdout if result.stdout.endswith("\n") else result.stdout + "\n")


def follow_logs(remote: Remote, component: Component, reporter: Reporter, lines: int) -> None:
    """Stream until the remote side ends or the user presses Ctrl-C (a clean end, not an error)."""
    channel = remote.channel(tail_command(component, lines, follow=True))
    channel.settimeout(0.5)  # wake up now and then, so Ctrl-C is seen at once
    pending = b""
    try:
        while True:
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
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(OSError, EOFError):
            channel.shutdown_write()  # the remote `cat` sees end of input and stops the follower
            channel.status_event.wait(STOP_WAIT)
        channel.close()
    if pending:
        reporter.write(pending.decode(errors="replace") + "\n")
    if channel.exit_status_ready() and channel.recv_exit_status() == MISSING_EXIT:
        raise _missing(component, remote.description)


def run_logs(
    settings: Settings,
    reporter: Reporter,
    component: str,
    *,
    lines: int = 20,
    follow: bool = False,
) -> None:
    comp = settings.component(component)
    with Remote(settings.target_of(comp), settings.ssh) as remote:
        if follow:
            if not reporter.quiet:
                print(
                    f"following the {source(comp)} on {remote.description} (Ctrl-C stops)",
                    file=sys.stderr,
                )
            follow_logs(remote, comp, reporter, lines)
        else:
            show_logs(remote, comp, reporter, lines)
