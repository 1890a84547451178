"""iptables: the rules of a chain, the saved tables, loopback and forwarding verdicts."""

from __future__ import annotations

import itertools
import shlex
from dataclasses import dataclass

from .base import ParseError

# --- iptables -S ---------------------------------------------------------------------------------
BLOCKING_TARGETS = ("DROP", "REJECT")
# Options that restrict which packets a rule matches (a loopback ACCEPT with one of these does not
# accept all loopback traffic). `-m comment --comment` restricts nothing.
_RESTRICTING = {
    "-p", "--protocol", "-s", "--source", "-d", "--destination", "--dport", "--sport",
    "--dports", "--sports", "-o", "--out-interface", "--state", "--ctstate", "-f",
}  # fmt: skip


@dataclass(frozen=True)
class IptablesRule:
    position: int  # 1-based, as `iptables -I INPUT N` counts
    text: str
    in_interface: str | None
    in_negated: bool
    target: str | None
    restricted: bool

    @property
    def accepts_all_loopback(self) -> bool:
        return (
            self.in_interface == "lo"
            and not self.in_negated
            and self.target == "ACCEPT"
            and not self.restricted
        )

    @property
    def blocks(self) -> bool:
        return self.target in BLOCKING_TARGETS


@dataclass(frozen=True)
class IptablesChain:
    name: str
    policy: str | None  # None for user-defined chains
    rules: tuple[IptablesRule, ...]


def parse_iptables_chain(text: str, chain: str = "INPUT") -> IptablesChain:
    """`iptables -S CHAIN` output: `-P CHAIN POLICY` then `-A CHAIN …` lines in order."""
    policy: str | None = None
    rules: list[IptablesRule] = []
    seen_chain = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):  # iptables-nft prints `# Warning: …` lines
            continue
        try:
            words = shlex.split(line)
        except ValueError as error:
            raise ParseError(f"cannot split {line!r}: {error}", number) from None
        if words[:1] in (["-P"], ["-N"]) and len(words) >= 2:
            if words[1] == chain:
                seen_chain = True
                if words[0] == "-P" and len(words) >= 3:
                    policy = words[2]
            continue
        if words[:1] != ["-A"] or len(words) < 2:
            raise ParseError(f"not an `iptables -S` line: {line!r}", number)
        if words[1] != chain:
            continue
        seen_chain = True
        rules.append(_iptables_rule(len(rules) + 1, line, words[2:]))
    if not seen_chain:
        raise ParseError(f"no chain {chain} in the output")
    return IptablesChain(chain, policy, tuple(rules))


def _iptables_rule(position: int, text: str, words: list[str]) -> IptablesRule:
    in_interface = target = None
    in_negated = restricted = negate_next = False
    index = 0
    while index < len(words):
        word = words[index]
        value = words[index + 1] if index + 1 < len(words) else None
        if word == "!":
            negate_next = True
            index += 1
            continue
        if word in ("-i", "--in-interface"):
            in_interface, in_negated = value, negate_next
        elif word in ("-j", "--jump", "-g", "--goto"):
            target = value
        elif word in _RESTRICTING:
            restricted = True
        negate_next = False
        takes_value = word.startswith("-") and value is not None and not value.startswith("-")
        index += 2 if takes_value else 1
    return IptablesRule(position, text, in_interface, in_negated, target, restricted)


def parse_iptables_save(text: str, table: str = "filter") -> tuple[tuple[str, ...], ...]:
    """`iptables-save` format (iptables-persistent's /etc/iptables/rules.v4): the words of each
    `-A CHAIN …` line of `table` (`*filter` … `COMMIT`)."""
    rules: list[tuple[str, ...]] = []
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = line[1:]
        elif line == "COMMIT":
            current = None
        elif current is None:
            raise ParseError(f"a rule outside a `*TABLE` … `COMMIT` block: {line!r}", number)
        elif current == table and line.startswith("-A "):
            try:
                rules.append(tuple(shlex.split(line)))
            except ValueError as error:
                raise ParseError(f"cannot split {line!r}: {error}", number) from None
    return tuple(rules)


def accepts_forwarding(words: list[str] | tuple[str, ...], bridge: str) -> bool:
    """Do these words (an iptables rule or command) ACCEPT in FORWARD what comes in or goes out
    of `bridge` (`-I FORWARD -i lxdbr0 -j ACCEPT`, `-A FORWARD -o lxdbr0 -j ACCEPT`)?"""
    pairs = set(itertools.pairwise(words))
    adds = any((a, "FORWARD") in pairs for a in ("-A", "-I", "--append", "--insert"))
    through = any(
        (flag, bridge) in pairs for flag in ("-i", "-o", "--in-interface", "--out-interface")
    )
    return adds and through and any((j, "ACCEPT") in pairs for j in ("-j", "--jump"))


@dataclass(frozen=True)
class LoopbackVerdict:
    ok: bool
    saw: str


def loopback_verdict(chain: IptablesChain) -> LoopbackVerdict:
    """Is all loopback traffic accepted before the first DROP/REJECT rule of the chain?"""
    accept = next((r for r in chain.rules if r.accepts_all_loopback), None)
    block = next((r for r in chain.rules if r.blocks), None)
    policy = f"policy {chain.policy}" if chain.policy else "no policy"
    if accept and (block is None or accept.position < block.position):
        after = f", before the first {block.target} at rule {block.position}" if block else ""
        return LoopbackVerdict(True, f"rule {accept.position}: {accept.text}{after} ({policy})")
    if accept and block:
        return LoopbackVerdict(
            False,
            f"loopback ACCEPT only at rule {accept.position}, after rule {block.position}: "
            f"{block.text}",
        )
    if block:
        return LoopbackVerdict(
            False, f"no `-i lo -j ACCEPT` before rule {block.position}: {block.text}"
        )
    if chain.policy in BLOCKING_TARGETS:
        return LoopbackVerdict(False, f"no `-i lo -j ACCEPT` rule and {policy}")
    return LoopbackVerdict(
        True, f"no DROP/REJECT rule in {chain.name} and {policy}: loopback is not blocked"
    )
