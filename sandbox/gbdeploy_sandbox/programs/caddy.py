"""`caddy validate|reload --config FILE --adapter caddyfile`: refuses unbalanced braces and
unknown directives in a site block, as Caddy's adapter does; `reload` records the file's sha256
in `ROOT/caddy.reloads`."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

KNOWN = {
    "storage", "email", "admin", "servers", "order", "acme_ca", "debug", "grace_period",
    "reverse_proxy", "file_server", "root", "encode", "header", "tls", "log", "respond", "redir",
    "handle", "handle_path", "import", "route", "php_fastcgi", "basic_auth", "try_files",
    "rewrite", "uri", "request_body", "}",
}  # fmt: skip


class Invalid(Exception):
    pass


def _validate(path: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise Invalid(str(error)) from None
    depth = 0
    for number, line in enumerate(text.split("\n"), 1):
        words = line.split("#")[0].split()
        if not words:
            continue
        if depth == 1 and not words[0].startswith("@") and words[0] not in KNOWN:
            raise Invalid(f"{path}:{number}: unrecognized directive: {words[0]}")
        depth += words.count("{") - words.count("}")
        if depth < 0:
            raise Invalid(f"{path}:{number}: unexpected '}}'")
    if depth:
        raise Invalid(f"{path}: unexpected EOF")
    return text


def main(root: str, argv: list[str]) -> int:
    verb = argv[0] if argv else ""
    if verb not in ("validate", "reload") or "--adapter" not in argv or "--config" not in argv:
        sys.stderr.write(f"caddy stand-in: unsupported: {' '.join(argv)}\n")
        return 2
    path = argv[argv.index("--config") + 1]
    try:
        text = _validate(path)
    except Invalid as error:
        sys.stderr.write(f"Error: adapting config using caddyfile: {error}\n")
        return 1
    if verb == "validate":
        print("Valid configuration")
    else:
        with open(Path(root) / "caddy.reloads", "a") as log:
            log.write(f"{path} {hashlib.sha256(text.encode()).hexdigest()}\n")
    return 0
