"""Checks in the proxy container: the Caddyfile (storage, validity, its sites, their DNS) and
fail2ban's HTTP flood jail."""

from __future__ import annotations

import hashlib

from ..config import DoctorSettings
from ..remote.connection import CommandResult, quote
from .daemons import fail2ban_trouble
from .model import Check, FollowUp, Repair, Verdict, doctor_call, last_line, output_of, read_command
from .parsers import (
    fail2ban_jail_switch,
    fail2ban_regex_host,
    parse_caddyfile,
    parse_fail2ban_list,
    parse_resolutions,
    site_domains,
    split_sections,
    with_file_system_storage,
)


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
    return doctor_call(
        "caddy_storage", path, path + ".gbdeploy-new", digest, candidate, caddy, root
    )


def caddy_valid_check(d: DoctorSettings, container: str) -> Check:
    command = f"{quote(d.caddy)} validate --config {quote(d.caddyfile)} --adapter caddyfile"

    def judge(result: CommandResult) -> Verdict:
        if result.ok:  # stdout: "Valid configuration"; stderr: Caddy's JSON log lines
            said = last_line(result.stdout) or "exit 0"
            return Verdict("pass", f"caddy validate: {said}")
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


def resolve_command(names: tuple[str, ...]) -> str:
    """Each name resolved here with getent (the system resolver, as Caddy's ACME client uses)."""
    return doctor_call("resolve_names", *names)


def dead_domains_check(d: DoctorSettings, container: str) -> Check:
    path = d.caddyfile

    def judge(result: CommandResult) -> Verdict | FollowUp:
        if not result.ok:
            return Verdict("fail", f"cannot read {path}: {output_of(result)}")
        names = site_domains(parse_caddyfile(result.stdout).sites)
        if not names:
            return Verdict("pass", f"{path} names no DNS domain")
        return FollowUp(resolve_command(names), lambda looked_up: resolved(names, looked_up))

    def resolved(names: tuple[str, ...], result: CommandResult) -> Verdict:
        codes = parse_resolutions(result.stdout)
        unknown = [n for n in names if n not in codes]
        if unknown:
            return Verdict("fail", f"no answer for {', '.join(unknown)}: {output_of(result)}")
        dead = [n for n in names if codes[n] == 2]
        failed = [n for n in names if codes[n] not in (0, 2)]
        if failed:
            return Verdict(
                "fail",
                f"the lookup failed (not just empty) for {', '.join(failed)}: is DNS reachable "
                f"from {container}?",
                "check /etc/resolv.conf in the proxy container, then run doctor again",
            )
        if len(dead) == len(names) > 1:
            # getent says "not found" (2) for an unreachable resolver too.
            return Verdict(
                "fail",
                f"none of the {len(names)} site domains resolves from {container}: is DNS "
                "reachable there?",
                f"check /etc/resolv.conf in {container} (`getent hosts {names[0]}` must answer), "
                "then run doctor again",
            )
        if dead:
            return Verdict(
                "fail",
                f"no DNS record for {', '.join(dead)} ({len(dead)} of {len(names)} site domains "
                "in the Caddyfile): Caddy keeps failing to get their certificates, which breaks "
                "TLS for every site",
            )
        return Verdict("pass", f"all {len(names)} site domains resolve")

    return Check(
        "proxy.caddy-dead-domains",
        container,
        read_command(path),
        judge,
        f"remove the site blocks of the dead domains from a copy of {path} (back it up first), "
        "validate, then restart Caddy (a reload keeps their ACME state)",
    )


def flood_jail_command(jail: str) -> str:
    return doctor_call("flood_jail", jail)


# What Caddy writes to its JSON access log for a request (one line; only `status` differs).
CADDY_ACCESS_LINE = (
    '{"level":"info","ts":1732780800.5,"logger":"http.log.access.log0","msg":"handled request",'
    '"request":{"remote_ip":"203.0.113.7","remote_port":"51234","client_ip":"203.0.113.7",'
    '"proto":"HTTP/2.0","method":"GET","host":"chat.example.com","uri":"/wp-login.php",'
    '"headers":{"User-Agent":["Mozilla/5.0"]}},"bytes_read":0,"user_id":"",'
    '"duration":0.000412,"size":0,"status":STATUS,"resp_headers":{"Server":["Caddy"]}}'
)


# A failregex that bans the clients of 4xx answers in that log, and no one else.
SUGGESTED_FAILREGEX = r'^\{.*"client_ip":"<HOST>".*"status":4\d\d\b'


def flood_jail_check(d: DoctorSettings, container: str) -> Check:
    jail, log = d.flood_jail, d.caddy_access_log
    wanted = {
        "maxretry": d.flood_maxretry,
        "findtime": d.flood_findtime,
        "bantime": d.flood_bantime,
    }

    def judge(result: CommandResult) -> Verdict:
        trouble = fail2ban_trouble(result, container)
        if trouble:
            return Verdict("fail", trouble)
        sections = split_sections(result.stdout)
        problems = []
        for key, value in wanted.items():
            got = sections.get(key, "").strip()
            if got != str(value):
                problems.append(f"{key} {got or '?'} (want {value})")
        files = parse_fail2ban_list(sections.get("logpath", ""))
        if log not in files:
            problems.append(f"logpath {', '.join(files) or 'none'} (want {log})")
        regexes = parse_fail2ban_list(sections.get("failregex", ""))
        error_line = CADDY_ACCESS_LINE.replace("STATUS", "404")
        ok_line = CADDY_ACCESS_LINE.replace("STATUS", "200")
        catches = [r for r in regexes if fail2ban_regex_host(r, error_line) == "203.0.113.7"]
        if not catches:
            problems.append("its failregex finds no client address in a 404 line of Caddy's log")
        elif any(fail2ban_regex_host(r, ok_line) is not None for r in regexes):
            problems.append("its failregex also matches a 200 line (it would ban normal visitors)")
        if problems:
            return Verdict("fail", f"jail {jail}: " + "; ".join(problems))
        return Verdict(
            "pass",
            f"jail {jail}: {d.flood_maxretry} 4xx in {d.flood_findtime}s from {log} → ban "
            f"{d.flood_bantime}s",
        )

    return Check(
        "proxy.fail2ban-caddy-http-flood",
        container,
        flood_jail_command(jail),
        judge,
        f"a filter matching 4xx in Caddy's JSON log (failregex = {SUGGESTED_FAILREGEX}) and a "
        f"jail [{jail}] with logpath = {log}, maxretry = "
        f"{d.flood_maxretry}, findtime = {d.flood_findtime}, bantime = {d.flood_bantime}; then "
        "`fail2ban-client reload`",
    )


def jail_files_command(directory: str) -> str:
    """Each file fail2ban reads for its jails, after a `### PATH` line (PATH relative to
    `directory`); nothing when the directory does not exist."""
    return doctor_call("jail_files", directory)


def proxy_sshd_jail_check(d: DoctorSettings, container: str) -> Check:
    directory = d.fail2ban_dir.rstrip("/") or "/"

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"cannot read {directory}: {output_of(result)}")
        files = split_sections(result.stdout)
        if not files:
            return Verdict("pass", f"no jail files in {directory}: fail2ban is not set up here")
        switch = fail2ban_jail_switch(files, "sshd")
        if not switch.enabled:
            return Verdict("pass", switch.said_by or "no file enables [sshd] (off by default)")
        return Verdict(
            "fail",
            f"{switch.said_by}: the proxy has no ssh, the jail only fails or watches nothing",
            f"set `enabled = false` under [sshd] in {directory}/jail.local (read after "
            "jail.d/*.conf, so it overrides defaults-debian.conf), then `fail2ban-client reload`",
        )

    return Check(
        "proxy.fail2ban-sshd-disabled",
        container,
        jail_files_command(directory),
        judge,
        f"set `enabled = false` under [sshd] in {directory}/jail.local, then "
        "`fail2ban-client reload`",
    )
