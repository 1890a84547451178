"""doctor's parsers on real output, good and broken: iptables -S, lxc YAML, Caddyfile, Corefile,
zfs list, du, systemd."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from gbdeploy.doctor.parsers import (
    ParseError,
    listen_ports,
    loopback_verdict,
    parse_caddy_syntax,
    parse_caddyfile,
    parse_config_dump,
    parse_corefile,
    parse_du_bytes,
    parse_environment,
    parse_exec_path,
    parse_iptables_chain,
    parse_lxc_config,
    parse_lxc_devices,
    parse_unit_table,
    parse_zfs_snapshots,
    stale_snapshots,
    with_file_system_storage,
)
from gbdeploy_sandbox.production import SITES, caddyfile

# --- iptables ----------------------------------------------------------------------------------
# `iptables -S INPUT` in the system container after the guide's fix (nf_tables backend).
IPTABLES_GOOD = """# Warning: iptables-legacy tables present, use iptables-legacy to see them
-P INPUT ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -s 10.16.164.0/24 -p tcp -m tcp --dport 6379 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 6379 -j DROP
-A INPUT -p tcp -m tcp --dport 9000 -m comment --comment "minio, internal only" -j DROP
"""
# The outage: DROP rules and no loopback ACCEPT.
IPTABLES_OUTAGE = """-P INPUT ACCEPT
-A INPUT -p tcp -m tcp --dport 6379 -j DROP
-A INPUT -p tcp -m tcp --dport 9000 -j DROP
"""
# `iptables -A INPUT -i lo -j ACCEPT` run after the DROP rules: too late.
IPTABLES_LATE = """-P INPUT ACCEPT
-A INPUT -p tcp -m tcp --dport 6379 -j DROP
-A INPUT -i lo -j ACCEPT
"""


def test_iptables_loopback_before_drop_passes():
    chain = parse_iptables_chain(IPTABLES_GOOD)
    assert chain.policy == "ACCEPT"
    assert [r.target for r in chain.rules] == ["ACCEPT", "ACCEPT", "DROP", "DROP"]
    assert chain.rules[3].restricted  # a quoted comment does not confuse the split
    verdict = loopback_verdict(chain)
    assert verdict.ok
    assert "rule 1: -A INPUT -i lo -j ACCEPT" in verdict.saw
    assert "before the first DROP at rule 3" in verdict.saw


def test_iptables_without_loopback_accept_fails_naming_the_drop():
    verdict = loopback_verdict(parse_iptables_chain(IPTABLES_OUTAGE))
    assert not verdict.ok
    assert "before rule 1: -A INPUT -p tcp -m tcp --dport 6379 -j DROP" in verdict.saw


def test_iptables_loopback_accept_after_a_drop_fails():
    verdict = loopback_verdict(parse_iptables_chain(IPTABLES_LATE))
    assert not verdict.ok
    assert "only at rule 2, after rule 1" in verdict.saw


@pytest.mark.parametrize(
    "rule",
    [
        "-A INPUT ! -i lo -j ACCEPT",  # everything but loopback
        "-A INPUT -i lo -p tcp -m tcp --dport 22 -j ACCEPT",  # only ssh on loopback
        "-A INPUT -i lo -j LOG",
    ],
)
def test_iptables_partial_loopback_rules_do_not_count(rule):
    chain = parse_iptables_chain(f"-P INPUT ACCEPT\n{rule}\n-A INPUT -p tcp --dport 6379 -j DROP\n")
    assert not loopback_verdict(chain).ok


def test_iptables_drop_policy_without_loopback_fails_and_without_drops_passes():
    assert not loopback_verdict(parse_iptables_chain("-P INPUT DROP\n")).ok
    open_chain = parse_iptables_chain("-P INPUT ACCEPT\n-A INPUT -p tcp --dport 22 -j ACCEPT\n")
    verdict = loopback_verdict(open_chain)
    assert verdict.ok
    assert "not blocked" in verdict.saw


def test_iptables_other_chains_are_ignored_and_garbage_is_refused():
    text = "-P INPUT ACCEPT\n-N ufw-before-input\n-A ufw-before-input -i lo -j ACCEPT\n"
    assert parse_iptables_chain(text).rules == ()
    with pytest.raises(ParseError):
        parse_iptables_chain("Chain INPUT (policy ACCEPT)\ntarget prot opt source destination\n")
    with pytest.raises(ParseError, match="no chain INPUT"):
        parse_iptables_chain("")


# --- LXD ---------------------------------------------------------------------------------------
LXC_SYSTEM = """architecture: x86_64
config:
  image.architecture: amd64
  image.description: ubuntu 24.04 LTS amd64 (release) (20240423)
  image.os: ubuntu
  image.release: noble
  security.privileged: "true"
  volatile.base_image: 3c4a1f3e5d0b8d58ad5b7f4d7d5ec1c0e1b62f0b5d7a8fd7c6d3a1e1f6e0a9c2
  volatile.cloud-init.instance-id: 0f3b2c1a-5f33-4f4e-9d0a-2d6b3c8c9e11
  volatile.eth0.host_name: veth5c2a1f0e
  volatile.eth0.hwaddr: 00:16:3e:4f:21:9a
  volatile.idmap.base: "0"
  volatile.last_state.power: RUNNING
devices:
  eth0:
    ipv4.address: 10.16.164.33
    name: eth0
    network: lxdbr0
    type: nic
  gbo:
    path: /opt/gbo
    pool: default
    source: gbo-data
    type: disk
  root:
    path: /
    pool: default
    type: disk
ephemeral: false
profiles:
- default
stateful: false
description: ""
"""
LXC_RUNNER_DEVICES = """eth0:
  name: eth0
  network: lxdbr0
  type: nic
gbo-bin:
  path: /opt/gbo/bin
  source: /var/snap/lxd/common/lxd/containers/pragmatismo-system/rootfs/opt/gbo/bin
  type: disk
root:
  path: /
  pool: default
  type: disk
"""


def test_lxc_config_reads_privileged_and_devices():
    config = parse_lxc_config(LXC_SYSTEM)
    assert config.privileged
    assert config.config["volatile.idmap.base"] == "0"
    assert {d.name: d.type for d in config.devices} == {
        "eth0": "nic",
        "gbo": "disk",
        "root": "disk",
    }
    assert not any(d.is_host_mount for d in config.devices)  # `gbo` is a pool volume


@pytest.mark.parametrize(
    ("line", "privileged"),
    [
        ('  security.privileged: "false"\n', False),
        ("", False),
        ("  security.privileged: true\n", True),
    ],
)
def test_lxc_privileged_unset_false_or_unquoted(line, privileged):
    text = LXC_SYSTEM.replace('  security.privileged: "true"\n', line)
    assert parse_lxc_config(text).privileged is privileged


def test_lxc_device_show_finds_host_mounts_but_not_the_root_disk():
    devices = parse_lxc_devices(LXC_RUNNER_DEVICES)
    assert [d.name for d in devices if d.is_host_mount] == ["gbo-bin"]
    assert parse_lxc_devices("{}\n") == ()


def test_lxc_broken_yaml_is_refused():
    with pytest.raises(ParseError, match="not YAML"):
        parse_lxc_config("config: {security.privileged: [\n")
    with pytest.raises(ParseError, match="has no type"):
        parse_lxc_devices("root:\n  path: /\n")
    with pytest.raises(ParseError, match="mapping"):
        parse_lxc_devices("- a\n- b\n")


def test_proxy_device_ports_from_every_listen_form():
    assert listen_ports("tcp:0.0.0.0:80") == {80}
    assert listen_ports("udp:[::]:53") == {53}
    assert listen_ports("tcp:203.0.113.7:80,443") == {80, 443}
    assert listen_ports("tcp:0.0.0.0:993-995") == {993, 994, 995}
    with pytest.raises(ParseError):
        listen_ports("tcp:0.0.0.0:http")


def test_config_dump_splits_per_container():
    email = """config: {}
devices:
  smtp:
    connect: tcp:127.0.0.1:25
    listen: tcp:0.0.0.0:25
    type: proxy
  sieve:
    connect: tcp:127.0.0.1:4190
    listen: tcp:0.0.0.0:4190
    type: proxy
"""
    dump = (
        f"### lxc-container pragmatismo-system\n{LXC_SYSTEM}"
        f"### lxc-container pragmatismo-email\n{email}"
    )
    configs = parse_config_dump(dump)
    assert list(configs) == ["pragmatismo-system", "pragmatismo-email"]
    ports = {p for d in configs["pragmatismo-email"].devices for p in d.listen_ports}
    assert ports == {25, 4190}
    with pytest.raises(ParseError):
        parse_config_dump("config: {}\n")


# --- Caddyfile ---------------------------------------------------------------------------------
def test_full_caddyfile_has_storage_and_every_vhost():
    summary = parse_caddyfile(caddyfile(SITES, storage_root="/opt/gbo/data/caddy"))
    assert summary.stores_on_file_system
    assert summary.storage and summary.storage.root == "/opt/gbo/data/caddy"
    assert summary.vhost_count == 28  # 25 sites, 3 of them with a www. address too
    assert len(summary.sites) == 25
    assert ("chat.example.com", "www.chat.example.com") in summary.sites


def test_partial_caddyfile_two_vhosts_no_storage():
    text = """chat.example.com {
\treverse_proxy 10.16.164.33:5859
}

alm.example.com {
\treverse_proxy 10.16.164.40:3000
}
"""
    summary = parse_caddyfile(text)
    assert summary.global_block_line is None
    assert summary.storage is None
    assert summary.vhost_count == 2


def test_caddyfile_details_snippets_imports_comments_quotes_and_one_line_storage():
    text = """# main config
{
\temail admin@example.com # who gets ACME mail
\tstorage file_system /opt/gbo/data/caddy
}
(headers) {
\theader X-Frame-Options "DENY { not a block }"
}
import sites/*.caddy
chat.example.com, meet.example.com {
\t@ws {
\t\theader Connection *Upgrade*
\t}
\treverse_proxy @ws 10.16.164.33:5858
}
"""
    summary = parse_caddyfile(text)
    assert summary.storage and summary.storage.root == "/opt/gbo/data/caddy"
    assert summary.sites == (("chat.example.com", "meet.example.com"),)
    assert summary.imports == ("sites/*.caddy",)


def test_caddyfile_other_storage_and_single_site_without_braces():
    summary = parse_caddyfile("{\n\tstorage redis\n}\n")
    assert summary.storage and summary.storage.module == "redis"
    assert not summary.stores_on_file_system
    assert parse_caddyfile('localhost\nrespond "hi"\n').sites == (("localhost",),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.example.com {\n\treverse_proxy x\n", "never closed"),
        ("a.example.com {\n}\n}\n", "without a matching"),
        ('a.example.com {\n\trespond "hi\n}\n', "unterminated"),
    ],
)
def test_broken_caddy_syntax_is_refused_with_the_line(text, message):
    with pytest.raises(ParseError, match=message) as raised:
        parse_caddy_syntax(text)
    assert raised.value.line is not None


def test_adding_storage_keeps_every_other_byte():
    original = caddyfile(SITES, storage_root=None)
    changed = with_file_system_storage(original, "/opt/gbo/data/caddy")
    assert (
        changed.replace("\tstorage file_system {\n\t\troot /opt/gbo/data/caddy\n\t}\n", "")
        == original
    )
    assert parse_caddyfile(changed).stores_on_file_system
    bare = "chat.example.com {\n\treverse_proxy x\n}\n"
    assert with_file_system_storage(bare, "/d").endswith(bare)
    assert parse_caddyfile(with_file_system_storage(bare, "/d")).storage.root == "/d"
    with pytest.raises(ParseError, match="already set"):
        with_file_system_storage(changed, "/elsewhere")


@pytest.mark.slow  # Debian's caddy
@pytest.mark.parametrize(
    "original",
    [
        caddyfile(SITES, storage_root=None),
        "chat.example.com {\n\treverse_proxy 127.0.0.1:5858\n}\n",
    ],
)
def test_the_storage_doctor_adds_is_valid_for_debians_caddy(tmp_path, original):
    caddy = shutil.which("caddy")
    assert caddy, "Debian's caddy is not installed: run `bash .ci/setup`"
    path = tmp_path / "Caddyfile"
    path.write_text(with_file_system_storage(original, str(tmp_path / "certificates")))
    validated = subprocess.run(
        [caddy, "validate", "--config", str(path), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.strip() == "Valid configuration"


# --- Corefile ----------------------------------------------------------------------------------
COREFILE = """zone.example.com:53 {
  file /opt/gbo/data/zone.example.com.zone
  acl {
    allow type ANY net 10.0.0.0/8 127.0.0.0/8
    allow type A net 0.0.0.0/0
    block
  }
  cache
  errors
}

(hardened) {
  acl {
    block type ANY
  }
}

pragmatismo.com.br:53 {
  import hardened
  file /opt/gbo/data/pragmatismo.com.br.zone
}

. {
  forward . 1.1.1.1
  cache
}
"""


def test_corefile_zones_with_and_without_acl():
    zones = parse_corefile(COREFILE)
    assert [(z.keys, z.has_acl) for z in zones] == [
        (("zone.example.com:53",), True),
        (("pragmatismo.com.br:53",), True),  # through the snippet
        ((".",), False),
    ]
    assert zones[2].line == 23


def test_corefile_broken():
    with pytest.raises(ParseError, match="not a server block"):
        parse_corefile("example.com:53\n  file x\n")
    with pytest.raises(ParseError, match="never closed"):
        parse_corefile("example.com:53 {\n  acl {\n    block\n}\n")


# --- zfs, du, systemd --------------------------------------------------------------------------
ZFS = (
    "default/containers/pragmatismo-alm-ci@snapshot-before-mounts\t1700000000\t55834574848\n"
    "default/containers/pragmatismo-system@daily-20231120\t1700438400\t1203765248\n"
    "default/containers/pragmatismo-system@daily-20231121\t1700524800\t98304\n"
)


def test_zfs_snapshots_and_the_stale_ones_largest_first():
    snapshots = parse_zfs_snapshots(ZFS)
    assert snapshots[0].used == 55834574848
    stale = stale_snapshots(snapshots, now=1700524800 + 86400, retention_days=7)
    assert [s.name.split("@")[1] for s in stale] == ["snapshot-before-mounts"]
    assert stale_snapshots(snapshots, now=1700524801, retention_days=1) == (
        snapshots[0],
        snapshots[1],
    )
    assert parse_zfs_snapshots("") == ()


def test_zfs_human_readable_output_is_refused():
    with pytest.raises(ParseError, match="exact numbers"):
        parse_zfs_snapshots("default/containers/x@s\tMon Nov 20 0:00 2023\t1.12G\n")


def test_du():
    assert parse_du_bytes("21474836480\t/root/.cache/sccache\n") == 21474836480
    with pytest.raises(ParseError):
        parse_du_bytes("du: cannot access '/x': No such file or directory\n")


def test_systemd_environment_and_exec_start():
    env = parse_environment('BOTSERVER_URL=http://localhost:5858 "GREETING=hello world" PORT=5859')
    assert env == {
        "BOTSERVER_URL": "http://localhost:5858",
        "GREETING": "hello world",
        "PORT": "5859",
    }
    real = (
        "{ path=/opt/gbo/bin/botserver ; argv[]=/opt/gbo/bin/botserver --noconsole ; "
        "ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; "
        "status=0/0 }"
    )
    assert parse_exec_path(real) == "/opt/gbo/bin/botserver"
    assert parse_exec_path("-/opt/gbo/bin/botui --x") == "/opt/gbo/bin/botui"
    assert parse_exec_path("") is None
    with pytest.raises(ParseError):
        parse_environment('A="unclosed')


def test_unit_table():
    text = (
        "system.service\tactive\tenabled\t"
        "{ path=/opt/gbo/bin/botserver ; argv[]=/opt/gbo/bin/botserver ; }\n"
        "ssh.service\tinactive\tdisabled\t\n"
        "old.service\tinactive\t\t\n"
    )
    units = parse_unit_table(text)
    assert [(u.unit, u.active, u.enabled, u.exec_path) for u in units] == [
        ("system.service", "active", "enabled", "/opt/gbo/bin/botserver"),
        ("ssh.service", "inactive", "disabled", None),
        ("old.service", "inactive", "", None),
    ]
    with pytest.raises(ParseError):
        parse_unit_table("just one field\n")
