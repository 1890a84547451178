"""`getent hosts NAME…` from the records of `ROOT/dns.json` ({NAME: [ADDRESS, …]}), never a real
lookup: one `ADDRESS  NAME` line per name found, exit 2 when a name has none. Other databases
(`passwd`, `group`, …) go to the real getent."""

from __future__ import annotations

import json
import os
from pathlib import Path

REAL = "/usr/bin/getent"


def main(root: str, argv: list[str]) -> int:
    if argv[:1] != ["hosts"]:
        os.execv(REAL, [REAL, *argv])
    state = Path(root) / "dns.json"
    records: dict[str, list[str]] = json.loads(state.read_text()) if state.exists() else {}
    code = 0
    for name in argv[1:]:
        addresses = records.get(name.lower().rstrip("."), [])
        if addresses:
            print(f"{addresses[0]:<15} {name}")
        else:
            code = 2
    return code
