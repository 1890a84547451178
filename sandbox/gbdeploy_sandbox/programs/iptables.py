"""`iptables -S [CHAIN]`, `-I CHAIN [N] RULE…`, `-A CHAIN RULE…` over the rules kept in
`ROOT/iptables.rules` (`-P …` and `-A …` lines, as `iptables -S` prints them)."""

from __future__ import annotations

import sys
from pathlib import Path


def read_rules(root: str) -> tuple[list[str], list[str]]:
    """(policies, rules) as `-P …` and `-A …` lines."""
    state = Path(root) / "iptables.rules"
    lines = state.read_text().split("\n") if state.exists() else ["-P INPUT ACCEPT"]
    return [x for x in lines if x.startswith("-P ")], [x for x in lines if x.startswith("-A ")]


def _chain(line: str) -> str:
    return line.split()[1]


def main(root: str, argv: list[str]) -> int:
    policies, rules = read_rules(root)
    if argv[:1] == ["-S"]:
        chain = argv[1] if len(argv) > 1 else None
        if chain and not any(_chain(x) == chain for x in policies + rules):
            sys.stderr.write("iptables: No chain/target/match by that name.\n")
            return 1
        for line in policies + rules:
            if chain is None or _chain(line) == chain:
                print(line)
        return 0
    if argv[:1] in (["-I"], ["-A"]) and len(argv) > 2:
        chain, rest = argv[1], argv[2:]
        position = None
        if argv[0] == "-I":
            position = 1
            if rest and rest[0].isdigit():
                position, rest = int(rest[0]), rest[1:]
        rule = " ".join(["-A", chain, *rest])
        indexes = [i for i, x in enumerate(rules) if _chain(x) == chain]
        if position is None or position > len(indexes):
            rules.append(rule)
        else:
            rules.insert(indexes[position - 1], rule)
        (Path(root) / "iptables.rules").write_text("\n".join(policies + rules) + "\n")
        return 0
    sys.stderr.write(f"iptables stand-in: unsupported: {' '.join(argv)}\n")
    return 2
