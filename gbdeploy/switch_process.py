"""The service side of a switch that the deploy layer does not have: during a switch two processes
run from the same path (the old one's executable shows as `PATH (deleted)` once the new binary is
renamed over it), so the old one is found by the port it listens on, drained, and stopped by its
pid alone — never by path, which would stop the new one too.

All of it is shell text run on the target as its ssh user (root or the service user, who may read
the service's /proc/PID/fd), with `ss` where there is one, else /proc/net/tcp and awk.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .remote.connection import quote

# `runs PID`: whether PID runs exactly "$b" (or "$b (deleted)", once a new binary was renamed
# over the path); the `x` keeps a trailing newline of the path from being stripped.
RUNS = (
    'runs() { e=$(readlink "/proc/$1/exe" 2>/dev/null && echo x) || return 1; e=${e%?x}; '
    'case $e in "$b"|"$b (deleted)") return 0 ;; esac; return 1; }'
)
POLL = 0.05  # seconds between looks while a stopped process exits, or a port drains
QUIET_LOOKS = 6  # looks in a row with no connection on the old port: drained


def _sockets(port: int, *, state: str, ss_filter: str, awk_action: str, ss_tail: str) -> str:
    """`ss` (netlink) when there is one, else /proc/net/tcp*: slow to read on a host holding many
    TIME_WAIT sockets (80 000 on the test machine: 0.16 s a read, seconds under load)."""
    return (
        "if command -v ss >/dev/null 2>&1; then "
        f"ss -Htn {ss_filter} 'sport = :{int(port)}' {ss_tail}; "
        f"else awk -v p={int(port):04X} "
        f"'$4 == \"{state}\" && substr($2, length($2) - 3) == p {awk_action}' "
        "/proc/net/tcp /proc/net/tcp6 2>/dev/null; fi"
    )


def listening_inodes(port: int) -> str:
    """Shell text setting `$inodes` to ` INODE ` for each socket listening on `port`."""
    ss_tail = "| grep -o 'ino:[0-9]*' | sed 's/^ino:\\(.*\\)$/ \\1 /' | tr -d '\\n'"
    found = _sockets(
        port,
        state="0A",
        ss_filter="-l -e",
        awk_action='{ printf " %s ", $10 }',
        ss_tail=ss_tail,
    )
    return f"inodes=$({found})"


def connections_count(port: int) -> str:
    """Shell text setting `$n` to the established connections whose local port is `port`."""
    found = _sockets(
        port,
        state="01",
        ss_filter="state established",
        awk_action="{ n++ } END { print n + 0 }",
        ss_tail="| wc -l",
    )
    return f"n=$({found})"


def binary_is(binary: str) -> str:
    """Shell text setting `$b` to `binary` as the kernel shows it in /proc/PID/exe (symlinks in
    its path resolved)."""
    q = quote(binary)
    return f'b=$(readlink -f -- {q} 2>/dev/null) || b={q}; [ -n "$b" ] || b={q}'


def serving_pid_command(binary: str, port: int) -> str:
    """Prints the pid of each process running `binary` that listens on `port`, one a line;
    nothing when none does (free, or another program's)."""
    return "\n".join(
        [
            binary_is(binary),
            RUNS,
            listening_inodes(port),
            '[ -n "$inodes" ] || exit 0',
            "for p in /proc/[0-9]*; do",
            '  pid=${p#/proc/}; runs "$pid" || continue',
            '  for fd in "/proc/$pid/fd/"*; do',
            '    link=$(readlink "$fd" 2>/dev/null) || continue',
            '    case $link in "socket:["*"]") ;; *) continue ;; esac',
            "    inode=${link#socket:[}; inode=${inode%]}",
            '    case $inodes in *" $inode "*) echo "$pid"; break ;; esac',
            "  done",
            "done",
        ]
    )


def drain_command(port: int, seconds: float) -> str:
    """Wait until nothing has been connected to `port` for QUIET_LOOKS looks in a row, at most
    `seconds`: Caddy's reload returns while its old config still proxies the requests it had
    accepted to the old port (killing the old process then fails them: measured 11 of 7089
    requests over 20 switches), and those connections are what this waits out. Prints
    `drained` or `drain timed out with N connections`."""
    looks = max(1, round(seconds / POLL))
    return "\n".join(
        [
            "quiet=0 i=0",
            "while :; do",
            f"  {connections_count(port)}",
            '  if [ "$n" -eq 0 ]; then quiet=$((quiet + 1)); else quiet=0; fi',
            f'  [ "$quiet" -ge {QUIET_LOOKS} ] && {{ echo drained; exit 0; }}',
            f'  [ "$i" -ge {looks} ] && {{ echo "drain timed out with $n connections"; exit 0; }}',
            f"  sleep {POLL}; i=$((i + 1))",
            "done",
        ]
    )


def parse_pids(out: str) -> list[int]:
    return sorted({int(word) for word in out.split() if word.isdigit()})


def stop_pid_command(binary: str, pid: int, timeout: float) -> str:
    """SIGTERM exactly `pid` if it still runs `binary` (a pid since reused by another program is
    left alone), give it `timeout` seconds, then SIGKILL. Prints `none`, `stopped PID` or
    `killed PID`; exits 1 if it survives SIGKILL."""
    looks = max(1, round(timeout / POLL))
    p = quote(int(pid))
    wait = f'i=0; while runs {p} && [ "$i" -lt LOOKS ]; do sleep {POLL}; i=$((i + 1)); done'
    return "\n".join(
        [
            binary_is(binary),
            RUNS,
            f"runs {p} || {{ echo none; exit 0; }}",
            f"kill -TERM {p} 2>/dev/null",
            wait.replace("LOOKS", str(looks)),
            f"runs {p} || {{ echo stopped {p}; exit 0; }}",
            f"kill -KILL {p} 2>/dev/null",
            wait.replace("LOOKS", str(round(5.0 / POLL))),
            f"runs {p} && {{ echo 'survived SIGKILL: {int(pid)}' >&2; exit 1; }}",
            f"echo killed {p}",
        ]
    )


def serving_ports(run: Callable[[str], str], binary: str, ports: list[int]) -> dict[int, list[int]]:
    """The pids of `binary` listening on each of a switch component's `ports` (`run` sends a
    command to the target and returns what it printed)."""
    return {port: parse_pids(run(serving_pid_command(binary, port))) for port in ports}


def live_port(serving: dict[int, list[int]], recorded: object = None) -> int | None:
    """The port a switch component serves on: the one port with a process; while both have one
    (a switch in progress), the one the last deploy recorded (`recorded`, its `switch.live`)."""
    busy = [port for port, pids in serving.items() if pids]
    if len(busy) == 1:
        return busy[0]
    if recorded in busy or (not busy and recorded in serving):
        return int(recorded)  # type: ignore[arg-type]
    return busy[0] if busy else None


def live_port_on_target(
    run: Callable[[str], str], binary: str, ports: list[int], deploy_log: str
) -> int:
    """The port a switch component serves on now (see `live_port`; the last deploy's record
    while nothing serves; else the first port)."""
    last = run(f"tail -n 1 -- {quote(deploy_log)} 2>/dev/null || true").strip()
    try:
        recorded = (json.loads(last or "{}").get("switch") or {}).get("live")
    except (ValueError, AttributeError):
        recorded = None
    live = live_port(serving_ports(run, binary, ports), recorded)
    return live if live is not None else ports[0]
