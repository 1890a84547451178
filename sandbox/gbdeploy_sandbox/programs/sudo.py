"""Stand-in `sudo`, for a host where the ssh user reaches its containers through sudo.

`sudo [-n] [-u USER] [--] CMD…` runs CMD (as USER through `runuser` when given) with
SUDO_USER, SUDO_UID and SUDO_COMMAND set, and logs it to ROOT/sudo.log, as sudo does both.
root may always; another user only when listed in ROOT/sudoers (one name a line, as a NOPASSWD
rule). Anyone else
is asked for a password, which a non-interactive session cannot give: with `-n` sudo says
`sudo: a password is required`, without a terminal it says that a terminal is required, both
with exit 1, as sudo does.
"""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path

PASSWORD_REQUIRED = "sudo: a password is required\n"
TERMINAL_REQUIRED = (
    "sudo: a terminal is required to read the password; either use the -S option to read from "
    "standard input or configure an askpass helper\n"
)


def _allowed(root: Path) -> bool:
    if os.geteuid() == 0:
        return True
    rules = root / "sudoers"
    names = rules.read_text().split() if rules.is_file() else []
    return pwd.getpwuid(os.geteuid()).pw_name in names


def main(root: str, argv: list[str]) -> int:
    non_interactive = False
    user: str | None = None
    args = list(argv)
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option == "--":
            break
        if option == "-n":
            non_interactive = True
        elif option == "-u" and args:
            user = args.pop(0)
        else:
            sys.stderr.write(f"sudo stand-in: unsupported option {option}\n")
            return 1
    if not args:
        sys.stderr.write("usage: sudo [-n] [-u user] command\n")
        return 1
    if not _allowed(Path(root)):
        if non_interactive:
            sys.stderr.write(PASSWORD_REQUIRED)
        else:
            sys.stderr.write(TERMINAL_REQUIRED + PASSWORD_REQUIRED)
        return 1
    caller = pwd.getpwuid(os.getuid())
    with open(Path(root) / "sudo.log", "a") as log:  # as sudo logs each command it runs
        # One line per command: control characters as syslog writes them (#012 for a newline).
        command = "".join(c if c.isprintable() else f"#{ord(c):03o}" for c in " ".join(args))
        log.write(f"{caller.pw_name} : USER={user or 'root'} ; COMMAND={command}\n")
    os.environ.update(
        SUDO_USER=caller.pw_name, SUDO_UID=str(caller.pw_uid), SUDO_COMMAND=" ".join(args)
    )
    if user is not None and user != pwd.getpwuid(os.geteuid()).pw_name:
        args = ["runuser", "-u", user, "--", *args]
    try:
        os.execvp(args[0], args)
    except OSError:
        sys.stderr.write(f"sudo: {args[0]}: command not found\n")
        return 1
    return 1  # not reached: exec replaced this process
