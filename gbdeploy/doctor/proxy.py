"""Checks in the proxy container: the Caddyfile (storage, validity, its sites, their DNS) and
fail2ban's HTTP flood jail."""

from __future__ import annotations

import hashlib

from ..config import DoctorSettings
from ..connection import CommandResult, quote
from ..doctor_parsers import parse_caddyfile, with_file_system_storage
from .model import Check, Repair, Verdict, last_line, output_of, read_command


def caddy_storage_check(d: DoctorSettings, container: str) -> Check:
    path, root, caddy = d.caddyfile, d.caddy_storage_root, d.caddy

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict(
                "fail",
                f"cannot read {path}: {output_of(result)}",
                "set doctor.caddyfile to the Caddyfile's path",
            )
        summary = parse_caddyfile(result.stdout)
        if summary.stores_on_file_system and summary.storage:
            return Verdict("pass", f"storage file_system, root {summary.storage.root or '?'}")
        if summary.storage:
            return Verdict("fail", f"storage {summary.storage.module}, not file_system")
        place = "global options block" if summary.global_block_line else "file (no global block)"
        return Verdict(
            "fail",
            f"no `storage` in the {place}: Caddy keeps certificates in "
            "~/.local/share/caddy and loses them on restart",
        )

    def repair(result: CommandResult) -> Repair | str:
        if not result.ok:
            return f"cannot read {path}"
        summary = parse_caddyfile(result.stdout)
        if summary.storage is not None:
            return f"{path} already sets storage {summary.storage.module}: change it by hand"
        if summary.vhost_count < d.min_vhosts:
            return (
                f"{path} has only {summary.vhost_count} site addresses (minimum {d.min_vhosts}): "
                "it looks partial, and reloading it would drop sites"
            )
        candidate = with_file_system_storage(result.stdout, root)
        return Repair(
            f"added `storage file_system {{ root {root} }}` to the global block of {path} "
            "(backup, validate, reload)",
            caddy_storage_script(path, result.stdout, candidate, root=root, caddy=caddy),
        )

    return Check(
        "proxy.caddy-storage",
        container,
        read_command(path),
        judge,
        f"add `storage file_system {{ root {root} }}` to the global block (copy the certificates "
        f"from ~/.local/share/caddy into {root} first), validate, then reload — or "
        "gbdeploy doctor --fix, once the storage root exists",
        repair=repair,
    )


def caddy_storage_script(path: str, original: str, candidate: str, *, root: str, caddy: str) -> str:
    """Backup → validate the new file → put it in place (same inode, owner, mode) → reload; on a
    failed reload the backup goes back and is reloaded. Refuses if the file changed since it was
    read, or the storage root does not exist yet (the certificates must be copied there first)."""
    digest = hashlib.sha256(original.encode()).hexdigest()
    f, new, c, r = quote(path), quote(path + ".gbdeploy-new"), quote(caddy), quote(root)
    adapter = "--adapter caddyfile"
    return "\n".join(
        [
            "set -e",
            f"test -d {r} || {{ echo 'storage root {root} does not exist: create it and copy the "
            "certificates from ~/.local/share/caddy into it first' >&2; exit 3; }",
            f"printf '%s  %s\\n' {digest} {f} | sha256sum -c --status || "
            f"{{ echo '{path} changed since doctor read it: run doctor again' >&2; exit 3; }}",
            f"trap 'rm -f {new}' EXIT",
            f"printf '%s' {quote(candidate)} > {new}",
            f"{c} validate --config {new} {adapter}",
            f"backup={f}.bak-$(date +%Y%m%d%H%M%S)",
            f'cp -p -- {f} "$backup"',
            f"cat {new} > {f}",
            f"{c} reload --config {f} {adapter} || "
            f'{{ cat "$backup" > {f}; {c} reload --config {f} {adapter}; '
            "echo 'reload failed: the backup is back in place' >&2; exit 4; }",
            'echo "backup: $backup"',
        ]
    )


def caddy_valid_check(d: DoctorSettings, container: str) -> Check:
    command = f"{quote(d.caddy)} validate --config {quote(d.caddyfile)} --adapter caddyfile"

    def judge(result: CommandResult) -> Verdict:
        if result.ok:
            return Verdict("pass", f"caddy validate: {last_line(result.stdout + result.stderr)}")
        return Verdict("fail", f"caddy validate: {output_of(result)}")

    return Check(
        "proxy.caddy-valid",
        container,
        command,
        judge,
        f"fix the error in a copy, validate the copy, then back up {d.caddyfile}, put the copy "
        "in place and `caddy reload` (never restart on an invalid file)",
    )


def caddy_vhosts_check(d: DoctorSettings, container: str) -> Check:
    path = d.caddyfile

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"cannot read {path}: {output_of(result)}")
        summary = parse_caddyfile(result.stdout)
        count = summary.vhost_count
        imported = (
            f"; plus {len(summary.imports)} top-level import(s), not counted"
            if summary.imports
            else ""
        )
        if count >= d.min_vhosts:
            return Verdict(
                "pass",
                f"{count} site addresses in {len(summary.sites)} blocks "
                f"(minimum {d.min_vhosts}){imported}",
            )
        shown = ", ".join(a for site in summary.sites for a in site) or "none"
        return Verdict(
            "fail", f"only {count} site address(es) (minimum {d.min_vhosts}): {shown}{imported}"
        )

    return Check(
        "proxy.caddy-vhosts",
        container,
        read_command(path),
        judge,
        f"this is a partial config: do not reload it. Restore the full one (ls -t {path}.bak-*), "
        f"validate, reload; lower doctor.min_vhosts only if sites were really removed",
    )
