"""Checks in the system container (botserver and botui): the loopback rule before the DROP
rules, Valkey answering, botui's BOTSERVER_URL, Vault's init.json."""

from __future__ import annotations

import os

from ..config import DoctorSettings
from ..remote.connection import CommandResult, quote
from .model import VALKEY_TIMEOUT, Check, Repair, Verdict, doctor_call, output_of
from .parsers import (
    loopback_verdict,
    parse_environment,
    parse_file_guard,
    parse_iptables_chain,
)


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


def file_guard_command(path: str) -> str:
    """`MODE OWNER GROUP` of `path`, then `git DIR` for each directory at or above it that holds
    a `.git` (a git work tree), or `missing`."""
    return doctor_call("file_guard", path)


def vault_init_check(d: DoctorSettings, container: str) -> Check:
    path = d.vault_init
    protect = f"chown root:root -- {quote(path)} && chmod go= -- {quote(path)}"

    def judge(result: CommandResult) -> Verdict:
        if not result.ok:
            return Verdict("fail", f"cannot examine {path}: {output_of(result)}")
        guard = parse_file_guard(result.stdout)
        if guard is None:
            return Verdict(
                "skip", f"no {path} (Vault not initialised here, or set doctor.vault_init)"
            )
        problems = []
        if not guard.root_only:
            problems.append(
                f"mode {guard.mode:o}, owner {guard.owner}:{guard.group} (others can read the "
                "unseal keys)"
            )
        if guard.git_work_trees:
            problems.append(f"inside the git work tree {guard.git_work_trees[0]}")
        if not problems:
            return Verdict(
                "pass", f"{path}: mode {guard.mode:o}, {guard.owner}, in no git work tree"
            )
        fixes = []
        if not guard.root_only:
            fixes.append(f"{protect}  (gbdeploy doctor --fix does this)")
        if guard.git_work_trees:
            fixes.append(
                f"move it out of {guard.git_work_trees[0]} (or add it to .gitignore) and check "
                "`git log --all -- init.json` that it was never committed; if it was, rotate the "
                "unseal keys"
            )
        return Verdict("fail", f"{path}: " + "; ".join(problems), "; ".join(fixes))

    def repair(result: CommandResult) -> Repair | str:
        guard = parse_file_guard(result.stdout) if result.ok else None
        if guard is None or guard.root_only:
            return "the permissions are not what is wrong"
        return Repair(
            f"made {path} readable by root only (was mode {guard.mode:o}, "
            f"{guard.owner}:{guard.group})",
            protect,
        )

    return Check(
        "system.vault-init-protected",
        container,
        file_guard_command(path),
        judge,
        f"{protect}; keep it out of every git work tree",
        repair=repair,
    )
