"""The service side of a switch that the deploy layer does not have: during a switch two processes
run from the same path (the old one's executable shows as `PATH (deleted)` once the new binary is
renamed over it), so the old one is found by the port it listens on and stopped by its pid alone —
never by path, which would stop the new one too.

Both are shell text run on the target as its ssh user (root or the service user, who may read the
service's /proc/PID/fd), and need nothing but /proc, awk and kill.
"""

from __future__ import annotations

from .connection import quote
from .probes import FIND_PIDS, resolve_binary

POLL = 0.05  # seconds between looks while a stopped process exits


def listening_inodes(port: int) -> str:
    """Shell text setting `$inodes` to the socket inodes listening on `port` (IPv4 or IPv6)."""
    return (
        f"inodes=$(awk -v p={int(port):04X} "
        '\'$4 == "0A" && substr($2, length($2) - 3) == p { printf " %s ", $10 }\' '
        "/proc/net/tcp /proc/net/tcp6 2>/dev/null)"
    )


def serving_pid_command(binary: str, port: int) -> str:
    """Prints the pid of each process running `binary` that listens on `port`, one a line;
    nothing when none does (free, or another program's)."""
    return "\n".join(
        [
            resolve_binary(binary),
            FIND_PIDS,
            listening_inodes(port),
            '[ -n "$inodes" ] || exit 0',
            "for pid in $(pids); do",
            '  for fd in "/proc/$pid/fd/"*; do',
            '    link=$(readlink "$fd" 2>/dev/null) || continue',
            '    case $link in "socket:["*"]") ;; *) continue ;; esac',
            "    inode=${link#socket:[}; inode=${inode%]}",
            '    case $inodes in *" $inode "*) echo "$pid"; break ;; esac',
            "  done",
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
            resolve_binary(binary),
            FIND_PIDS,
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
