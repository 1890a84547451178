"""ufw's and fail2ban's settings: assignments, sections, jails, their regexes."""

from __future__ import annotations

import configparser
import re
import shlex
from dataclasses import dataclass

from .base import ParseError


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
