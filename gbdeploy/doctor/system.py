"""Checks in the system container (botserver and botui): the loopback rule before the DROP
rules, Valkey answering, botui's BOTSERVER_URL, Vault's init.json."""

from __future__ import annotations

import os

from ..config import DoctorSettings
from ..connection import CommandResult, quote
from ..doctor_parsers import loopback_verdict, parse_environment, parse_iptables_chain
from .model import VALKEY_TIMEOUT, Check, Repair, Verdict, output_of


def loopback_check(d: DoctorSettings, container: str) -> Check:
    rules_file = d.iptables_rules_file
    insert = "iptables -I INPUT 1 -i lo -j ACCEPT"
    persist = (
        f"mkdir -p -- {quote(os.path.dirname(rules_file) or '/')} && "
        f"iptables-save > {quote(rules_file)}"
    )

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"iptables -S INPUT failed: {output_of(result)}")
        verdict = loopback_verdict(parse_iptables_chain(result.stdout))
        return Verdict("pass" if verdict.ok else "fail", verdict.saw)

    def repair(result: CommandResult) -> Repair | str:
        return Repair(
            f"inserted `-A INPUT -i lo -j ACCEPT` as rule 1 of INPUT in {container} and saved "
            f"the rules to {rules_file}",
            f"{insert} && {persist}",
        )

    return Check(
        "system.loopback-accept",
        container,
        "iptables -S INPUT",
        judge,
        f"{insert} && {persist}  (gbdeploy doctor --fix does this)",
        when_missing="skip",
        repair=repair,
    )


def valkey_check(d: DoctorSettings, container: str) -> Check:
    command = f"timeout {VALKEY_TIMEOUT} {quote(d.valkey_cli)} -h 127.0.0.1 -p 6379 ping"

    def judge(result: CommandResult) -> Verdict:
        answer = result.stdout.strip()
        if result.ok and answer == "PONG":
            return Verdict("pass", "PONG from 127.0.0.1:6379")
        if result.exit_code == 124:
            return Verdict("fail", f"no answer from 127.0.0.1:6379 within {VALKEY_TIMEOUT}s")
        return Verdict("fail", f"127.0.0.1:6379 answered {answer or output_of(result)!r}")

    return Check(
        "system.valkey-ping",
        container,
        command,
        judge,
        "make system.loopback-accept pass first (a DROP rule on 6379 blocks loopback), check "
        "Valkey runs, then restart botserver so it reconnects",
    )


def botui_url_check(d: DoctorSettings, container: str) -> Check:
    unit = d.botui_unit
    expected = d.botserver_url.rstrip("/")

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"{unit}: {output_of(result)}")
        url = parse_environment(result.stdout.strip()).get("BOTSERVER_URL")
        if url is None:
            return Verdict(
                "fail",
                f"BOTSERVER_URL is not set in {unit}'s Environment= "
                "(EnvironmentFile= is not read by this check)",
            )
        if url.rstrip("/") == expected:
            return Verdict("pass", f"{unit}: BOTSERVER_URL={url}")
        return Verdict(
            "fail",
            f"{unit}: BOTSERVER_URL={url} (the external URL drops the WebSocket before TALK runs)",
        )

    return Check(
        "system.botui-botserver-url",
        container,
        f"systemctl show -p Environment --value {quote(unit)}",
        judge,
        f"systemctl edit {quote(unit)}: [Service] Environment=BOTSERVER_URL={expected}; then "
        f"systemctl restart {quote(unit)}",
        when_missing="skip",
    )
