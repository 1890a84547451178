"""`crontab -l`: the crontab of `ROOT/crontab/PLACE` (PLACE is the container `lxc exec` runs in,
or `host`); without one, cron's own message and exit 1."""

from __future__ import annotations

import sys
from pathlib import Path

from .fail2ban_client import place


def main(root: str, argv: list[str]) -> int:
    if argv != ["-l"]:
        sys.stderr.write(f"crontab stand-in: only -l, not {' '.join(argv)}\n")
        return 2
    path = Path(root) / "crontab" / place()
    if not path.exists():
        sys.stderr.write("no crontab for root\n")
        return 1
    sys.stdout.write(path.read_text())
    return 0
