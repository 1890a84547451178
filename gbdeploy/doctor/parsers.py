"""Pure parsers for what `doctor` reads on the production machines.

Each function takes the text a command printed (or a file held) and returns typed values; none of
them runs anything, so every one is tested on real samples, good and broken.
"""

from __future__ import annotations

import configparser
import itertools
import re
import shlex
from dataclasses import dataclass
from typing import Any

import yaml


class ParseError(ValueError):
    """The text is not what the command or file format should look like (`line` when known)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


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


# --- LXD ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LxcDevice:
    name: str
    type: str
    source: str | None = None
    pool: str | None = None
    path: str | None = None
    listen: str | None = None
    connect: str | None = None

    @property
    def is_host_mount(self) -> bool:
        """A disk that is not a storage-pool volume: a path of the host (or another container)."""
        return self.type == "disk" and bool(self.source) and not self.pool

    @property
    def listen_ports(self) -> frozenset[int]:
        return listen_ports(self.listen) if self.type == "proxy" and self.listen else frozenset()


@dataclass(frozen=True)
class LxcInstanceConfig:
    config: dict[str, str]
    devices: tuple[LxcDevice, ...]

    @property
    def privileged(self) -> bool:
        return self.config.get("security.privileged", "false").lower() == "true"


def _yaml_mapping(text: str, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ParseError(f"{what} is not YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParseError(f"{what} is not a YAML mapping")
    return data


def _devices(data: Any, what: str) -> tuple[LxcDevice, ...]:
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise ParseError(f"{what}: devices are not a mapping")
    devices = []
    for name, raw in data.items():
        if not isinstance(raw, dict) or "type" not in raw:
            raise ParseError(f"{what}: device {name!r} has no type")
        keys = ("source", "pool", "path", "listen", "connect")
        devices.append(
            LxcDevice(str(name), str(raw["type"]), **{k: str(raw[k]) for k in keys if k in raw})
        )
    return tuple(devices)


def parse_lxc_config(text: str) -> LxcInstanceConfig:
    """`lxc config show NAME --expanded`: the instance's `config:` keys and `devices:`."""
    data = _yaml_mapping(text, "lxc config show")
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise ParseError("lxc config show: `config` is not a mapping")
    # LXD writes every value as a string ("true"); a hand-edited YAML may hold a bool.
    values = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.items()}
    return LxcInstanceConfig(values, _devices(data.get("devices"), "lxc config show"))


def parse_lxc_devices(text: str) -> tuple[LxcDevice, ...]:
    """`lxc config device show NAME`: a mapping of device name to its keys."""
    return _devices(_yaml_mapping(text, "lxc config device show"), "lxc config device show")


CONTAINER_MARKER = "### lxc-container "


def parse_config_dump(text: str) -> dict[str, LxcInstanceConfig]:
    """Several `lxc config show NAME --expanded` outputs, each after a `### lxc-container NAME`
    line (what the proxy-devices probe prints)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(CONTAINER_MARKER):
            current = sections.setdefault(line[len(CONTAINER_MARKER) :].strip(), [])
        elif current is not None:
            current.append(line)
        elif line.strip():
            raise ParseError(f"config dump does not start with a {CONTAINER_MARKER!r} line")
    return {name: parse_lxc_config("\n".join(lines)) for name, lines in sections.items()}


def listen_ports(listen: str) -> frozenset[int]:
    """The ports of a proxy device's `listen`: `tcp:0.0.0.0:80`, `udp:[::]:53`,
    `tcp:1.2.3.4:80,443`, `tcp:0.0.0.0:8000-8002`."""
    _, _, address = listen.partition(":")
    spec = address.rsplit(":", 1)[-1]
    ports: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ParseError(f"proxy listen address {listen!r} has no port")
        ports.update(range(int(low), int(high or low) + 1))
    return frozenset(ports)


# --- Caddyfile / Corefile (the same syntax) ------------------------------------------------------
@dataclass(frozen=True)
class Directive:
    line: int
    args: tuple[str, ...]  # the directive's name first; empty for a bare `{ … }` block
    block: tuple[Directive, ...] | None = None

    @property
    def name(self) -> str:
        return self.args[0] if self.args else ""

    def find(self, name: str) -> Directive | None:
        return next((d for d in self.block or () if d.name == name), None)


def _tokens(text: str) -> list[tuple[int, str, bool]]:
    """(line, token, quoted) with comments dropped; quotes and backticks keep spaces."""
    tokens: list[tuple[int, str, bool]] = []
    line, index, length = 1, 0, len(text)
    while index < length:
        char = text[index]
        if char == "\n":
            line += 1
            index += 1
        elif char.isspace():
            index += 1
        elif char == "#":
            while index < length and text[index] != "\n":
                index += 1
        elif char in '"`':
            start_line, index, value = line, index + 1, []
            while index < length and text[index] != char:
                if char == '"' and text[index] == "\\" and index + 1 < length:
                    index += 1
                if text[index] == "\n":
                    line += 1
                value.append(text[index])
                index += 1
            if index >= length:
                raise ParseError("unterminated quoted text", start_line)
            tokens.append((start_line, "".join(value), True))
            index += 1
        else:
            start = index
            while index < length and not text[index].isspace():
                index += 1
            tokens.append((line, text[start:index], False))
    return tokens


def parse_caddy_syntax(text: str) -> tuple[Directive, ...]:
    """The top-level entries of a Caddyfile-format file (Caddy's and CoreDNS's config): each line of
    tokens is a directive; one ending in a lone `{` owns the lines up to its matching `}`."""
    tokens = _tokens(text)
    position = 0

    def entries(depth: int, opened_at: int) -> tuple[Directive, ...]:
        nonlocal position
        found: list[Directive] = []
        while position < len(tokens):
            line, token, quoted = tokens[position]
            if token == "}" and not quoted:
                if depth == 0:
                    raise ParseError("`}` without a matching `{`", line)
                position += 1
                return tuple(found)
            args: list[str] = []
            block: tuple[Directive, ...] | None = None
            while position < len(tokens) and tokens[position][0] == line:
                _, word, is_quoted = tokens[position]
                if word == "}" and not is_quoted:
                    break
                position += 1
                if word == "{" and not is_quoted:
                    block = entries(depth + 1, line)
                    break
                args.append(word)
            found.append(Directive(line, tuple(args), block))
        if depth:
            raise ParseError("`{` is never closed", opened_at)
        return tuple(found)

    return entries(0, 0)


def _is_snippet(entry: Directive) -> bool:
    return entry.name.startswith("(") and entry.name.endswith(")")


def _addresses(args: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(a for arg in args for a in arg.split(",") if a.strip())


@dataclass(frozen=True)
class CaddyStorage:
    module: str
    root: str | None


@dataclass(frozen=True)
class CaddyfileSummary:
    global_block_line: int | None  # where the global options block starts, if there is one
    storage: CaddyStorage | None
    sites: tuple[tuple[str, ...], ...]  # the addresses of each site block
    imports: tuple[str, ...]  # top-level `import` targets (sites there are not counted)

    @property
    def vhost_count(self) -> int:
        return sum(len(addresses) for addresses in self.sites)

    @property
    def stores_on_file_system(self) -> bool:
        return self.storage is not None and self.storage.module == "file_system"


def parse_caddyfile(text: str) -> CaddyfileSummary:
    """The global options block (and its `storage`), the site blocks and their addresses."""
    entries = parse_caddy_syntax(text)
    global_block = entries[0] if entries and not entries[0].args and entries[0].block else None
    storage = None
    if global_block:
        found = global_block.find("storage")
        if found and len(found.args) >= 2:
            root = found.args[2] if len(found.args) >= 3 else None
            root_directive = found.find("root")
            if root_directive and len(root_directive.args) >= 2:
                root = root_directive.args[1]
            storage = CaddyStorage(found.args[1], root)
    rest = [e for e in entries if e is not global_block]
    imports = tuple(e.args[1] for e in rest if e.name == "import" and len(e.args) >= 2)
    sites = tuple(
        _addresses(e.args) for e in rest if e.block is not None and e.args and not _is_snippet(e)
    )
    if not sites:
        # A file with a single site may leave out the braces: its first line is the address.
        loose = [e for e in rest if e.block is None and e.name != "import"]
        if loose:
            sites = (_addresses(loose[0].args),)
    return CaddyfileSummary(global_block.line if global_block else None, storage, sites, imports)


def with_file_system_storage(text: str, root: str) -> str:
    """The Caddyfile `text` with `storage file_system { root ROOT }` added to its global options
    block (a global block is added at the top when there is none). Everything else is kept as it
    is, byte for byte. Raises ParseError when a `storage` is already set."""
    summary = parse_caddyfile(text)
    if summary.storage is not None:
        raise ParseError(f"a storage is already set ({summary.storage.module})")
    storage = f"\tstorage file_system {{\n\t\troot {root}\n\t}}\n"
    if summary.global_block_line is None:
        return "{\n" + storage + "}\n\n" + text
    lines = text.splitlines(keepends=True)
    opening = summary.global_block_line - 1  # the line holding the global block's `{`
    if lines[opening].strip() != "{":
        raise ParseError("the global options block does not open on a line of its own", opening + 1)
    return "".join([*lines[: opening + 1], storage, *lines[opening + 1 :]])


@dataclass(frozen=True)
class CorefileZone:
    line: int
    keys: tuple[str, ...]  # `example.com:53`, `.`
    has_acl: bool


def parse_corefile(text: str) -> tuple[CorefileZone, ...]:
    """Every server block of a Corefile and whether it has an `acl` plugin (directly or through an
    `import` of a snippet that has one)."""
    entries = parse_caddy_syntax(text)
    snippets_with_acl = {
        e.name[1:-1] for e in entries if _is_snippet(e) and e.find("acl") is not None
    }
    zones = []
    for entry in entries:
        if _is_snippet(entry):
            continue
        if entry.block is None:
            raise ParseError(f"{' '.join(entry.args)!r} is not a server block", entry.line)
        has_acl = any(
            d.name == "acl"
            or (d.name == "import" and d.args[1:2] and d.args[1] in snippets_with_acl)
            for d in entry.block
        )
        zones.append(CorefileZone(entry.line, _addresses(entry.args), has_acl))
    return tuple(zones)


# --- ZFS, du, systemd ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ZfsSnapshot:
    name: str
    created: int  # seconds since the epoch
    used: int  # bytes


def parse_zfs_snapshots(text: str) -> tuple[ZfsSnapshot, ...]:
    """`zfs list -H -p -t snapshot -o name,creation,used`: tab-separated, exact numbers."""
    snapshots = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
            raise ParseError(
                f"expected NAME<TAB>CREATION<TAB>USED in exact numbers: {line!r}", number
            )
        snapshots.append(ZfsSnapshot(fields[0], int(fields[1]), int(fields[2])))
    return tuple(snapshots)


def stale_snapshots(
    snapshots: tuple[ZfsSnapshot, ...], *, now: float, retention_days: float
) -> tuple[ZfsSnapshot, ...]:
    """Snapshots older than the retention, largest first."""
    cutoff = now - retention_days * 86400
    old = [s for s in snapshots if s.created < cutoff]
    return tuple(sorted(old, key=lambda s: s.used, reverse=True))


def parse_du_bytes(text: str) -> int:
    """`du -sb PATH`: `BYTES<TAB>PATH`."""
    first = text.split(None, 1)[0] if text.strip() else ""
    if not first.isdigit():
        raise ParseError(f"not `du -sb` output: {text.strip()[:80]!r}")
    return int(first)


def parse_environment(value: str) -> dict[str, str]:
    """`systemctl show -p Environment --value`: `A=1 "B=two words"` (systemd quotes values with
    spaces)."""
    try:
        words = shlex.split(value)
    except ValueError as error:
        raise ParseError(f"cannot split Environment {value!r}: {error}") from None
    return dict(w.split("=", 1) for w in words if "=" in w)


def parse_exec_path(value: str) -> str | None:
    """The program of `systemctl show -p ExecStart --value`: `{ path=/x ; argv[]=/x -a ; … }`, or
    a plain command line."""
    value = value.strip()
    if not value:
        return None
    if value.startswith("{"):
        for part in value.strip("{} ").split(";"):
            key, _, path = part.strip().partition("=")
            if key == "path":
                return path.strip()
        return None
    return value.split()[0].lstrip("@-:+!")


@dataclass(frozen=True)
class UnitExec:
    unit: str
    active: str
    enabled: str  # `systemctl is-enabled`: enabled, disabled, static, …
    exec_path: str | None


def parse_unit_table(text: str) -> tuple[UnitExec, ...]:
    """Lines of `UNIT<TAB>ACTIVE-STATE<TAB>ENABLED-STATE<TAB>EXECSTART` (the systemd probe's)."""
    units = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t", 3)
        if len(fields) < 3:
            raise ParseError(
                f"expected UNIT<TAB>ACTIVE<TAB>ENABLED<TAB>EXECSTART: {line!r}", number
            )
        exec_path = parse_exec_path(fields[3]) if len(fields) > 3 else None
        units.append(UnitExec(fields[0], fields[1], fields[2], exec_path))
    return tuple(units)


# --- ufw, fail2ban -------------------------------------------------------------------------------
def parse_shell_assignments(text: str) -> dict[str, str]:
    """A shell-style defaults file (`/etc/default/ufw`): `KEY="VALUE"` lines, `#` comments."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if not equals or not key.replace("_", "").isalnum():
            raise ParseError(f"not a KEY=VALUE line: {line!r}", number)
        try:
            words = shlex.split(value, comments=True)
        except ValueError as error:
            raise ParseError(f"cannot split {line!r}: {error}", number) from None
        values[key] = " ".join(words)
    return values


def split_sections(text: str) -> dict[str, str]:
    """`### KEY` sections of a probe's output → {KEY: text} (what comes before the first
    marker is left out)."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("### "):
            current = sections.setdefault(line[4:].strip(), [])
        else:
            current.append(line)
    return {key: "\n".join(lines) for key, lines in sections.items()}


def _tree_items(text: str) -> list[str]:
    """The `|- item` / `` `- item `` lines of fail2ban-client's answers, without the branch."""
    return [m.group(1) for line in text.splitlines() if (m := _TREE_ITEM.match(line))]


_TREE_ITEM = re.compile(r"(?:\|  |   )*[|`]- (.*)")


def parse_fail2ban_status(text: str) -> tuple[str, ...]:
    """`fail2ban-client status`: the names in its `Jail list:` line."""
    for item in _tree_items(text):
        key, _, value = item.partition(":")
        if key.strip() == "Jail list":
            return tuple(name.strip() for name in value.split(",") if name.strip())
    raise ParseError("no `Jail list:` in the output of `fail2ban-client status`")


def parse_fail2ban_list(text: str) -> tuple[str, ...]:
    """`fail2ban-client get JAIL logpath|failregex`: the listed files or regular expressions
    (`[0]: ` numbering dropped); empty when none is set."""
    if text.strip().startswith(("No file", "No regular expression")):
        return ()
    values = []
    for item in _tree_items(text):
        if item.startswith("[") and "]: " in item:
            item = item.split("]: ", 1)[1]
        values.append(item)
    if not values:
        raise ParseError(f"not a list from fail2ban-client: {text.strip()[:80]!r}")
    return tuple(values)


# fail2ban's tags, as fail2ban (0.10 to 1.1) resolves them when it loads a filter: `<HOST>` becomes
# three alternatives, groups `ip4`, `ip6` and `dns` (0.9 had one group, `host`). The server keeps
# only the resolved text, so `fail2ban-client get JAIL failregex` prints that, not the tags.
_IP4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_IP6 = r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
_DNS = r"[\w.-]*\w"
_FAIL2BAN_TAGS = {
    "HOST": rf"(?:\[?(?:(?P<ip4>{_IP4})|(?P<ip6>{_IP6}))\]?|(?P<dns>{_DNS}))",
    "ADDR": rf"\[?(?:(?P<ip4>{_IP4})|(?P<ip6>{_IP6}))\]?",
    "IP4": rf"(?P<ip4>{_IP4})",
    "IP6": rf"(?P<ip6>{_IP6})",
    "DNS": rf"(?P<dns>{_DNS})",
    "F-ID/": r"(?P<fid>\S+)",
    "SKIPLINES": "",
}
_FAIL2BAN_TAG = re.compile(r"<(/?)(F-[A-Z0-9_-]+/?|[A-Z0-9]+)>")
# The groups whose match is the failure's id, in the order fail2ban looks at them (`host`: 0.9).
_FAILURE_ID_GROUPS = ("fid", "ip4", "ip6", "dns", "host")


def _resolve_fail2ban_tags(failregex: str) -> str:
    def replace(tag: re.Match[str]) -> str:
        closing, name = tag.group(1), tag.group(2)
        if not closing and name in _FAIL2BAN_TAGS:
            return _FAIL2BAN_TAGS[name]
        if name.startswith("F-") and not name.endswith("/"):
            group = name[2:].lower().replace("-", "_")
            return ")" if closing else f"(?P<{'fid' if group == 'id' else group}>"
        return tag.group(0)

    return _FAIL2BAN_TAG.sub(replace, failregex)


def fail2ban_regex_host(failregex: str, line: str) -> str | None:
    """The failure id (the client's address) `failregex` finds in `line`, or None when it does not
    match. `failregex` may hold fail2ban's tags (`<HOST>`, as a filter file has it) or be what
    `fail2ban-client get JAIL failregex` prints (the tags already resolved into groups). Raises
    ParseError when the expression cannot be read."""
    try:
        match = re.search(_resolve_fail2ban_tags(failregex), line)
    except re.error as error:
        raise ParseError(f"failregex {failregex!r} is not a regular expression: {error}") from None
    if match is None:
        return None
    groups = match.groupdict()
    return next((groups[g] for g in _FAILURE_ID_GROUPS if groups.get(g)), "")


def _jail_file(text: str, name: str) -> configparser.ConfigParser:
    """One file as written: [DEFAULT] is a section like the others here (not merged into each),
    so a jail's own `enabled` and the default one stay apart."""
    parser = configparser.ConfigParser(interpolation=None, strict=False, default_section="\0")
    try:
        parser.read_string(text, source=name)
    except configparser.Error as error:
        raise ParseError(f"{name} is not a fail2ban jail file: {error}") from None
    return parser


def _enabled_value(parser: configparser.ConfigParser, section: str, name: str) -> bool:
    try:
        return parser.getboolean(section, "enabled")
    except ValueError as error:
        raise ParseError(f"{name}: [{section}] enabled: {error}") from None


def jail_enabled(text: str, jail: str) -> bool | None:
    """Whether one fail2ban jail file (`jail.d/defaults-debian.conf`) enables `jail`: True or
    False from its `enabled` key, None when the file does not mention it."""
    parser = _jail_file(text, "the jail file")
    if not parser.has_option(jail, "enabled"):
        return None
    return _enabled_value(parser, jail, "the jail file")


def fail2ban_read_order(path: str) -> tuple[int, str]:
    """Where a file of /etc/fail2ban comes in fail2ban's reading of `jail`: jail.conf, then
    jail.d/*.conf, jail.local, jail.d/*.local, each directory sorted by name
    (fail2ban/client/configreader.py, 0.9 to 1.1); a later file overrides an earlier one."""
    name = path.rsplit("/", 1)[-1]
    in_d = "/jail.d/" in f"/{path}"
    if not in_d:
        return (0 if name == "jail.conf" else 2, name)
    return (1 if name.endswith(".conf") else 3, name)


@dataclass(frozen=True)
class JailSwitch:
    enabled: bool
    said_by: str | None  # `FILE: [SECTION] enabled = VALUE`, None when no file says it


def fail2ban_jail_switch(files: dict[str, str], jail: str) -> JailSwitch:
    """Whether fail2ban starts `jail` with these files of its configuration directory ({path:
    text}): its own `enabled` in the last file that sets it, else `[DEFAULT] enabled` likewise,
    else off (fail2ban's default)."""
    own: JailSwitch | None = None
    default: JailSwitch | None = None
    for path in sorted(files, key=fail2ban_read_order):
        parser = _jail_file(files[path], path)
        if parser.has_option(jail, "enabled"):
            value = _enabled_value(parser, jail, path)
            own = JailSwitch(value, f"{path}: [{jail}] enabled = {str(value).lower()}")
        if parser.has_option("DEFAULT", "enabled"):
            value = _enabled_value(parser, "DEFAULT", path)
            default = JailSwitch(value, f"{path}: [DEFAULT] enabled = {str(value).lower()}")
    return own or default or JailSwitch(False, None)


# --- cron and systemd timers ---------------------------------------------------------------------
SCHEDULE_MARKER = "### "
_DAILY_SPECIALS = ("@daily", "@midnight", "@hourly")
_ALL_WEEKDAYS = ("*", "0-6", "1-7", "0-7", "*/1")
HOUR, DAY = 3600.0, 86400.0
YEAR = 365 * DAY
_SPECIAL_PERIODS = {
    "@hourly": HOUR, "@daily": DAY, "@midnight": DAY, "@weekly": 7 * DAY, "@monthly": YEAR / 12,
    "@yearly": YEAR, "@annually": YEAR,
}  # fmt: skip
# The directories run-parts runs from /etc/crontab (Debian's cron), and how often.
CRON_DIRECTORIES = {"hourly": HOUR, "daily": DAY, "weekly": 7 * DAY, "monthly": YEAR / 12}


@dataclass(frozen=True)
class ScheduledJob:
    source: str  # `crontab -l`, the file, or the timer
    daily: bool  # runs at least once a day
    command: str
    schedule: str
    period: float | None = None  # seconds between two runs, on average; None: not periodic


def cron_is_daily(fields: list[str]) -> bool:
    """Five cron fields (or one `@special`): does the job run at least once every day?"""
    if fields[0].startswith("@"):
        return fields[0] in _DAILY_SPECIALS
    day_of_month, month, weekday = fields[2], fields[3], fields[4]
    return day_of_month in ("*", "*/1") and month in ("*", "*/1") and weekday in _ALL_WEEKDAYS


def _values_in(field: str, low: int, high: int) -> int:
    """How many values of low..high a cron field (`*`, `*/15`, `1-5`, `0,30`, `mon`) matches."""
    count = 0
    for part in field.split(","):
        span, _, step = part.partition("/")
        every = int(step) if step.isdigit() and int(step) > 0 else 1
        if span == "*":
            first, last = low, high
        elif "-" in span and all(x.isdigit() for x in span.split("-", 1)):
            first, last = (int(x) for x in span.split("-", 1))
        else:
            first = last = int(span) if span.isdigit() else low  # a name (`mon`) is one value
            if step:
                last = high
        count += len(range(first, last + 1, every))
    return max(count, 1)


def cron_period(fields: list[str]) -> float | None:
    """Five cron fields (or one `@special`): the average time between two runs (`*/15 * * * *`:
    900 s, `0 3 * * *`: a day, `0 4 * * 0`: a week); None for `@reboot`."""
    if fields[0].startswith("@"):
        return _SPECIAL_PERIODS.get(fields[0])
    minute, hour, day_of_month, month, weekday = fields[:5]
    per_day = _values_in(minute, 0, 59) * _values_in(hour, 0, 23)
    any_day_of_month = day_of_month in ("*", "*/1")
    any_weekday = weekday in _ALL_WEEKDAYS
    if any_day_of_month and any_weekday:
        days = 365.0
    elif any_day_of_month:  # cron runs on the listed weekdays
        days = 365 / 7 * min(_values_in(weekday, 0, 6), 7)
    elif any_weekday:
        days = 12.0 * _values_in(day_of_month, 1, 31)
    else:  # either field matching is enough
        days = min(
            365.0, 12 * _values_in(day_of_month, 1, 31) + 365 / 7 * _values_in(weekday, 0, 6)
        )
    days *= _values_in(month, 1, 12) / 12
    return YEAR / (per_day * days)


def calendar_is_daily(calendar: str) -> bool:
    """A systemd OnCalendar as `systemctl show -p TimersCalendar` normalizes it (`daily` is
    `*-*-* 00:00:00`): every day of every month, without a weekday restriction."""
    if calendar.strip() in ("daily", "hourly", "minutely"):
        return True
    words = calendar.split()
    return bool(words) and words[0] in ("*-*-*", "*-*-*/1")


def _calendar_values(spec: str, low: int, high: int) -> int:
    """How many values a systemd calendar component (`*`, `00`, `00/15`, `8..17`, `0,30`) takes."""
    count = 0
    for part in spec.split(","):
        span, _, step = part.partition("/")
        every = int(step) if step.isdigit() and int(step) > 0 else 1
        if span == "*":
            first, last = low, high
        elif ".." in span:
            first, last = (int(x) if x.isdigit() else low for x in span.split("..", 1))
        else:
            first = int(span) if span.isdigit() else low
            last = high if step else first
        count += len(range(first, last + 1, every))
    return max(count, 1)


def calendar_period(calendar: str) -> float | None:
    """The average time between two elapses of a normalized OnCalendar
    (`[WEEKDAYS] YYYY-MM-DD HH:MM:SS`), roughly as cron_period does for cron."""
    words = calendar.split()
    shortcuts = {"minutely": 60.0, "hourly": HOUR, "daily": DAY, "weekly": 7 * DAY}
    if len(words) == 1 and words[0] in shortcuts:
        return shortcuts[words[0]]
    weekdays = words.pop(0) if words and words[0][:1].isalpha() else None
    if len(words) != 2 or words[0].count("-") != 2 or words[1].count(":") < 1:
        return None
    _, month, day = words[0].split("-")
    hour, minute = words[1].split(":")[:2]
    per_day = _calendar_values(hour, 0, 23) * _calendar_values(minute, 0, 59)
    days = 365.0 if day == "*" else 12.0 * _calendar_values(day, 1, 31)
    if weekdays:
        days = days / 7 * min(len(weekdays.split(",")) + 4 * weekdays.count(".."), 7)
    if month != "*":
        days *= _calendar_values(month, 1, 12) / 12
    return YEAR / (per_day * days)


def _crontab_jobs(source: str, lines: list[str], *, with_user: bool) -> list[ScheduledJob]:
    jobs = []
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        words = stripped.split()
        if "=" in words[0] and not words[0].startswith("@"):
            continue  # SHELL=/bin/sh, MAILTO=…
        size = 1 if words[0].startswith("@") else 5
        if len(words) <= size + (1 if with_user else 0):
            raise ParseError(f"{source}: not a crontab line: {stripped!r}")
        command = " ".join(words[size + (1 if with_user else 0) :])
        schedule = " ".join(words[:size])
        daily = cron_is_daily(words[:size])
        jobs.append(ScheduledJob(source, daily, command, schedule, cron_period(words[:size])))
    return jobs


def _timer_jobs(lines: list[str]) -> list[ScheduledJob]:
    jobs = []
    for line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise ParseError(f"expected TIMER<TAB>UNIT<TAB>CALENDAR<TAB>EXECSTART: {line!r}")
        calendars = re.findall(r"OnCalendar=([^;]+?)\s*;", fields[2])
        schedule = ", ".join(calendars) or "no OnCalendar"
        daily = any(calendar_is_daily(c) for c in calendars)
        periods = [p for c in calendars if (p := calendar_period(c)) is not None]
        command = " ".join(re.findall(r"argv\[\]=([^;]+?)\s*;", fields[3])) or fields[3]
        source = f"{fields[0]} -> {fields[1]}"
        jobs.append(ScheduledJob(source, daily, command, schedule, min(periods, default=None)))
    return jobs


def parse_schedules(text: str) -> tuple[ScheduledJob, ...]:
    """The schedule probe's output: `### crontab -l`, `### file PATH` (crontab format with a user
    field), `### hourly|daily|weekly|monthly PATH` (a script in cron.daily and its siblings) and
    `### timers` (TIMER, UNIT, TimersCalendar, ExecStart by tabs) sections."""
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith(SCHEDULE_MARKER):
            sections.append((line[len(SCHEDULE_MARKER) :].strip(), []))
        elif sections:
            sections[-1][1].append(line)
        elif line.strip():
            raise ParseError(f"schedule probe output does not start with a marker: {line!r}")
    jobs: list[ScheduledJob] = []
    for header, lines in sections:
        kind, _, path = header.partition(" ")
        if header == "crontab -l":
            jobs += _crontab_jobs("crontab -l", lines, with_user=False)
        elif kind == "file":
            jobs += _crontab_jobs(path, lines, with_user=True)
        elif kind in CRON_DIRECTORIES:
            script = [x.strip() for x in lines if x.strip() and not x.strip().startswith("#")]
            period = CRON_DIRECTORIES[kind]
            jobs.append(
                ScheduledJob(path, period <= DAY, "; ".join(script), f"cron.{kind}", period)
            )
        elif header == "timers":
            jobs += _timer_jobs(lines)
        else:
            raise ParseError(f"unknown section {header!r} in the schedule probe's output")
    return tuple(jobs)


def parse_workflow_schedules(text: str, source: str) -> tuple[ScheduledJob, ...]:
    """A Forgejo Actions workflow's `on: schedule: - cron: …` entries: each `run:` step of the
    workflow's jobs, once per schedule (Forgejo reads the five fields as cron does)."""
    data = _yaml_mapping(text, source)
    # YAML 1.1 (PyYAML) reads the bare key `on` as true.
    triggers = data.get("on", data.get(True))
    schedules = triggers.get("schedule") if isinstance(triggers, dict) else None
    if not schedules:
        return ()
    if not isinstance(schedules, list):
        raise ParseError(f"{source}: `on.schedule` is not a list")
    steps = [
        (str(step.get("name") or f"step {number}"), str(step["run"]))
        for job in (data.get("jobs") or {}).values()
        if isinstance(job, dict)
        for number, step in enumerate(job.get("steps") or (), 1)
        if isinstance(step, dict) and "run" in step
    ]
    jobs = []
    for entry in schedules:
        cron = entry.get("cron") if isinstance(entry, dict) else None
        fields = str(cron or "").split()
        if len(fields) != 5:
            raise ParseError(f"{source}: a schedule without five cron fields: {entry!r}")
        for name, run in steps:
            lines = [
                x.strip() for x in run.splitlines() if x.strip() and not x.strip().startswith("#")
            ]
            jobs.append(
                ScheduledJob(
                    f"{source}, step {name!r}",
                    cron_is_daily(fields),
                    "; ".join(lines),
                    " ".join(fields),
                    cron_period(fields),
                )
            )
    return tuple(jobs)


# --- DNS, files, processes -----------------------------------------------------------------------
def site_domains(sites: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    """The DNS names of Caddy site addresses (`https://a.example.com:443/x` → a.example.com);
    IP addresses, `localhost`, wildcards, placeholders and bare ports are left out."""
    names: list[str] = []
    for address in (a for site in sites for a in site):
        host = address.split("://", 1)[-1].split("/", 1)[0]
        if host.startswith("["):
            continue  # an IPv6 address
        host = host.rsplit(":", 1)[0] if ":" in host else host
        host = host.lower().rstrip(".")
        if (
            not host
            or host == "localhost"
            or "*" in host
            or "{" in host
            or re.fullmatch(r"[\d.]+", host)
        ):
            continue
        if host not in names:
            names.append(host)
    return tuple(names)


RESOLVE_MARKER = "### "
RESOLVE_EXIT = "## exit "


def parse_resolutions(text: str) -> dict[str, int]:
    """The resolve probe: `### NAME`, getent's lines, `## exit CODE` per name → {NAME: CODE}
    (0 found, 2 no record, anything else a failed lookup)."""
    codes: dict[str, int] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith(RESOLVE_EXIT):
            code = line[len(RESOLVE_EXIT) :].strip()
            if current is None or not code.isdigit():
                raise ParseError(f"unexpected {line!r} in the resolve probe's output")
            codes[current] = int(code)
            current = None
        elif line.startswith(RESOLVE_MARKER):
            current = line[len(RESOLVE_MARKER) :].strip()
    return codes


@dataclass(frozen=True)
class FileGuard:
    mode: int
    owner: str
    group: str
    git_work_trees: tuple[str, ...]  # directories at or above the file holding `.git`

    @property
    def root_only(self) -> bool:
        return self.owner == "root" and self.mode & 0o077 == 0


def parse_file_guard(text: str) -> FileGuard | None:
    """The file probe: `MODE OWNER GROUP` (`stat -c '%a %U %G'`) then `git DIR` lines; None when
    it printed `missing`."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines[:1] == ["missing"]:
        return None
    if not lines or len(lines[0].split()) != 3:
        raise ParseError(f"expected `MODE OWNER GROUP` first, got {text.strip()[:80]!r}")
    mode, owner, group = lines[0].split()
    try:
        mode_bits = int(mode, 8)
    except ValueError:
        raise ParseError(f"not an octal mode: {mode!r}") from None
    trees = tuple(line[4:] for line in lines[1:] if line.startswith("git "))
    return FileGuard(mode_bits, owner, group, trees)


def parse_process_owners(text: str) -> tuple[tuple[int, str], ...]:
    """`PID USER` lines (the process probe's) → ((pid, user), …)."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if len(words) != 2 or not words[0].isdigit():
            raise ParseError(f"expected `PID USER`: {line!r}")
        found.append((int(words[0]), words[1]))
    return tuple(found)


@dataclass(frozen=True)
class UnitFileCommand:
    unit: str
    state: str  # `systemctl list-unit-files`' STATE: enabled, disabled, static, masked, …
    command: str  # the argv of each ExecStart, ` ; ` between them


def parse_unit_file_commands(text: str) -> tuple[UnitFileCommand, ...]:
    """`UNIT<TAB>STATE<TAB>EXECSTART` lines (the service-files probe's): the `argv[]=` of each
    ExecStart `{ path=… ; argv[]=… ; … }`, or the value as it is."""
    units = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise ParseError(f"expected UNIT<TAB>STATE<TAB>EXECSTART: {line!r}")
        unit, state, value = fields
        argv = re.findall(r"argv\[\]=([^;]+?)\s*;", value)
        units.append(UnitFileCommand(unit, state, " ; ".join(argv) if argv else value.strip()))
    return tuple(units)
