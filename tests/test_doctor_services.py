"""doctor's parsers for the services the guide requires, on real output formats, good and broken:
/etc/default/ufw, fail2ban-client, jail.d files, crontab/cron.d/cron.daily and systemd timers,
getent hosts, the file and process probes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gbdeploy.config import DoctorSettings, Settings
from gbdeploy.doctor import build_checks
from gbdeploy.doctor.host import forward_rule_check, zfs_schedule_check
from gbdeploy.doctor.model import FollowUp, Verdict
from gbdeploy.doctor.parsers import (
    JailSwitch,
    ParseError,
    calendar_is_daily,
    calendar_period,
    cron_is_daily,
    cron_period,
    fail2ban_jail_switch,
    fail2ban_regex_host,
    jail_enabled,
    parse_fail2ban_list,
    parse_fail2ban_status,
    parse_file_guard,
    parse_iptables_save,
    parse_process_owners,
    parse_resolutions,
    parse_schedules,
    parse_shell_assignments,
    parse_unit_file_commands,
    parse_workflow_schedules,
    site_domains,
)
from gbdeploy.doctor.proxy import (
    CADDY_ACCESS_LINE,
    SUGGESTED_FAILREGEX,
    flood_jail_check,
    proxy_sshd_jail_check,
)
from gbdeploy.remote.connection import CommandResult
from gbdeploy.workflows import rendered_files

# --- /etc/default/ufw --------------------------------------------------------------------------
UFW = """# /etc/default/ufw
#
IPV6=yes
DEFAULT_INPUT_POLICY="DROP"
DEFAULT_OUTPUT_POLICY="ACCEPT"
# Set the default forward policy to ACCEPT, DROP or REJECT.
DEFAULT_FORWARD_POLICY="ACCEPT"
IPT_SYSCTL=/etc/ufw/sysctl.conf
IPT_MODULES=""
"""


def test_ufw_defaults_good_and_broken():
    values = parse_shell_assignments(UFW)
    assert values["DEFAULT_FORWARD_POLICY"] == "ACCEPT"
    assert values["IPT_MODULES"] == ""
    broken = parse_shell_assignments(
        UFW.replace('FORWARD_POLICY="ACCEPT"', 'FORWARD_POLICY="DROP"')
    )
    assert broken["DEFAULT_FORWARD_POLICY"] == "DROP"
    assert "DEFAULT_FORWARD_POLICY" not in parse_shell_assignments("IPV6=yes\n")
    with pytest.raises(ParseError, match="line 2"):
        parse_shell_assignments("IPV6=yes\nthis is not an assignment\n")


# --- fail2ban-client ---------------------------------------------------------------------------
STATUS = "Status\n|- Number of jail:\t2\n`- Jail list:\tcaddy-http-flood, sshd\n"
STATUS_NONE = "Status\n|- Number of jail:\t0\n`- Jail list:\t\n"
JAIL_STATUS = """Status for the jail: sshd
|- Filter
|  |- Currently failed:\t1
|  |- Total failed:\t37
|  `- Journal matches:\t_SYSTEMD_UNIT=sshd.service + _COMM=sshd
`- Actions
   |- Currently banned:\t0
   |- Total banned:\t4
   `- Banned IP list:\t
"""
LOGPATH = "Current monitored log file(s):\n`- /opt/gbo/logs/access.log\n"
LOGPATHS = "Current monitored log file(s):\n|- /var/log/a.log\n`- /var/log/b.log\n"
FAILREGEX = (
    "The following regular expressions are defined:\n"
    '`- [0]: ^.*"client_ip":"<HOST>".*"status":4\\d\\d\n'
)


def test_fail2ban_status_lists_the_jails():
    assert parse_fail2ban_status(STATUS) == ("caddy-http-flood", "sshd")
    assert parse_fail2ban_status(STATUS_NONE) == ()
    with pytest.raises(ParseError, match="Jail list"):
        parse_fail2ban_status(JAIL_STATUS)


def test_fail2ban_get_lists():
    assert parse_fail2ban_list(LOGPATH) == ("/opt/gbo/logs/access.log",)
    assert parse_fail2ban_list(LOGPATHS) == ("/var/log/a.log", "/var/log/b.log")
    assert parse_fail2ban_list("No file is currently monitored\n") == ()
    assert parse_fail2ban_list("No regular expression is defined.\n") == ()
    assert parse_fail2ban_list(FAILREGEX) == ('^.*"client_ip":"<HOST>".*"status":4\\d\\d',)
    with pytest.raises(ParseError):
        parse_fail2ban_list("100\n")


def test_a_4xx_filter_catches_4xx_lines_of_caddys_json_log_and_nothing_else():
    good = parse_fail2ban_list(FAILREGEX)[0]
    error = CADDY_ACCESS_LINE.replace("STATUS", "404")
    ok = CADDY_ACCESS_LINE.replace("STATUS", "200")
    assert fail2ban_regex_host(good, error) == "203.0.113.7"
    assert fail2ban_regex_host(good, ok) is None
    sloppy = '"client_ip":"<HOST>"'  # bans every visitor after 100 requests
    assert fail2ban_regex_host(sloppy, ok) == "203.0.113.7"
    assert fail2ban_regex_host("<F-USER>x</F-USER> <HOST>", "x 10.0.0.1") == "10.0.0.1"
    with pytest.raises(ParseError, match="not a regular expression"):
        fail2ban_regex_host('"status":(4', error)


# What fail2ban 1.0.2 prints for a jail whose filter says
# `failregex = ^\{.*"client_ip":"<HOST>".*"status":4\d\d\b`: the server resolved `<HOST>` when it
# loaded the filter (fail2ban/server/failregex.py, R_HOST, since 0.10) and keeps only the result;
# client/beautifier.py writes "regular expression are defined".
HOST_1_0_2 = (
    r"(?:\[?(?:(?:::f{4,6}:)?(?P<ip4>(?:\d{1,3}\.){3}\d{1,3})|(?P<ip6>(?:[0-9a-fA-F]{1,4}::?|:)"
    r"{1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):)))\]?|(?P<dns>[\w\-.^_]*\w))"
)
FAILREGEX_1_0_2 = (
    "The following regular expression are defined:\n"
    '`- [0]: ^\\{.*"client_ip":"' + HOST_1_0_2 + '".*"status":4\\d\\d\\b\n'
)


def test_the_resolved_regex_fail2ban_prints_finds_the_client_of_a_4xx_line():
    [printed] = parse_fail2ban_list(FAILREGEX_1_0_2)
    assert "<HOST>" not in printed and "(?P<ip4>" in printed
    error = CADDY_ACCESS_LINE.replace("STATUS", "404")
    assert fail2ban_regex_host(printed, error) == "203.0.113.7"
    assert fail2ban_regex_host(printed, CADDY_ACCESS_LINE.replace("STATUS", "200")) is None
    ipv6 = error.replace('"client_ip":"203.0.113.7"', '"client_ip":"2001:db8::7"')
    assert fail2ban_regex_host(printed, ipv6) == "2001:db8::7"
    assert parse_fail2ban_list("No regular expression is defined\n") == ()


@pytest.mark.parametrize(
    "failregex",
    [
        r'^\{.*"client_ip":"<HOST>".*"status":4\d\d\b',  # a filter file's text: fail2ban's tags
        r'"client_ip":"<ADDR>".*"status":4\d\d',
        r'"client_ip":"<IP4>".*"status":4\d\d',
        r'"client_ip":"<F-ID>[^"]+</F-ID>".*"status":4\d\d',
        r'"client_ip":"(?P<host>[^"]+)".*"status":4\d\d',  # 0.9's group
    ],
)
def test_each_tag_and_group_fail2ban_reads_the_address_from(failregex):
    error = CADDY_ACCESS_LINE.replace("STATUS", "404")
    assert fail2ban_regex_host(failregex, error) == "203.0.113.7"


def test_the_flood_check_passes_the_jail_as_fail2ban_1_0_2_prints_it():
    log = "/opt/gbo/logs/access.log"
    check = flood_jail_check(DoctorSettings(), "pragmatismo-proxy")
    printed = (
        "### maxretry\n100\n### findtime\n60\n### bantime\n3600\n### logpath\n"
        f"Current monitored log file(s):\n`- {log}\n### failregex\n{FAILREGEX_1_0_2}"
    )
    verdict = check.judge(CommandResult(check.command, 0, printed, ""))
    assert isinstance(verdict, Verdict)
    assert (verdict.status, verdict.saw) == (
        "pass",
        f"jail caddy-http-flood: 100 4xx in 60s from {log} → ban 3600s",
    )
    # the check's own suggested regex, once fail2ban has loaded it, passes too
    assert f"failregex = {SUGGESTED_FAILREGEX})" in check.fix
    [ours] = parse_fail2ban_list(FAILREGEX_1_0_2)
    suggested = printed.replace(ours, SUGGESTED_FAILREGEX.replace("<HOST>", HOST_1_0_2))
    verdict = check.judge(CommandResult(check.command, 0, suggested, ""))
    assert isinstance(verdict, Verdict) and verdict.status == "pass", verdict


def test_debian_sshd_jail_file():
    stock = "[sshd]\nbackend = systemd\nenabled = true\n"
    assert jail_enabled(stock, "sshd") is True
    assert jail_enabled("[sshd]\nenabled = false\n", "sshd") is False
    assert jail_enabled("[recidive]\nenabled = true\n", "sshd") is None
    with pytest.raises(ParseError):
        jail_enabled("enabled = true\n", "sshd")  # no section header
    with pytest.raises(ParseError):
        jail_enabled("[sshd]\nenabled = maybe\n", "sshd")


# Debian's fail2ban 1.0.2: jail.conf holds `[DEFAULT] enabled = false` and an [sshd] without
# `enabled`; jail.d/defaults-debian.conf turns sshd on; jail.local and jail.d/*.local come after.
JAIL_CONF = (
    "[DEFAULT]\nbantime = 10m\nenabled = false\n\n[sshd]\nport = ssh\nlogpath = %(sshd_log)s\n"
)
DEBIAN_DEFAULTS = "[sshd]\nenabled = true\n"


@pytest.mark.parametrize(
    ("files", "enabled", "said_by"),
    [
        ({"jail.conf": JAIL_CONF}, False, "jail.conf: [DEFAULT] enabled = false"),
        (
            {"jail.conf": JAIL_CONF, "jail.d/defaults-debian.conf": DEBIAN_DEFAULTS},
            True,
            "jail.d/defaults-debian.conf: [sshd] enabled = true",
        ),
        (  # jail.local is read after jail.d/*.conf, whatever order the files are listed in
            {
                "jail.local": "[sshd]\nenabled = false\n",
                "jail.d/defaults-debian.conf": DEBIAN_DEFAULTS,
                "jail.conf": JAIL_CONF,
            },
            False,
            "jail.local: [sshd] enabled = false",
        ),
        (  # and jail.d/*.local after jail.local
            {
                "jail.d/zz-proxy.local": "[sshd]\nenabled = yes\n",
                "jail.local": "[sshd]\nenabled = false\n",
                "jail.d/defaults-debian.conf": "[sshd]\nenabled = false\n",
            },
            True,
            "jail.d/zz-proxy.local: [sshd] enabled = true",
        ),
        (  # a jail's own `enabled` wins over [DEFAULT], even one read later
            {
                "jail.d/defaults-debian.conf": "[sshd]\nenabled = false\n",
                "jail.local": "[DEFAULT]\nenabled = true\n",
            },
            False,
            "jail.d/defaults-debian.conf: [sshd] enabled = false",
        ),
        (
            {"jail.local": "[DEFAULT]\nenabled = true\n"},
            True,
            "jail.local: [DEFAULT] enabled = true",
        ),
        ({}, False, None),
    ],
)
def test_the_sshd_jail_is_read_in_fail2bans_own_order(files, enabled, said_by):
    assert fail2ban_jail_switch(files, "sshd") == JailSwitch(enabled, said_by)


def test_the_proxy_sshd_check_reads_jail_local_over_debians_defaults():
    check = proxy_sshd_jail_check(DoctorSettings(), "pragmatismo-proxy")
    probe = (
        f"### jail.conf\n{JAIL_CONF}\n### jail.d/defaults-debian.conf\n{DEBIAN_DEFAULTS}\n"
        "### jail.local\n[sshd]\nenabled = false\n\n"
    )
    verdict = check.judge(CommandResult(check.command, 0, probe, ""))
    assert isinstance(verdict, Verdict)
    assert (verdict.status, verdict.saw) == ("pass", "jail.local: [sshd] enabled = false")
    turned_on = probe + "### jail.d/proxy.local\n[sshd]\nenabled = true\n"
    verdict = check.judge(CommandResult(check.command, 0, turned_on, ""))
    assert isinstance(verdict, Verdict) and verdict.status == "fail"
    assert verdict.saw.startswith("jail.d/proxy.local: [sshd] enabled = true")
    with pytest.raises(ParseError, match=r"jail.local: \[sshd\] enabled"):
        check.judge(
            CommandResult(check.command, 0, "### jail.local\n[sshd]\nenabled = maybe\n", "")
        )


# --- cron and timers ---------------------------------------------------------------------------
SCHEDULES = """### crontab -l
# m h  dom mon dow   command
MAILTO=""
17 3 * * * /usr/local/bin/gbdeploy maintain >> /opt/gbo/logs/maintain.log 2>&1
0 4 * * 0 rm -rf /root/.cache/sccache/*
@daily /usr/local/bin/cargo-cache --autoclean
### file /etc/crontab
SHELL=/bin/sh
25 6\t* * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }
### file /etc/cron.d/zfs
0 2 1 * * root zfs snapshot -r default/containers@monthly
### daily /etc/cron.daily/zfs-auto-snapshot
#!/bin/sh
which zfs-auto-snapshot > /dev/null || exit 0
exec zfs-auto-snapshot --quiet --syslog --label=daily --keep=7 //
### timers
cache-cleanup.timer\tcache-cleanup.service\t{ OnCalendar=*-*-* 03:17:00 ; next_elapse=Sun 2026-11-29 03:17:00 UTC } \t{ path=/usr/local/bin/gbdeploy ; argv[]=/usr/local/bin/gbdeploy maintain ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }
apt-daily.timer\tapt-daily.service\t{ OnCalendar=Mon *-*-* 06:00:00 ; next_elapse=n/a } \t{ path=/usr/lib/apt/apt.systemd.daily ; argv[]=/usr/lib/apt/apt.systemd.daily update ; }
"""  # noqa: E501


def test_schedules_from_crontab_files_scripts_and_timers():
    jobs = parse_schedules(SCHEDULES)
    assert [(j.source, j.daily) for j in jobs] == [
        ("crontab -l", True),
        ("crontab -l", False),
        ("crontab -l", True),
        ("/etc/crontab", True),
        ("/etc/cron.d/zfs", False),
        ("/etc/cron.daily/zfs-auto-snapshot", True),
        ("cache-cleanup.timer -> cache-cleanup.service", True),
        ("apt-daily.timer -> apt-daily.service", False),
    ]
    assert jobs[0].command.startswith("/usr/local/bin/gbdeploy maintain")
    assert jobs[4].command == "zfs snapshot -r default/containers@monthly"  # user field dropped
    assert "--keep=7" in jobs[5].command and "#!/bin/sh" not in jobs[5].command
    assert jobs[6].command == "/usr/local/bin/gbdeploy maintain"
    assert jobs[6].schedule == "*-*-* 03:17:00"


def test_schedules_broken():
    assert parse_schedules("### crontab -l\n### timers\n") == ()
    with pytest.raises(ParseError, match="not a crontab line"):
        parse_schedules("### crontab -l\n17 3 * *\n")
    with pytest.raises(ParseError, match="start with a marker"):
        parse_schedules("no crontab for root\n")
    with pytest.raises(ParseError, match="TIMER"):
        parse_schedules("### timers\nx.timer only\n")


# zfs-auto-snapshot 1.2.4's cron files as its Makefile installs them (zfsonlinux/zfs-auto-snapshot,
# etc/zfs-auto-snapshot.cron.*), as the schedule probe prints them.
def auto_snapshot_script(label: str, keep: int) -> str:
    return (
        "#!/bin/sh\n\n# Only call zfs-auto-snapshot if it's available\n"
        "which zfs-auto-snapshot > /dev/null || exit 0\n\n"
        f"exec zfs-auto-snapshot --quiet --syslog --label={label} --keep={keep} //\n"
    )


AUTO_SNAPSHOT_FREQUENT = (
    "### file /etc/cron.d/zfs-auto-snapshot\n"
    'PATH="/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"\n\n'
    "*/15 * * * * root which zfs-auto-snapshot > /dev/null || exit 0 ; zfs-auto-snapshot "
    "--quiet --syslog --label=frequent --keep=4 //\n"
)


def auto_snapshot_files(**keep: int) -> str:
    return AUTO_SNAPSHOT_FREQUENT + "".join(
        f"### {label} /etc/cron.{label}/zfs-auto-snapshot\n{auto_snapshot_script(label, n)}"
        for label, n in keep.items()
    )


def zfs_schedule_verdict(probe: str) -> Verdict:
    check = zfs_schedule_check(DoctorSettings())  # snapshot_retention_days: 7
    verdict = check.judge(
        CommandResult(check.command, 0, f"### crontab -l\n{probe}### timers\n", "")
    )
    assert isinstance(verdict, Verdict)
    return verdict


def test_zfs_auto_snapshot_keeps_each_label_in_its_own_period():
    jobs = parse_schedules(auto_snapshot_files(hourly=24, daily=31))
    assert [(j.source, j.period) for j in jobs] == [
        ("/etc/cron.d/zfs-auto-snapshot", 900),
        ("/etc/cron.hourly/zfs-auto-snapshot", 3600),
        ("/etc/cron.daily/zfs-auto-snapshot", 86400),
    ]
    # the package's defaults: the daily label keeps 31 days, not the frequent job's 4
    verdict = zfs_schedule_verdict(auto_snapshot_files(daily=31))
    assert verdict.status == "fail"
    assert verdict.saw == (
        "snapshots kept longer than 7 days: /etc/cron.daily/zfs-auto-snapshot: --label=daily "
        "keeps 31, one a day: 31 days"
    )
    weekly = zfs_schedule_verdict(auto_snapshot_files(hourly=24, daily=7, weekly=8, monthly=12))
    assert weekly.status == "fail"
    assert "--label=weekly keeps 8, one a week: 56 days" in weekly.saw
    assert "--label=monthly keeps 12, one a month" in weekly.saw
    assert "--label=daily" not in weekly.saw and "frequent" not in weekly.saw
    good = zfs_schedule_verdict(auto_snapshot_files(hourly=24, daily=7))
    assert good.status == "pass", good.saw
    assert "/etc/cron.daily/zfs-auto-snapshot: --label=daily keeps 7, one a day: 7 days" in good.saw
    # only the frequent job: it keeps an hour, and takes no daily snapshot that lasts
    assert zfs_schedule_verdict(AUTO_SNAPSHOT_FREQUENT).status == "fail"


@pytest.mark.parametrize(
    ("fields", "period"),
    [
        ("*/15 * * * *", 900),
        ("0 * * * *", 3600),
        ("0 3 * * *", 86400),
        ("0 3,15 * * *", 43200),
        ("0 4 * * 0", 7 * 86400),
        ("@weekly", 7 * 86400),
        ("@reboot", None),
    ],
)
def test_cron_period(fields, period):
    found = cron_period(fields.split())
    assert found == period if period is None else found == pytest.approx(period, rel=0.01)


@pytest.mark.parametrize(
    ("calendar", "period"),
    [("*-*-* 00:00:00", 86400), ("*-*-* *:00/15:00", 900), ("Mon *-*-* 03:00:00", 7 * 86400),
     ("*-*-01 00:00:00", 365 * 86400 / 12), ("weekly", 7 * 86400)],
)  # fmt: skip
def test_timer_period(calendar, period):
    assert calendar_period(calendar) == pytest.approx(period, rel=0.01)


@pytest.mark.parametrize(
    ("fields", "daily"),
    [
        ("0 3 * * *", True),
        ("*/5 * * * *", True),
        ("0 3 * * 1-7", True),
        ("0 3 * * 0", False),
        ("0 3 1 * *", False),
        ("@daily", True),
        ("@hourly", True),
        ("@weekly", False),
        ("@reboot", False),
    ],
)
def test_cron_daily(fields, daily):
    assert cron_is_daily(fields.split()) is daily


@pytest.mark.parametrize(
    ("calendar", "daily"),
    [("*-*-* 00:00:00", True), ("*-*-* *:00:00", True), ("Mon *-*-* 00:00:00", False),
     ("*-*-01 00:00:00", False), ("daily", True)],
)  # fmt: skip
def test_timer_daily(calendar, daily):
    assert calendar_is_daily(calendar) is daily


def test_unit_file_commands():
    text = (
        "lxd-forward.service\tenabled\t{ path=/usr/sbin/iptables ; argv[]=/usr/sbin/iptables "
        "-I FORWARD -i lxdbr0 -j ACCEPT ; ignore_errors=no ; } { path=/usr/sbin/iptables ; "
        "argv[]=/usr/sbin/iptables -I FORWARD -o lxdbr0 -j ACCEPT ; ignore_errors=no ; } \n"
        "ssh.service\tdisabled\t\n"
    )
    units = parse_unit_file_commands(text)
    assert [(u.unit, u.state, u.command) for u in units] == [
        (
            "lxd-forward.service",
            "enabled",
            "/usr/sbin/iptables -I FORWARD -i lxdbr0 -j ACCEPT ; "
            "/usr/sbin/iptables -I FORWARD -o lxdbr0 -j ACCEPT",
        ),
        ("ssh.service", "disabled", ""),
    ]
    with pytest.raises(ParseError):
        parse_unit_file_commands("lxd-forward.service\t{ path=/x ; }\n")


# iptables-persistent (Debian 12, iptables 1.8.9): netfilter-persistent.service runs
# `netfilter-persistent start`, whose plugin restores /etc/iptables/rules.v4 (iptables-save format).
UNITS = (
    "ssh.service\tenabled\t{ path=/usr/sbin/sshd ; argv[]=/usr/sbin/sshd -D $SSHD_OPTS ; "
    "ignore_errors=no ; } \n"
    "netfilter-persistent.service\tSTATE\t{ path=/usr/sbin/netfilter-persistent ; "
    "argv[]=/usr/sbin/netfilter-persistent start ; ignore_errors=no ; } \n"
    "lxd-net.service\tenabled\t{ path=/bin/sh ; argv[]=/bin/sh /usr/local/sbin/lxd-net.sh ; "
    "ignore_errors=no ; } \n"
)
RULES_V4 = """# Generated by iptables-save v1.8.9 (nf_tables) on Sat Nov 28 10:00:00 2026
*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 10.16.164.0/24 ! -d 10.16.164.0/24 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A FORWARD -i lxdbr0 -j ACCEPT
-A FORWARD -o lxdbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
# Completed on Sat Nov 28 10:00:00 2026
"""
SCRIPT = """#!/bin/sh
set -e
# iptables -I FORWARD -i lxdbr0 -j DROP
iptables -I FORWARD -i lxdbr0 -j ACCEPT
"""


def forward_verdict(units: str, files: dict[str, str]) -> Verdict:
    check = forward_rule_check(DoctorSettings())
    verdict = check.judge(CommandResult(check.command, 0, units, ""))
    if isinstance(verdict, FollowUp):
        shown = "".join(f"### {path}\n{text}\n" for path, text in files.items())
        verdict = verdict.judge(CommandResult(verdict.command, 0, shown, ""))
    assert isinstance(verdict, Verdict)
    return verdict


def test_iptables_persistent_saved_rules_persist_the_forward_rule():
    assert ("-A", "FORWARD", "-i", "lxdbr0", "-j", "ACCEPT") in parse_iptables_save(RULES_V4)
    assert all(r[1] != "POSTROUTING" for r in parse_iptables_save(RULES_V4))  # *nat left out
    enabled = UNITS.replace("STATE", "enabled")
    verdict = forward_verdict(enabled, {"/etc/iptables/rules.v4": RULES_V4})
    assert (verdict.status, verdict.saw) == (
        "pass",
        "netfilter-persistent.service (enabled) restores /etc/iptables/rules.v4: "
        "-A FORWARD -i lxdbr0 -j ACCEPT",
    )
    disabled = UNITS.replace("STATE", "disabled")
    assert forward_verdict(disabled, {"/etc/iptables/rules.v4": RULES_V4}).status == "fail"
    without = RULES_V4.replace("-A FORWARD -i lxdbr0 -j ACCEPT\n", "").replace("-o lxdbr0", "-o x")
    verdict = forward_verdict(enabled, {"/etc/iptables/rules.v4": without})
    assert verdict.status == "fail" and "none of the 3 services adds" in verdict.saw
    with pytest.raises(ParseError, match="outside"):
        parse_iptables_save("-A FORWARD -i lxdbr0 -j ACCEPT\n")


def test_a_unit_that_runs_a_script_adding_the_forward_rule_persists_it():
    disabled = UNITS.replace("STATE", "disabled")
    verdict = forward_verdict(disabled, {"/usr/local/sbin/lxd-net.sh": SCRIPT})
    assert (verdict.status, verdict.saw) == (
        "pass",
        "lxd-net.service (enabled) runs /usr/local/sbin/lxd-net.sh: "
        "iptables -I FORWARD -i lxdbr0 -j ACCEPT",
    )
    commented = SCRIPT.replace("\niptables", "\n# iptables")
    assert forward_verdict(disabled, {"/usr/local/sbin/lxd-net.sh": commented}).status == "fail"


# --- gbdeploy's own runner-maintenance.yaml -------------------------------------------------------
def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def test_the_committed_maintenance_workflow_counts_as_the_runners_daily_cleanup(tmp_path):
    mapping = {
        "doctor": {"host": "pragmatismo-host"},
        "workflows": {
            "install": "gbdeploy @ git+https://forge.example/gb/gbdeploy.git@" + "a" * 40
        },
    }
    settings = Settings.from_mapping(mapping, project_dir=tmp_path)
    workflow = tmp_path / ".forgejo/workflows/runner-maintenance.yaml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(
        rendered_files(settings)["runner-maintenance.yaml"]
    )  # as `workflows` writes
    git(tmp_path, "init", "-q")

    def cleanup_verdict() -> Verdict:
        [check] = [c for c in build_checks(settings) if c.name == "ci.cache-cleanup-daily"]
        nothing_on_the_runner = "### crontab -l\n### timers\n"
        verdict = check.judge(CommandResult(check.command, 0, nothing_on_the_runner, ""))
        assert isinstance(verdict, Verdict)
        return verdict

    not_committed = cleanup_verdict()
    assert not_committed.status == "fail"
    assert "runner-maintenance.yaml (`gbdeploy workflows` renders it" in check_fix(settings)
    git(tmp_path, "add", ".forgejo")
    git(tmp_path, "commit", "-qm", "workflows")
    verdict = cleanup_verdict()
    assert verdict.status == "pass", verdict.saw
    assert verdict.saw.startswith(
        "daily: .forgejo/workflows/runner-maintenance.yaml at HEAD, step 'Trim the sccache and "
        "cargo caches' (17 3 * * *): "
    )
    assert verdict.saw.endswith("gbdeploy maintain")
    assert verdict.saw.endswith("gbdeploy maintain")


def check_fix(settings: Settings) -> str:
    return next(c.fix for c in build_checks(settings) if c.name == "ci.cache-cleanup-daily")


def test_a_workflow_schedule_that_is_not_daily_does_not_count():
    weekly = (
        "on:\n  schedule:\n    - cron: '17 3 * * 0'\njobs:\n  maintain:\n    runs-on: gbo\n"
        "    steps:\n      - run: gbdeploy maintain\n"
    )
    [job] = parse_workflow_schedules(weekly, "w.yaml")
    assert (job.daily, job.command, job.period) == (False, "gbdeploy maintain", 7 * 86400)
    assert parse_workflow_schedules("on: [push]\njobs: {}\n", "w.yaml") == ()
    with pytest.raises(ParseError, match="five cron fields"):
        parse_workflow_schedules(weekly.replace("17 3 * * 0", "daily"), "w.yaml")


# --- DNS, files, processes ---------------------------------------------------------------------
def test_site_domains_are_the_dns_names_of_site_addresses():
    sites = (
        ("chat.example.com", "www.chat.example.com"),
        ("https://Drive.Example.com:443/x",),
        (":8080", "localhost", "10.16.164.40", "[::1]:80", "*.example.com", "{$SITE}"),
        ("chat.example.com.",),
    )
    assert site_domains(sites) == ("chat.example.com", "www.chat.example.com", "drive.example.com")


def test_getent_answers_by_name():
    text = (
        "### chat.example.com\n203.0.113.10   chat.example.com\n## exit 0\n"
        "### mail.example.com\n## exit 2\n"
        "### ui.example.com\n## exit 1\n"
    )
    assert parse_resolutions(text) == {
        "chat.example.com": 0,
        "mail.example.com": 2,
        "ui.example.com": 1,
    }
    with pytest.raises(ParseError):
        parse_resolutions("## exit 0\n")


def test_file_guard():
    good = parse_file_guard("600 root root\n")
    assert good is not None and good.root_only and good.git_work_trees == ()
    broken = parse_file_guard("644 root root\ngit /opt/gbo/bin/botserver-stack\n")
    assert broken is not None and not broken.root_only
    assert broken.git_work_trees == ("/opt/gbo/bin/botserver-stack",)
    owned_by_gbuser = parse_file_guard("600 gbuser gbuser\n")
    assert owned_by_gbuser is not None and not owned_by_gbuser.root_only
    assert parse_file_guard("missing\n") is None
    with pytest.raises(ParseError):
        parse_file_guard("stat: cannot statx 'x': Permission denied\n")


def test_process_owners():
    assert parse_process_owners("4242 gbuser\n977 root\n") == ((4242, "gbuser"), (977, "root"))
    assert parse_process_owners("") == ()
    with pytest.raises(ParseError):
        parse_process_owners("gbuser 4242\n")
