"""Checks in the DNS container (CoreDNS's acl) and the email container (fail2ban's mail jail)."""

from __future__ import annotations

from ..config import DoctorSettings
from ..remote.connection import CommandResult
from .daemons import fail2ban_jail_check
from .model import Check, Verdict, output_of, read_command
from .parsers import parse_corefile


def corefile_acl_check(d: DoctorSettings, container: str) -> Check:
    path = d.corefile

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict(
                "fail",
                f"cannot read {path}: {output_of(result)}",
                "set doctor.corefile to the Corefile's path",
            )
        zones = parse_corefile(result.stdout)
        if not zones:
            return Verdict("fail", f"{path} has no server blocks")
        open_zones = [z for z in zones if not z.has_acl]
        if not open_zones:
            return Verdict("pass", f"{len(zones)} server block(s), each with acl")
        return Verdict(
            "fail",
            "no acl in: " + ", ".join(f"{' '.join(z.keys)} (line {z.line})" for z in open_zones),
        )

    return Check(
        "dns.corefile-acl",
        container,
        read_command(path),
        judge,
        "add to each server block: acl { allow type ANY net 10.0.0.0/8 127.0.0.0/8; allow type "
        "A|AAAA|MX net 0.0.0.0/0; block } (one `allow` per line), then send CoreDNS SIGHUP",
    )


def mail_jail_check(d: DoctorSettings, container: str) -> Check:
    return fail2ban_jail_check("email.fail2ban-mail", container, container, list(d.mail_jails))
