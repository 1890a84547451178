"""`fail2ban-client status [JAIL]` and `get JAIL maxretry|findtime|bantime|logpath|failregex`,
in fail2ban's formats, for the jails of `ROOT/fail2ban/PLACE.json` (PLACE is the container `lxc
exec` runs in, or `host`): {"jails": {NAME: {"maxretry", "findtime", "bantime", "logpath": [...],
"failregex": [...]}}} (failregex as a filter file writes it, with `<HOST>`). Without that file the
server is not running.

As fail2ban 0.10 to 1.1 does, `get JAIL failregex` prints each expression as the server holds it:
`<HOST>` already replaced by the groups `ip4`, `ip6` and `dns` (fail2ban/server/failregex.py,
R_HOST; usedns left at its default), numbered by client/beautifier.py's words."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# What fail2ban 1.0.2 puts in place of `<HOST>` (usedns = warn, the default), as it prints it.
HOST_AS_PRINTED = (
    r"(?:\[?(?:(?:::f{4,6}:)?(?P<ip4>(?:\d{1,3}\.){3}\d{1,3})|(?P<ip6>(?:[0-9a-fA-F]{1,4}::?|:){1,7}"
    r"(?:[0-9a-fA-F]{1,4}|(?<=:):)))\]?|(?P<dns>[\w\-.^_]*\w))"
)
NOT_RUNNING = (
    "ERROR   Failed to access socket path: /var/run/fail2ban/fail2ban.sock. Is fail2ban running?\n"
)


def place() -> str:
    return os.environ.get("LXC_STANDIN_CONTAINER", "host")


def _tree(items: list[str], indent: str = "") -> list[str]:
    return [f"{indent}{'`-' if i == len(items) - 1 else '|-'} {x}" for i, x in enumerate(items)]


def _status(jails: dict[str, Any], name: str | None) -> list[str]:
    if name is None:
        return [
            "Status",
            *_tree([f"Number of jail:\t{len(jails)}", f"Jail list:\t{', '.join(jails)}"]),
        ]
    jail = jails[name]
    files = " ".join(jail.get("logpath", []))
    return [
        f"Status for the jail: {name}",
        "|- Filter",
        *_tree(["Currently failed:\t0", "Total failed:\t0", f"File list:\t{files}"], "|  "),
        "`- Actions",
        *_tree(["Currently banned:\t0", "Total banned:\t0", "Banned IP list:\t"], "   "),
    ]


def _get(jail: dict[str, Any], key: str) -> list[str]:
    if key in ("maxretry", "findtime", "bantime"):
        return [str(jail[key])]
    if key == "logpath":
        files = jail.get("logpath", [])
        return (
            ["Current monitored log file(s):", *_tree(files)]
            if files
            else ["No file is currently monitored"]
        )
    if key == "failregex":
        regexes = [
            f"[{i}]: {r.replace('<HOST>', HOST_AS_PRINTED)}"
            for i, r in enumerate(jail.get("failregex", []))
        ]
        return (
            ["The following regular expression are defined:", *_tree(regexes)]
            if regexes
            else ["No regular expression is defined"]
        )
    raise KeyError(key)


def main(root: str, argv: list[str]) -> int:
    state = Path(root) / "fail2ban" / f"{place()}.json"
    if not state.exists():
        sys.stderr.write(NOT_RUNNING)
        return 255
    jails: dict[str, Any] = json.loads(state.read_text())["jails"]
    jail_name = argv[1] if len(argv) > 1 else None
    if jail_name is not None and jail_name not in jails:
        sys.stderr.write(
            f"ERROR   NOK: ('{jail_name}',)\nSorry but the jail '{jail_name}' does not exist\n"
        )
        return 255
    if argv[:1] == ["status"] and len(argv) <= 2:
        print("\n".join(_status(jails, jail_name)))
        return 0
    if argv[:1] == ["get"] and len(argv) == 3 and jail_name is not None:
        try:
            print("\n".join(_get(jails[jail_name], argv[2])))
        except KeyError:
            sys.stderr.write("ERROR   Invalid command (no get action or not yet implemented)\n")
            return 255
        return 0
    sys.stderr.write(f"fail2ban-client stand-in: unsupported: {' '.join(argv)}\n")
    return 2
