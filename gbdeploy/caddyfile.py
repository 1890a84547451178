"""The pure part of a switch on the proxy: which `reverse_proxy` upstreams of a Caddyfile dial a
component's `host:port`, and the same text with only those moved to another port.

Every byte other than those ports stays as it was (the operations guide: never a partial or
rewritten config). What cannot be told for sure from the file alone is refused, naming the line:
an upstream behind a placeholder or an environment variable that could be this host, a port range,
a SRV or dynamic upstream for this host, an active health check pinned to the old port, the host
and port dialled outside `reverse_proxy` (`forward_auth`, `php_fastcgi`), or a file that already
dials the port the new binary is about to take.

The syntax is Caddy 2.6's (`caddyconfig/caddyfile/lexer.go` and the `reverse_proxy` directive):
tokens split on white space, `#` starts a comment at the start of a token, `"…"` and `` `…` `` quote
at the start of a token, `\\` before a newline continues the line; a line ending in `{` opens a
block that a `}` closes. Upstreams are the arguments of `reverse_proxy` after an optional matcher
(`*`, `/path`, `@name`) and of its `to` subdirective: `host:port`, `scheme://host:port`,
`network/host:port`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import PreflightError

_MATCHER_START = ("/", "@")
_DEFAULT_PORTS = {"http": 80, "h2c": 80, "https": 443}
_LOOPBACK_NAMES = ("", "localhost")
# Directives besides reverse_proxy whose arguments are dialled upstreams (Caddy 2.6).
_OTHER_DIALLERS = ("forward_auth", "php_fastcgi")


class CaddyfileRefused(PreflightError):
    """The Caddyfile cannot be switched safely; nothing was changed."""


@dataclass(frozen=True)
class Token:
    line: int  # the logical line: a `\` before a newline continues it
    text: str  # the value, quotes removed
    start: int  # where the token's raw text (with its quotes) begins and ends in the file
    end: int
    quoted: bool


@dataclass(frozen=True)
class Directive:
    tokens: tuple[Token, ...]  # the directive's name first
    block: tuple[Directive, ...] | None = None

    @property
    def name(self) -> str:
        return self.tokens[0].text if self.tokens else ""

    def walk(self) -> Iterator[Directive]:
        yield self
        for child in self.block or ():
            yield from child.walk()


class CaddySyntaxError(ValueError):
    """Text Caddy's lexer refuses; `line` is where it starts."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


def _continues_line(text: str, index: int) -> bool:
    """Whether the `\\` at `index` ends its line (LF or CRLF): the next line continues it."""
    return text.startswith(("\n", "\r\n"), index + 1)


def tokens(text: str) -> list[Token]:
    """Caddy 2.6's lexer (also the Corefile's), keeping where each token lies in `text`. A token
    ends at white space; `#` at a token's start comments out the rest of the line; `"…"` and
    `` `…` `` quote at a token's start. `\\` escapes the next character: before white space it is
    dropped (before a newline it continues the logical line), in `"…"` `\\"` is a quote, and any
    other pair stays as it is written (`\\\\` is two backslashes)."""
    found: list[Token] = []
    line, index, length = 1, 0, len(text)
    continued = 0  # lines joined to this logical line, counted again at its end
    while index < length:
        char = text[index]
        if char == "\\" and _continues_line(text, index):
            index = text.index("\n", index) + 1  # the next tokens stay on this logical line
            continued += 1
        elif char == "\\" and index + 1 < length and text[index + 1].isspace():
            index += 1
        elif char.isspace():
            if char == "\n":
                line, continued = line + 1 + continued, 0
            index += 1
        elif char == "#":
            while index < length and text[index] != "\n":
                index += 1
        elif char in '"`':
            start, index, value = index, index + 1, []
            while index < length and text[index] != char:
                if char == '"' and text[index] == "\\" and index + 1 < length:
                    index += 1  # an escaped pair: `\"` is a quote, `\x` stays `\x`
                    value.append("" if text[index] == '"' else "\\")
                value.append(text[index])
                index += 1
            if index >= length:
                raise CaddySyntaxError(line, "unterminated quoted text")
            index += 1
            found.append(Token(line, "".join(value), start, index, True))
            if "\n" in value:
                line, continued = line + value.count("\n") + continued, 0
        else:
            start = index
            while index < length and not text[index].isspace():
                if text[index] == "\\" and index + 1 < length:
                    if text[index + 1].isspace():
                        break  # dropped, as above
                    index += 1  # an escaped pair, kept as it is written
                index += 1
            found.append(Token(line, text[start:index], start, index, False))
    return found


def parse(text: str) -> tuple[Directive, ...]:
    """The file's top-level entries, each with its block's entries."""
    try:
        all_tokens = tokens(text)
    except CaddySyntaxError as error:
        raise CaddyfileRefused(str(error)) from None
    position = 0

    def entries(depth: int, opened_at: int) -> tuple[Directive, ...]:
        nonlocal position
        found: list[Directive] = []
        while position < len(all_tokens):
            first = all_tokens[position]
            if first.text == "}" and not first.quoted:
                if depth == 0:
                    raise CaddyfileRefused(f"line {first.line}: `}}` without a matching `{{`")
                position += 1
                return tuple(found)
            words: list[Token] = []
            block: tuple[Directive, ...] | None = None
            while position < len(all_tokens) and all_tokens[position].line == first.line:
                token = all_tokens[position]
                if token.text == "}" and not token.quoted and words:
                    break
                position += 1
                if token.text == "{" and not token.quoted:
                    after = all_tokens[position] if position < len(all_tokens) else None
                    if after is not None and after.line == token.line:
                        raise CaddyfileRefused(
                            f"line {token.line}: unexpected `{after.text}` after `{{` on the "
                            "same line (Caddy refuses it too)"
                        )
                    block = entries(depth + 1, token.line)
                    break
                words.append(token)
            found.append(Directive(tuple(words), block))
        if depth:
            raise CaddyfileRefused(f"line {opened_at}: `{{` is never closed")
        return tuple(found)

    return entries(0, 0)


@dataclass(frozen=True)
class Dial:
    """Where an upstream token dials, as far as the file says."""

    host: str | None  # None: a placeholder decides at run time
    ports: range | None  # None: a placeholder, or no port (Caddy's default applies)
    exact: bool  # host and port are literal text in the token that can be edited in place


def dial_of(value: str) -> Dial:
    """An upstream address as Caddy 2.6 reads it: `host:port`, `scheme://host[:port]`,
    `network/host:port`, `srv+…`; anything with `{` holds a placeholder."""
    if "{" in value:
        return Dial(None, None, False)
    if value.startswith("srv+"):  # srv+[scheme://]_service._proto.NAME: ports come from DNS
        name = value.removeprefix("srv+").split("://")[-1]
        labels = name.split(".")
        while labels and labels[0].startswith("_"):
            labels.pop(0)
        return Dial(_host_of(".".join(labels)), None, False)
    if "://" in value:
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            return Dial(None, None, False)
        host = _host_of(parts.hostname or "")
        if port is None:
            default = _DEFAULT_PORTS.get(parts.scheme.lower())
            return Dial(host, range(default, default + 1) if default else None, False)
        return Dial(host, range(port, port + 1), True)
    network, slash, address = value.partition("/")
    if slash:
        if network.lower().startswith("unix"):
            return Dial("unix/" + address, None, False)
        value = address
    host, colon, port_text = value.rpartition(":")
    if not colon or (host.count(":") and not host.startswith("[")):
        return Dial(_host_of(value), range(80, 81), False)  # no port: Caddy dials 80
    low, dash, high = port_text.partition("-")
    if not low.isdigit() or (dash and not high.isdigit()):
        return Dial(None, None, False)
    ports = range(int(low), int(high or low) + 1)
    return Dial(_host_of(host), ports, not dash)


def _host_of(text: str) -> str:
    bare = text.strip("[]").lower()
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Change:
    line: int
    before: str  # the token's raw text
    after: str


@dataclass(frozen=True)
class Switched:
    text: str
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class _Upstream:
    token: Token
    directive: Directive


def upstreams(entries: tuple[Directive, ...]) -> Iterator[_Upstream]:
    """Every upstream token of every `reverse_proxy` (its arguments after a matcher, and its
    `to` lines), at any depth (inside `handle`, `route`, snippets…)."""
    for entry in entries:
        for directive in entry.walk():
            if directive.name != "reverse_proxy":
                continue
            args = directive.tokens[1:]
            if args and (args[0].text == "*" or args[0].text.startswith(_MATCHER_START)):
                args = args[1:]
            for token in args:
                yield _Upstream(token, directive)
            for sub in directive.block or ():
                if sub.name == "to":
                    for token in sub.tokens[1:]:
                        yield _Upstream(token, directive)


DEFAULT_ADMIN = "localhost:2019"


def admin_address(text: str) -> str | None:
    """Where the Caddy running this file listens for its admin API (`host:port`, as
    `caddy reload --config FILE` finds it): the global `admin` option, else localhost:2019;
    None for `admin off` or a unix socket."""
    entries = parse(text)
    if not entries or entries[0].tokens or entries[0].block is None:
        return DEFAULT_ADMIN
    admin = next((d for d in entries[0].block if d.name == "admin"), None)
    if admin is None or len(admin.tokens) < 2:
        return DEFAULT_ADMIN
    address = admin.tokens[1].text
    if address == "off" or address.startswith("unix/"):
        return None
    address = address.removeprefix("tcp/")
    return f"localhost{address}" if address.startswith(":") else address


def dialled_ports(text: str, host: str) -> dict[int, list[int]]:
    """The ports of `host` that the file's `reverse_proxy` upstreams dial, each with its lines
    (what doctor compares with the port the component serves)."""
    wanted = _host_of(host)
    found: dict[int, list[int]] = {}
    for upstream in upstreams(parse(text)):
        dial = dial_of(upstream.token.text)
        if dial.host == wanted and dial.ports is not None and len(dial.ports) == 1:
            found.setdefault(dial.ports[0], []).append(upstream.token.line)
    return found


def switch_upstream(text: str, host: str, old_port: int, new_port: int) -> Switched:
    """`text` with every `reverse_proxy` upstream that dials `host:old_port` dialling
    `host:new_port` instead, and nothing else changed. CaddyfileRefused when there is none, or
    when any part of the file leaves it unsure which upstreams dial it."""
    entries = parse(text)
    wanted = _host_of(host)
    here = f"{host}:{old_port}"
    edits: list[tuple[Token, str]] = []
    problems: list[str] = []
    changed_directives: list[Directive] = []
    for upstream in upstreams(entries):
        token = upstream.token
        dial = dial_of(token.text)
        where = f"line {token.line}: `{token.text}`"
        if dial.host is None:
            problems.append(f"{where} holds a placeholder, which could dial {here}")
            continue
        if dial.host != wanted:
            # localhost, 127.0.0.1 and `:PORT` on the proxy are one host under several names
            alias = _is_loopback(dial.host) and _is_loopback(wanted)
            if alias and (dial.ports is None or {old_port, new_port} & set(dial.ports)):
                problems.append(f"{where} may dial {here} (write it as {here})")
            continue
        if dial.ports is None:
            problems.append(f"{where} may dial {here} (write it as {here})")
            continue
        if new_port in dial.ports:
            problems.append(
                f"{where} already dials port {new_port}, where the new binary is to start: "
                "is another process of it serving there?"
            )
            continue
        if old_port not in dial.ports:
            continue
        if not dial.exact or token.text != text[token.start : token.end].strip('"`'):
            problems.append(f"{where} dials {here} in a form this cannot edit: write {here}")
            continue
        edits.append((token, _with_port(text[token.start : token.end], old_port, new_port)))
        changed_directives.append(upstream.directive)
    problems += _pinned_health_ports(changed_directives, old_port)
    problems += _other_dials(entries, wanted, old_port)
    if problems:
        raise CaddyfileRefused(
            "the Caddyfile cannot be switched safely; nothing was changed:\n  "
            + "\n  ".join(problems),
            hint=f"make each upstream of this service a literal {here} in a reverse_proxy, "
            "then deploy again",
        )
    if not edits:
        raise CaddyfileRefused(
            f"no reverse_proxy in the Caddyfile dials {here}: nothing to switch",
            hint=_none_found_hint(entries, wanted, old_port),
        )
    pieces: list[str] = []
    cursor = 0
    for token, replacement in sorted(edits, key=lambda edit: edit[0].start):
        pieces += [text[cursor : token.start], replacement]
        cursor = token.end
    pieces.append(text[cursor:])
    changes = tuple(Change(t.line, text[t.start : t.end], r) for t, r in edits)
    return Switched("".join(pieces), changes)


def _with_port(raw: str, old_port: int, new_port: int) -> str:
    """The raw token with its port, the last `:OLD` in it, replaced."""
    marker = f":{old_port}"
    at = raw.rindex(marker)
    return f"{raw[:at]}:{new_port}{raw[at + len(marker) :]}"


def _pinned_health_ports(directives: list[Directive], old_port: int) -> list[str]:
    problems = []
    for directive in {id(d): d for d in directives}.values():
        for sub in directive.block or ():
            if sub.name == "health_port" and [t.text for t in sub.tokens[1:]] == [str(old_port)]:
                problems.append(
                    f"line {sub.tokens[0].line}: `health_port {old_port}` would keep checking "
                    "the old port after the switch"
                )
            if sub.name == "dynamic":
                problems.append(
                    f"line {sub.tokens[0].line}: a `dynamic` upstream source beside it may dial "
                    "the old port too"
                )
    return problems


def _other_dials(entries: tuple[Directive, ...], host: str, old_port: int) -> list[str]:
    """The host and old port dialled outside `reverse_proxy`: by `forward_auth` or
    `php_fastcgi`, which a switch leaves as they are."""
    problems = []
    for entry in entries:
        for directive in entry.walk():
            if directive.name not in _OTHER_DIALLERS:
                continue
            for token in directive.tokens[1:]:
                dial = dial_of(token.text)
                if dial.host in (host, None) and (dial.ports is None or old_port in dial.ports):
                    problems.append(
                        f"line {token.line}: `{directive.name} {token.text}` may dial "
                        f"{host}:{old_port} too, which a switch does not change"
                    )
    return problems


def _none_found_hint(entries: tuple[Directive, ...], host: str, old_port: int) -> str:
    imports = [
        d.tokens[1].text
        for entry in entries
        for d in entry.walk()
        if d.name == "import" and len(d.tokens) > 1
    ]
    where = f"; it imports {', '.join(imports)}, which a switch does not edit" if imports else ""
    return (
        f"check switch.upstream_host and which of switch.ports serves now: the Caddyfile must "
        f"dial {host}:{old_port} in a reverse_proxy{where}"
    )
