"""`doctor` over a real sshd against a stand-in production (LXD host, containers, firewall, Valkey,
Caddy, CoreDNS, fail2ban, cron and timers, Vault's keys, CI runner caches, ZFS): every check passes
on a good production, fails by name on a broken one, and `--fix` repairs exactly the safe ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gbdeploy.config import Target
from gbdeploy.doctor import Doctor, doctor_plan, run_doctor
from gbdeploy.errors import ConfigError, DoctorFailed
from gbdeploy.output import Reporter
from gbdeploy.remote.connection import wrap_for_target
from gbdeploy_sandbox.production import SYSTEM

CHECKS = [
    "host.containers",
    "host.system-privileged",
    "host.ci-runner-no-host-mounts",
    "host.proxy-devices",
    "host.zfs-snapshots",
    "host.zfs-snapshot-schedule",
    "host.ufw-forward-policy",
    "host.lxd-forward-rule-persisted",
    "host.fail2ban-sshd",
    "system.loopback-accept",
    "system.valkey-ping",
    "system.botui-botserver-url",
    "system.vault-init-protected",
    "system.owner.botserver",
    "system.not-in-systemd.botserver",
    "system.ssh-user-signals.botserver",
    "system.owner.botui",
    "proxy.caddy-storage",
    "proxy.caddy-valid",
    "proxy.caddy-vhosts",
    "proxy.caddy-dead-domains",
    "proxy.fail2ban-caddy-http-flood",
    "proxy.fail2ban-sshd-disabled",
    "dns.corefile-acl",
    "email.fail2ban-mail",
    "ci.sccache-size",
    "ci.cargo-size",
    "ci.cache-cleanup-daily",
]
SAFE = [
    "system.loopback-accept",
    "system.owner.botserver",
    "system.owner.botui",
]
# What a user reads for each broken rule (a fragment of the `saw` column).
BROKEN_SAW = {
    "host.system-privileged": "security.privileged is false",
    "host.ci-runner-no-host-mounts": "mounts host paths: gbo-bin",
    "host.proxy-devices": "no proxy device listens on 4190, 53",
    "host.zfs-snapshots": "pragmatismo-alm-ci@snapshot-before-mounts (40 days, 52.0 GiB)",
    "host.zfs-snapshot-schedule": "takes daily snapshots but no daily job removes old ones",
    "host.ufw-forward-policy": 'DEFAULT_FORWARD_POLICY is "DROP"',
    "host.lxd-forward-rule-persisted": "lxd-forward.service restores the FORWARD rule for lxdbr0 "
    "but is disabled",
    "host.fail2ban-sshd": "fail2ban is not running in the LXD host",
    "system.loopback-accept": "no `-i lo -j ACCEPT` before rule 1",
    "system.valkey-ping": "Connection timed out",
    "system.botui-botserver-url": "BOTSERVER_URL=https://chat.example.com",
    "system.vault-init-protected": "mode 644, owner root:root",
    "system.owner.botserver": "is owned by root:root, not",
    "system.not-in-systemd.botserver": "system.service (active, disabled) runs",
    "system.ssh-user-signals.botserver": "(deployer) is neither root nor",
    "system.owner.botui": "is owned by root:root, not",
    "proxy.caddy-storage": "no `storage` in the global options block",
    "proxy.caddy-valid": "unrecognized directive: reverse_prxy",
    "proxy.caddy-vhosts": "only 2 site address(es) (minimum 20)",
    "proxy.caddy-dead-domains": "no DNS record for mail.example.com (1 of 2 site domains",
    "proxy.fail2ban-caddy-http-flood": "maxretry 10 (want 100); bantime 600 (want 3600)",
    "proxy.fail2ban-sshd-disabled": "[sshd] enabled = true",
    "dns.corefile-acl": "no acl in: pragmatismo.com.br:53",
    "email.fail2ban-mail": "without a stalwart or stalwart-mail or postfix",
    "ci.sccache-size": "2.0 MiB (limit 1.0 MiB)",
    "ci.cargo-size": "2.0 MiB (limit 1.0 MiB)",
    "ci.cache-cleanup-daily": "no daily cleanup of the sccache and cargo cache",
}


@pytest.fixture
def gbuser(service_user):
    if service_user == "root":
        pytest.skip("needs a service user other than root (.ci/setup creates gbuser)")
    return service_user


def rows(table: str) -> dict[str, tuple[str, str]]:
    """{check: (status, saw)} from the printed table."""
    found = {}
    for line in table.splitlines():
        words = line.split(None, 2)
        if words and words[0] in CHECKS:
            found[words[0]] = (words[1], words[2] if len(words) > 2 else "")
    return found


def doctor(settings, *, fix=False, as_json=False):
    """Run doctor as the task does; (printed text, DoctorFailed or None)."""
    out = io.StringIO()
    try:
        run_doctor(settings, Reporter(stream=out), fix=fix, as_json=as_json)
    except DoctorFailed as failed:
        return out.getvalue(), failed
    return out.getvalue(), None


def test_a_good_production_passes_every_check(production, gbuser):
    production.make_good()
    text, failed = doctor(production.settings())
    assert failed is None, text
    found = rows(text)
    assert list(found) == CHECKS
    assert {name: status for name, (status, _) in found.items()} == dict.fromkeys(CHECKS, "pass")
    assert "PONG" in found["system.valkey-ping"][1]
    assert "28 site addresses in 25 blocks" in found["proxy.caddy-vhosts"][1]
    assert "28 checks: 28 passed, 0 failed, 0 skipped" in text


def test_a_broken_production_fails_every_rule_with_what_it_saw(production, gbuser):
    production.make_broken()
    text, failed = doctor(production.settings())
    assert failed is not None and failed.exit_code == 1
    assert failed.failed == CHECKS[1:]
    found = rows(text)
    assert found["host.containers"][0] == "pass"
    for name, fragment in BROKEN_SAW.items():
        status, saw = found[name]
        assert status == "FAIL", name
        assert fragment in saw, f"{name}: {saw}"
    assert "fix: iptables -I INPUT 1 -i lo -j ACCEPT" in text
    assert "28 checks: 1 passed, 27 failed, 0 skipped" in text


def test_a_check_whose_tool_is_not_installed_fails_naming_where(production, gbuser):
    """No fail2ban-client on the host means no fail2ban there: a failure, never a skip."""
    production.make_good()
    (production.standins.bin / "fail2ban-client").unlink()

    text, failed = doctor(production.settings())

    status, saw = rows(text)["host.fail2ban-sshd"]
    assert status == "FAIL" and "not installed on" in saw, saw
    assert failed is not None and "host.fail2ban-sshd" in failed.failed


def test_fix_repairs_exactly_the_safe_ones(production, gbuser):
    production.make_broken()
    caddyfile_before = production.caddyfile.read_bytes()
    text, failed = doctor(production.settings(), fix=True)

    assert production.rules().splitlines()[3] == "-A INPUT -i lo -j ACCEPT"  # first INPUT rule
    saved = production.rules_file.read_text()
    assert "*filter" in saved
    assert saved.index("-A INPUT -i lo -j ACCEPT") < saved.index("--dport 6379 -j DROP")
    assert production.owner(production.botserver) == gbuser
    assert production.owner(production.botui) == gbuser
    assert production.vault_init.stat().st_mode & 0o777 == 0o600
    assert production.caddyfile.read_bytes() == caddyfile_before  # a partial file is not touched
    assert production.caddy_reloads() == []
    assert not list(production.caddyfile.parent.glob("config.bak-*"))

    assert "changed: system.loopback-accept: inserted `-A INPUT -i lo -j ACCEPT`" in text
    assert f"changed: system.owner.botserver: chowned {production.botserver} to" in text
    assert "not repaired: proxy.caddy-storage:" in text and "looks partial" in text
    assert "changed: system.vault-init-protected: made" in text
    # still failing: the file sits in a git work tree, which only a person can change
    assert "inside the git work tree" in rows(text)["system.vault-init-protected"][1]
    found = rows(text)
    now_passing = [*SAFE, "system.valkey-ping"]  # Valkey answers once loopback is accepted
    for name in CHECKS[1:]:
        assert found[name][0] == ("pass" if name in now_passing else "FAIL"), name
    assert failed is not None
    assert sorted(failed.failed) == sorted(set(CHECKS[1:]) - set(now_passing))


def test_fix_changes_only_what_fails_and_leaves_each_passing_check_alone(production, gbuser):
    production.make_good()
    os.chown(production.botserver, 0, 0)  # the one failing check: the binary owned by root
    rules, persisted = production.rules(), production.rules_file.exists()
    vault_mode = production.vault_init.stat().st_mode
    caddyfile = production.caddyfile.read_bytes()

    text, failed = doctor(production.settings(), fix=True)

    assert failed is None, text
    assert production.owner(production.botserver) == gbuser
    changed = [line for line in text.splitlines() if line.startswith("changed:")]
    assert len(changed) == 1 and changed[0].startswith("changed: system.owner.botserver:"), text
    # a passing loopback check gets no second ACCEPT rule, live or persisted
    assert production.rules() == rules
    assert production.rules_file.exists() == persisted
    assert production.vault_init.stat().st_mode == vault_mode
    assert production.caddyfile.read_bytes() == caddyfile
    assert production.caddy_reloads() == []


def test_fix_adds_caddy_storage_after_a_backup_validates_and_reloads(production, gbuser):
    production.make_good()
    full = production.caddyfile.read_text()
    without_storage = full.replace(
        f"\tstorage file_system {{\n\t\troot {production.caddy_storage}\n\t}}\n", ""
    )
    assert without_storage != full
    production.caddyfile.write_text(without_storage)

    text, failed = doctor(production.settings(), fix=True)

    assert failed is None, text
    assert "changed: proxy.caddy-storage: added `storage file_system" in text
    assert production.caddyfile.read_text() == full  # every site kept, storage where it belongs
    backups = list(production.caddyfile.parent.glob("config.bak-*"))
    assert [b.read_text() for b in backups] == [without_storage]
    digest = hashlib.sha256(full.encode()).hexdigest()
    assert production.caddy_reloads() == [f"{production.caddyfile} {digest}"]
    assert not list(production.caddyfile.parent.glob("*.gbdeploy-new"))
    assert rows(text)["proxy.caddy-storage"][0] == "pass"


def test_fix_leaves_caddy_alone_until_the_storage_root_exists(production, gbuser):
    production.make_good()
    production.caddy_storage.rmdir()
    text_without = production.caddyfile.read_text().replace(
        f"\tstorage file_system {{\n\t\troot {production.caddy_storage}\n\t}}\n", ""
    )
    production.caddyfile.write_text(text_without)

    text, failed = doctor(production.settings(), fix=True)

    assert failed is not None and failed.failed == ["proxy.caddy-storage"]
    assert "not repaired: proxy.caddy-storage: storage root" in text
    assert "does not exist" in text
    assert production.caddyfile.read_text() == text_without
    assert not list(production.caddyfile.parent.glob("config.bak-*"))
    assert production.caddy_reloads() == []


def test_caddy_itself_validates_the_caddyfile(production, gbuser):
    # Debian's caddy 2.6.2 adapts the whole file: a typo inside a nested block fails too.
    production.make_good()
    good = production.caddyfile.read_text()
    text, failed = doctor(production.settings())
    assert rows(text)["proxy.caddy-valid"] == ("pass", "caddy validate: Valid configuration")
    nested = good.replace(
        "\treverse_proxy 10.16.164.40:80", "\thandle {\n\t\treverse_prxy :80\n\t}"
    )
    assert nested != good
    production.caddyfile.write_text(nested)
    text, failed = doctor(production.settings())
    assert failed is not None and failed.failed == ["proxy.caddy-valid"]
    status, saw = rows(text)["proxy.caddy-valid"]
    assert status == "FAIL" and "unrecognized directive: reverse_prxy" in saw, saw


def test_json_in_the_every_rule_broken_production_fails_each_rule_by_name(production, gbuser):
    production.make_broken()
    text, failed = doctor(production.settings(), as_json=True)
    findings = json.loads(text)
    failing = {f["check"] for f in findings if f["status"] == "fail"}
    assert failing == set(CHECKS) - {"host.containers"}
    assert failing >= {
        "host.ufw-forward-policy",
        "host.lxd-forward-rule-persisted",
        "host.fail2ban-sshd",
        "proxy.fail2ban-caddy-http-flood",
        "proxy.fail2ban-sshd-disabled",
        "proxy.caddy-dead-domains",
        "email.fail2ban-mail",
        "ci.cache-cleanup-daily",
        "host.ci-runner-no-host-mounts",
        "host.zfs-snapshot-schedule",
        "system.vault-init-protected",
        "system.ssh-user-signals.botserver",
        "system.not-in-systemd.botserver",
    }
    assert failed is not None and sorted(failed.failed) == sorted(failing)


@pytest.mark.parametrize(("runs_as", "status"), [("root", "FAIL"), ("service", "pass")])
def test_an_ssh_user_that_is_the_service_user_must_own_the_running_service(
    production, gbuser, runs_as, status
):
    production.make_good()
    production.reach_target_as(gbuser)
    user = gbuser if runs_as == "service" else "root"
    production.standins.add_unit(
        "botserver.service", exec_start=f"{production.botserver} 300", user=user
    )
    production.start_unit("botserver.service")
    text, _ = doctor(production.settings())
    status_seen, saw = rows(text)["system.ssh-user-signals.botserver"]
    assert status_seen == status, text
    pid = production.standins.unit_pid("botserver.service")
    if status == "FAIL":
        assert f"({gbuser}) cannot signal {production.botserver} running as root (pid {pid})" in saw
    else:
        assert f"pid {pid} as {gbuser}" in saw


def test_a_daily_crontab_entry_cleans_the_caches_too(production, gbuser):
    production.make_good()
    production.standins.add_timer(
        "cache-cleanup.timer", on_calendar="Sun *-*-* 03:17:00", unit="cache-cleanup.service"
    )
    text, _ = doctor(production.settings())
    assert rows(text)["ci.cache-cleanup-daily"][0] == "FAIL"  # weekly is not enough
    (production.state / "crontab" / "pragmatismo-alm-ci").write_text(
        "@daily /usr/local/bin/gbdeploy maintain\n"
    )
    text, failed = doctor(production.settings())
    assert failed is None, text
    assert "crontab -l (@daily): /usr/local/bin/gbdeploy maintain" in text


def test_when_no_site_domain_resolves_doctor_suspects_dns_not_the_sites(production, gbuser):
    production.make_good()
    (production.state / "dns.json").write_text("{}")
    text, failed = doctor(production.settings())
    assert failed is not None and failed.failed == ["proxy.caddy-dead-domains"]
    saw = rows(text)["proxy.caddy-dead-domains"][1]
    assert (
        saw
        == "none of the 28 site domains resolves from pragmatismo-proxy: is DNS reachable there?"
    )


@pytest.mark.parametrize("how", ["iptables-persistent", "script"])
def test_a_forward_rule_persisted_by_iptables_persistent_or_a_script_passes(
    production, gbuser, how
):
    production.make_good()
    production.standins.add_unit(
        "lxd-forward.service", exec_start="/usr/sbin/iptables -I FORWARD -j ACCEPT", enabled=True
    )  # no longer names the bridge
    if how == "iptables-persistent":
        production.rules_file.parent.mkdir(parents=True, exist_ok=True)
        production.rules_file.write_text(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A FORWARD -i lxdbr0 -j ACCEPT\nCOMMIT\n"
        )
        unit, start = "netfilter-persistent.service", "/usr/sbin/netfilter-persistent start"
    else:
        script = production.root / "usr/local/sbin/lxd-net"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text("#!/bin/sh\niptables -I FORWARD -i lxdbr0 -j ACCEPT\n")
        unit, start = "lxd-net.service", f"/bin/sh {script}"
    production.standins.add_unit(unit, exec_start=start, enabled=False)
    text, _ = doctor(production.settings())
    assert rows(text)["host.lxd-forward-rule-persisted"][0] == "FAIL"  # not enabled
    production.standins.add_unit(unit, exec_start=start, enabled=True)
    text, failed = doctor(production.settings())
    assert failed is None, text
    assert "-A FORWARD -i lxdbr0 -j ACCEPT" in text or "iptables -I FORWARD -i lxdbr0" in text
    assert f"{unit} (enabled)" in rows(text)["host.lxd-forward-rule-persisted"][1]


def test_jail_local_overrides_debians_sshd_default_in_the_proxy(production, gbuser):
    production.make_good()
    fail2ban = production.etc / "fail2ban"
    (fail2ban / "jail.d/defaults-debian.conf").write_text("[sshd]\nenabled = true\n")  # Debian's
    jail_local = fail2ban / "jail.local"
    jail_local.write_text("[sshd]\nenabled = false\n")
    text, _ = doctor(production.settings())
    assert rows(text)["proxy.fail2ban-sshd-disabled"] == (
        "pass",
        "jail.local: [sshd] enabled = false",
    )
    jail_local.write_text("[DEFAULT]\nbantime = 1h\n\n[sshd]\nenabled = true\n")
    text, _ = doctor(production.settings())
    status, saw = rows(text)["proxy.fail2ban-sshd-disabled"]
    assert status == "FAIL" and saw.startswith("jail.local: [sshd] enabled = true"), saw


@pytest.mark.parametrize(
    ("state", "saw"),
    [
        ("no jail", "Sorry but the jail 'caddy-http-flood' does not exist"),
        ("not running", "fail2ban is not running in pragmatismo-proxy"),
    ],
)
def test_the_flood_jail_missing_or_fail2ban_stopped_in_the_proxy(production, gbuser, state, saw):
    production.make_good()
    jails = production.state / "fail2ban" / "pragmatismo-proxy.json"
    if state == "no jail":
        jails.write_text(json.dumps({"jails": {}}))
    else:
        jails.unlink()
    text, failed = doctor(production.settings())
    assert failed is not None and failed.failed == ["proxy.fail2ban-caddy-http-flood"]
    assert saw in rows(text)["proxy.fail2ban-caddy-http-flood"][1]


@pytest.mark.parametrize(("enabled", "status"), [(True, "FAIL"), (False, "pass")])
def test_a_stopped_unit_for_a_process_component_fails_only_when_enabled(
    production, gbuser, enabled, status
):
    # Stopped, an enabled unit still starts a second botserver at the next boot.
    production.make_good()
    production.standins.add_unit(
        "system.service", exec_start=f"{production.botserver} --noconsole", enabled=enabled
    )
    text, _ = doctor(production.settings())
    found = rows(text)
    assert found["system.not-in-systemd.botserver"][0] == status, text
    state = "enabled" if enabled else "disabled"
    assert f"system.service (inactive, {state})" in found["system.not-in-systemd.botserver"][1]


def test_missing_and_disabled_containers(production, gbuser):
    production.make_good()
    settings = production.settings(dns="pragmatismo-coredns", proxy=None)
    text, failed = doctor(settings)
    found = rows(text)
    assert found["host.containers"][0] == "FAIL"
    assert "missing: pragmatismo-coredns (doctor.dns)" in found["host.containers"][1]
    assert "pragmatismo-email" in found["host.containers"][1]  # what the host does have
    assert found["dns.corefile-acl"] == (
        "skip",
        "no container pragmatismo-coredns (see host.containers)",
    )
    for name in ("proxy.caddy-storage", "proxy.caddy-valid", "proxy.caddy-vhosts"):
        assert found[name] == ("skip", "doctor.proxy is null")
    assert failed is not None and failed.failed == ["host.containers"]


def test_an_unreachable_host_fails_once_and_skips_the_rest(production, tmp_path):
    production.make_good()
    config = tmp_path / "ssh_config"
    config.write_text("Host nowhere\n    HostName 127.0.0.1\n    Port 1\n    ConnectTimeout 2\n")
    settings = production.settings(host="nowhere")
    settings = type(settings)(
        **{**settings.__dict__, "ssh": type(settings.ssh)(config=str(config))}
    )
    text, failed = doctor(settings)
    found = rows(text)
    assert found["host.containers"][0] == "FAIL"
    assert "cannot reach nowhere over ssh" in found["host.containers"][1]
    assert {status for name, (status, _) in found.items() if name != "host.containers"} == {"skip"}
    assert failed is not None and failed.failed == ["host.containers"]


def test_without_a_host_doctor_says_to_set_it(production):
    with pytest.raises(ConfigError) as raised:
        run_doctor(production.settings(host=None), Reporter(stream=io.StringIO()))
    assert raised.value.exit_code == 2
    assert "doctor.host" in str(raised.value)
    assert "doctor: {host: ALIAS}" in str(raised.value)


def test_the_plan_names_every_command_quoted(production):
    settings = production.settings(caddyfile="/opt/gbo/conf/my config", dns=None)
    plan = doctor_plan(settings)
    assert [line.split(":")[0] for line in plan] == CHECKS
    assert (
        "proxy.caddy-vhosts: on pragmatismo-host: lxc exec pragmatismo-proxy: "
        "cat -- '/opt/gbo/conf/my config'"
    ) in plan
    assert "dns.corefile-acl: skipped (doctor.dns is null)" in plan
    assert (
        "system.loopback-accept: on pragmatismo-host: lxc exec pragmatismo-system: "
        "iptables -S INPUT"
    ) in plan


def test_through_incus_with_sudo_the_plan_calls_sudo_n_incus(production):
    plan = doctor_plan(production.settings(via="incus", sudo=True))
    assert "host.containers: on pragmatismo-host: sudo -n incus list --format csv -c n" in plan
    assert (
        "host.system-privileged: on pragmatismo-host: "
        "sudo -n incus config show pragmatismo-system --expanded"
    ) in plan
    assert (
        "system.loopback-accept: on pragmatismo-host: sudo -n incus exec pragmatismo-system: "
        "iptables -S INPUT"
    ) in plan


def test_doctor_enters_a_container_with_the_deploys_own_wrapper(production):
    settings = production.settings(via="incus", sudo=True)
    deploy_target = Target("system", "pragmatismo-host", container=SYSTEM, via="incus", sudo=True)
    with Doctor(settings) as doctor_run:
        command = "iptables -S INPUT"
        assert doctor_run.remote(SYSTEM).wrap(command) == wrap_for_target(deploy_target, command)
        assert doctor_run.remote(SYSTEM).wrap(command).startswith("sudo -n incus exec")
        assert doctor_run.remote(None).wrap(command) == command  # the host itself


def test_through_sudo_incus_every_check_runs_in_its_container(production, gbuser):
    # The host's ssh user reaches its containers with `sudo -n incus` (doctor.sudo).
    production.standins.install_program("incus", "lxc")
    production.standins.install_program("sudo", "sudo", production.state)
    lxc = production.standins.bin / "lxc"
    lxc.rename(lxc.with_suffix(".hidden"))
    try:
        production.make_good()
        text, failed = doctor(production.settings(via="incus", sudo=True))
    finally:
        lxc.with_suffix(".hidden").rename(lxc)
        (production.standins.bin / "incus").unlink()
        (production.standins.bin / "sudo").unlink()
    assert failed is None, text
    assert "28 checks: 28 passed" in text
    commands = (production.state / "sudo.log").read_text().splitlines()
    entered = {c.split("COMMAND=incus exec ")[1].split()[0] for c in commands if "exec" in c}
    assert entered == {SYSTEM, "pragmatismo-proxy", "pragmatismo-dns", "pragmatismo-email",
                       "pragmatismo-alm-ci"}  # fmt: skip


def test_through_incus_every_check_runs_in_its_container(production, gbuser):
    # incus's command line has lxc's subcommands and output formats; this host has only incus.
    production.standins.install_program("incus", "lxc")
    lxc = production.standins.bin / "lxc"
    lxc.rename(lxc.with_suffix(".hidden"))
    try:
        production.make_good()
        text, failed = doctor(production.settings(via="incus"), fix=False)
    finally:
        lxc.with_suffix(".hidden").rename(lxc)
        (production.standins.bin / "incus").unlink()
    assert failed is None, text
    assert "28 checks: 28 passed" in text


def test_an_unknown_container_tool_is_a_config_error(production):
    with pytest.raises(ConfigError) as raised:
        run_doctor(production.settings(via="docker"), Reporter(stream=io.StringIO()))
    assert raised.value.exit_code == 2
    assert "doctor.via: expected one of lxc, incus, got 'docker'" in str(raised.value)


# --- the command line --------------------------------------------------------------------------
def gbdeploy(project, *args):
    environment = {
        **os.environ,
        "HOME": str(project),  # no user-level ~/.gbdeploy.yaml
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),  # this checkout's gbdeploy
    }
    return subprocess.run(
        [sys.executable, "-m", "gbdeploy", *args],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_on_a_broken_production_prints_the_table_and_exits_1(production, gbuser, tmp_path):
    production.make_broken()
    (tmp_path / "gbdeploy.yaml").write_text(yaml.safe_dump(production.settings_mapping()))
    result = gbdeploy(tmp_path, "doctor")
    assert result.returncode == 1, result.stderr
    assert {name: status for name, (status, _) in rows(result.stdout).items()} == {
        "host.containers": "pass",
        **dict.fromkeys(CHECKS[1:], "FAIL"),
    }
    assert "gbdeploy: error: doctor: 27 of 28 checks failed" in result.stderr
    assert "`gbdeploy doctor --fix` repairs the safe ones (system.loopback-accept," in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_json_fix_keeps_stdout_pure_json_and_says_what_changed_on_stderr(
    production, gbuser, tmp_path
):
    production.make_broken()
    (tmp_path / "gbdeploy.yaml").write_text(yaml.safe_dump(production.settings_mapping()))
    result = gbdeploy(tmp_path, "doctor", "--json", "--fix")
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)
    assert [f["check"] for f in findings] == CHECKS
    for finding in findings:
        assert set(finding) == {"check", "status", "saw", "fix"}
        assert all(isinstance(value, str) for value in finding.values())
        assert finding["status"] in ("pass", "fail", "skip")
        assert bool(finding["fix"]) == (finding["status"] == "fail")
    passing = {f["check"] for f in findings if f["status"] == "pass"}
    assert passing == {"host.containers", *SAFE, "system.valkey-ping"}
    assert "changed: system.loopback-accept:" in result.stderr
    assert "changed: system.owner.botui:" in result.stderr
    assert "gbdeploy: error: doctor: 23 of 28 checks failed" in result.stderr
    assert "these need a person" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # a gbdeploy process
def test_cli_without_a_host_exits_2(tmp_path):
    (tmp_path / "gbdeploy.yaml").write_text("doctor: {min_vhosts: 20}\n")
    result = gbdeploy(tmp_path, "doctor")
    assert result.returncode == 2
    assert "config: doctor.host: is not set" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("version", "status"), [("13.0.0", "FAIL"), ("16.0.0", "pass")])
def test_doctor_reports_the_forge_version_and_what_it_does_to_deploys(
    production, gbuser, forgejo_factory, version, status
):
    production.make_good()
    forgejo = forgejo_factory(version=version)
    settings = dataclasses.replace(production.settings(), forge=forgejo.forge_settings())
    text, failed = doctor(settings)
    row = next(line for line in text.splitlines() if line.startswith("ci.forgejo-version "))
    assert row.split()[1] == status, text
    if status == "FAIL":
        assert failed is not None and failed.failed == ["ci.forgejo-version"]
        assert "runs a component's deploys side by side" in row
    else:
        assert failed is None, text
        assert "29 checks: 29 passed, 0 failed, 0 skipped" in text
