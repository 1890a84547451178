"""Caddyfile and Corefile (one syntax): directives, sites, storage, zones."""

from __future__ import annotations

from dataclasses import dataclass

from ...caddyfile import CaddySyntaxError
from ...caddyfile import tokens as caddy_tokens
from .base import ParseError


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


def parse_caddy_syntax(text: str) -> tuple[Directive, ...]:
    """The top-level entries of a Caddyfile-format file (Caddy's and CoreDNS's config): each line of
    tokens is a directive; one ending in a lone `{` owns the lines up to its matching `}`."""
    try:
        tokens = [(token.line, token.text, token.quoted) for token in caddy_tokens(text)]
    except CaddySyntaxError as error:
        raise ParseError(error.problem, error.line) from None
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
