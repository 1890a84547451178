"""`valkey-cli … ping`: PONG only while the rules of `ROOT/iptables.rules` let loopback reach
port 6379 (a DROP on 6379 before any `-i lo -j ACCEPT` times the connection out)."""

from __future__ import annotations

import sys

from .iptables import read_rules


def main(root: str, argv: list[str]) -> int:
    if argv[-1:] != ["ping"]:
        sys.stderr.write("valkey-cli stand-in: only `ping`\n")
        return 2
    for line in read_rules(root)[1]:
        words = line.split()
        if words[:2] != ["-A", "INPUT"]:
            continue
        if (
            words[-2:] == ["-j", "ACCEPT"]
            and "-i" in words
            and words[words.index("-i") + 1] == "lo"
        ):
            break
        if words[-2:] == ["-j", "DROP"] and (
            "--dport" not in words or words[words.index("--dport") + 1] == "6379"
        ):
            print("Could not connect to Valkey at 127.0.0.1:6379: Connection timed out")
            return 1
    print("PONG")
    return 0
