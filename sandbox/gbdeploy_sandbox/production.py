"""A production for `doctor` to examine, on this machine: the operations guide's LXD host with
its containers, firewall, cache, proxy, DNS, email and CI runner, built from stand-ins that keep
real state.

`ProductionWorld(standins, root, service_user)` uses a StandinWorld of its own (its `lxc list`
must show only these containers) and writes into its `bin/` — which must be on the sshd's PATH and
nowhere else — launchers for the stand-ins of `PROGRAMS` (modules of gbdeploy_sandbox.programs);
`valkey-cli` is written at its configured path under `root`. Their state lives in `root/state`:

- `iptables` keeps its rules in `state/iptables.rules` (`-S`, `-I`, `-A` really change it), and
  `iptables-save` prints them in iptables-save format;
- `valkey-cli … ping` answers PONG only while those rules let loopback reach port 6379 (the guide's
  "Connection timed out" story);
- `caddy validate --config F --adapter caddyfile` is Debian's real caddy; `reload` has it validate
  the file, then records the file's sha256 in `state/caddy.reloads` (no Caddy runs here);
- `zfs list` prints `state/zfs.snapshots`;
- `fail2ban-client` answers for the jails of `state/fail2ban/PLACE.json` and `crontab -l` with
  `state/crontab/PLACE` (PLACE: the container `lxc exec` runs in, or `host`);
- `getent hosts` answers from `state/dns.json`: no test ever looks a real domain up.

Every path `doctor` reads (Caddyfile, Corefile, caches, binaries, the saved rules, /etc/default/ufw,
fail2ban's jail.d, cron's files, Vault's init.json) lies under `root`, and the ssh config doctor
reads is `root/ssh_config`. `make_good()` builds a production where every check passes,
`make_broken()` one where each rule of the guide is broken.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from gbdeploy.config import DEFAULTS, Settings

from .standins import StandinWorld, launcher

# The stand-ins of a production, on the LXD host's PATH: executable name -> programs module.
PROGRAMS = {
    "iptables": "iptables",
    "iptables-save": "iptables_save",
    "caddy": "caddy",
    "zfs": "zfs",
    "fail2ban-client": "fail2ban_client",
    "crontab": "crontab",
    "getent": "getent",
}


SYSTEM, CI_RUNNER, PROXY, DNS, EMAIL = (
    "pragmatismo-system",
    "pragmatismo-alm-ci",
    "pragmatismo-proxy",
    "pragmatismo-dns",
    "pragmatismo-email",
)
GOOD_RULES = """-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 6379 -j DROP
-A INPUT -p tcp -m tcp --dport 9000 -j DROP
"""
BROKEN_RULES = """-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-A INPUT -p tcp -m tcp --dport 6379 -j DROP
-A INPUT -p tcp -m tcp --dport 9000 -j DROP
"""
SITES = (
    "chat",
    "ui",
    "alm",
    "drive",
    "tables",
    "webmail",
    "mail",
    "meet",
    "docs",
    "status",
    "bots",
    "api",
    "admin",
    "analytics",
    "auth",
    "blog",
    "cdn",
    "crm",
    "forms",
    "wiki",
    "vault",
    "registry",
    "ci",
    "grafana",
    "office",
)
SLEEP = shutil.which("sleep") or "/bin/sleep"
UFW_DEFAULTS = """# /etc/default/ufw
#

# Set to yes to apply rules to support IPv6 (no means only IPv6 on loopback
# accepted). You will need to 'disable' and then 'enable' the firewall for
# the changes to take affect.
IPV6=yes

# Set the default input policy to ACCEPT, DROP, or REJECT. Please note that if
# you change this you will most likely want to adjust your rules.
DEFAULT_INPUT_POLICY="DROP"

# Set the default output policy to ACCEPT, DROP, or REJECT. Please note that if
# you change this you will most likely want to adjust your rules.
DEFAULT_OUTPUT_POLICY="ACCEPT"

# Set the default forward policy to ACCEPT, DROP or REJECT.  Please note that
# if you change this you will most likely want to adjust your rules
DEFAULT_FORWARD_POLICY="FORWARD_POLICY_VALUE"

# Set the default application policy to ACCEPT, DROP, REJECT or SKIP. Please
# note that setting this to ACCEPT may be a security risk. See 'man ufw' for
# details
DEFAULT_APPLICATION_POLICY="SKIP"

# By default, ufw only touches its own chains. Set this to 'yes' to have ufw
# manage the built-in chains too. Warning: setting this to 'yes' will break
# non-ufw managed firewall rules
MANAGE_BUILTINS=no

IPT_SYSCTL=/etc/ufw/sysctl.conf

IPT_MODULES=""
"""
SSHD_JAIL = {
    "maxretry": 5,
    "findtime": 600,
    "bantime": 600,
    "logpath": [],
    "failregex": ["^[aA]uthentication (?:failure|error|failed) for .* from <HOST>( via \\S+)?"],
}
FLOOD_JAIL = {
    "maxretry": 100,
    "findtime": 60,
    "bantime": 3600,
    "failregex": ['^\\{.*"client_ip":"<HOST>".*"status":4\\d\\d\\b'],
}
MAIL_JAIL = {
    "maxretry": 5,
    "findtime": 600,
    "bantime": 3600,
    "logpath": ["/opt/gbo/logs/stalwart.log"],
    "failregex": ["Authentication failed.*remote.ip = <HOST>"],
}
SYSTEM_CRONTAB = """# /etc/crontab: system-wide crontab
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin

# Example of job definition:
# .---------------- minute (0 - 59)
# |  .------------- hour (0 - 23)
# |  |  .---------- day of month (1 - 31)
# |  |  |  .------- month (1 - 12) OR jan,feb,mar,apr ...
# |  |  |  |  .---- day of week (0 - 6) (Sunday=0 or 7) OR sun,mon,tue,wed,thu,fri,sat
# |  |  |  |  |
# *  *  *  *  * user-name command to be executed
17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly
25 6\t* * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }
47 6\t* * 7\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }
52 6\t1 * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }
"""
# zfs-auto-snapshot's own cron files (etc/ of zfsonlinux/zfs-auto-snapshot 1.2.4, as its Makefile
# installs them): a cron.d job every 15 minutes and one script per run-parts directory, by label.
# This host keeps the daily label 7 days (the package's default is 31) and has no weekly or
# monthly job.
ZFS_AUTO_SNAPSHOT_FREQUENT = """PATH="/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"

*/15 * * * * root which zfs-auto-snapshot > /dev/null || exit 0 ; zfs-auto-snapshot --quiet --syslog --label=frequent --keep=4 //
"""  # noqa: E501
ZFS_AUTO_SNAPSHOT = """#!/bin/sh

# Only call zfs-auto-snapshot if it's available
which zfs-auto-snapshot > /dev/null || exit 0

exec zfs-auto-snapshot --quiet --syslog --label=LABEL --keep=KEEP //
"""
CACHE_LIMIT_GB = 0.001  # about 1 MiB: the broken world holds 2 MiB in each cache


def caddyfile(sites: tuple[str, ...], *, storage_root: str | None, typo: bool = False) -> str:
    """A Caddyfile in the guide's shape: global block, one site block per name (`www.` too for
    the first ones, so some blocks hold two addresses)."""
    lines = ["{"]
    if storage_root:
        lines += ["\tstorage file_system {", f"\t\troot {storage_root}", "\t}"]
    lines.append("\temail admin@example.com")
    lines += ["}", "", "(common) {", "\tencode gzip", "\tlog {", "\t\toutput stdout", "\t}", "}"]
    for index, site in enumerate(sites):
        address = f"{site}.example.com" + (f", www.{site}.example.com" if site in SITES[:3] else "")
        lines += ["", f"{address} {{", "\timport common"]
        lines.append(f"\t{'reverse_prxy' if typo else 'reverse_proxy'} 10.16.164.{40 + index}:80")
        lines.append("}")
    return "\n".join(lines) + "\n"


def corefile(*, every_zone_acl: bool) -> str:
    acl = """  acl {
    allow type ANY net 10.0.0.0/8 127.0.0.0/8
    allow type A net 0.0.0.0/0
    allow type AAAA net 0.0.0.0/0
    allow type MX net 0.0.0.0/0
    block
  }
"""
    zones = []
    for index, zone in enumerate(("example.com", "pragmatismo.com.br")):
        body = f"  file /opt/gbo/data/{zone}.zone\n"
        if every_zone_acl or index == 0:
            body += acl
        zones.append(f"{zone}:53 {{\n{body}  cache\n  errors\n}}\n")
    return "\n".join(zones)


def instance(privileged: bool | None, devices: dict[str, dict[str, str]]) -> dict[str, Any]:
    """`lxc config show --expanded` of an Ubuntu container, as LXD prints it."""
    config = {
        "image.architecture": "amd64",
        "image.description": "Ubuntu noble amd64 (20240501_07:42)",
        "image.os": "Ubuntu",
        "image.release": "noble",
        "volatile.base_image": "3c4a1f3e5d0b8d58ad5b7f4d7d5ec1c0e1b62f0b5d7a8fd7c6d3a1e1f6e0a9c2",
        "volatile.eth0.hwaddr": "00:16:3e:4f:21:9a",
        "volatile.last_state.power": "RUNNING",
    }
    if privileged is not None:
        config["security.privileged"] = "true" if privileged else "false"
    return {
        "architecture": "x86_64",
        "config": config,
        "devices": {
            "eth0": {"name": "eth0", "network": "lxdbr0", "type": "nic"},
            "root": {"path": "/", "pool": "default", "type": "disk"},
            **devices,
        },
        "ephemeral": False,
        "profiles": ["default"],
        "stateful": False,
        "description": "",
    }


def proxy(port: int, protocol: str = "tcp") -> dict[str, str]:
    return {
        "connect": f"{protocol}:127.0.0.1:{port}",
        "listen": f"{protocol}:0.0.0.0:{port}",
        "type": "proxy",
    }


class ProductionWorld:
    def __init__(
        self,
        standins: StandinWorld,
        root: Path,
        service_user: str,
        *,
        ssh_alias: str,
        ssh_config: Path,
    ) -> None:
        self.standins = standins
        self.root = Path(root)
        self.state = self.root / "state"
        self.service_user = service_user
        self.ssh_alias = ssh_alias
        self.ssh_config = Path(ssh_config)
        self.bin_dir = self.root / "opt/gbo/bin"
        self.botserver = self.bin_dir / "botserver"
        self.botui = self.bin_dir / "botui"
        self.valkey_cli = self.bin_dir / "botserver-stack/bin/cache/bin/valkey-cli"
        self.caddyfile = self.root / "opt/gbo/conf/config"
        self.caddy_storage = self.root / "opt/gbo/data/caddy"
        self.corefile = self.root / "opt/gbo/conf/Corefile"
        self.rules_file = self.root / "etc/iptables/rules.v4"
        self.sccache = self.root / "ci/root/.cache/sccache"
        self.cargo = self.root / "ci/root/.cargo"
        self.etc = self.root / "etc"
        self.vault_init = self.root / "opt/gbo/bin/botserver-stack/conf/vault/init.json"
        self.own_ssh_config = self.root / "ssh_config"
        self.target_ssh = ssh_alias  # see reach_target_as

    # --- setup -----------------------------------------------------------------------------
    def install(self) -> ProductionWorld:
        """Stand-ins written, and the host emptied of containers and units of earlier worlds."""
        self.stop_units()
        for directory in (self.standins.containers, self.standins.units, self.standins.timers):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        self.state.mkdir(parents=True, exist_ok=True)
        for name, module in PROGRAMS.items():
            self.standins.install_program(name, module, self.state)
        self.valkey_cli.parent.mkdir(parents=True, exist_ok=True)
        self.valkey_cli.write_text(launcher("valkey_cli", self.state))
        self.valkey_cli.chmod(0o755)
        self.own_ssh_config.write_text(self.ssh_config.read_text())
        return self

    def reach_target_as(self, user: str) -> None:
        """Make the system target a plain ssh Host entry that logs in as `user` (never used to
        connect: doctor reads from it which user a deploy to that target would be)."""
        alias = f"{self.ssh_alias}-as-{user}"
        with open(self.own_ssh_config, "a") as config:
            config.write(f"\nHost {alias}\n    HostName 127.0.0.1\n    User {user}\n")
        self.target_ssh = alias

    def settings_mapping(self) -> dict[str, Any]:
        """What a gbdeploy.yaml for this production holds."""
        return {
            "ssh": {"config": str(self.own_ssh_config)},
            "targets": {"system": self._target()},
            "components": {
                "botserver": {"binary": str(self.botserver), "user": self.service_user},
                "botui": {
                    "binary": str(self.botui),
                    "user": self.service_user,
                    "restart": {"systemd": "ui.service"},
                },
            },
            "doctor": {
                "host": self.ssh_alias,
                "caddyfile": str(self.caddyfile),
                "caddy_storage_root": str(self.caddy_storage),
                "corefile": str(self.corefile),
                "valkey_cli": str(self.valkey_cli),
                "iptables_rules_file": str(self.rules_file),
                "sccache_max_gb": CACHE_LIMIT_GB,
                "cargo_max_gb": CACHE_LIMIT_GB,
                "ufw_defaults": str(self.etc / "default/ufw"),
                "fail2ban_dir": str(self.etc / "fail2ban"),
                "cron_etc": str(self.etc),
                "vault_init": str(self.vault_init),
                "caddy_access_log": str(self.root / "opt/gbo/logs/access.log"),
            },
            # the CI runner's caches, which the builds fill and doctor measures
            "workflows": {"sccache_dir": str(self.sccache), "cargo_home": str(self.cargo)},
        }

    def _target(self) -> dict[str, str]:
        if self.target_ssh == self.ssh_alias:
            return {"ssh": self.ssh_alias, "lxc": SYSTEM}
        return {"ssh": self.target_ssh}

    def settings(self, **doctor: Any) -> Settings:
        """Typed settings: the defaults with this production's sections (and `doctor` overrides)."""
        mapping = self.settings_mapping()
        mapping["doctor"].update(doctor)
        merged = {name: dict(section) for name, section in DEFAULTS.items()}
        for name, section in mapping.items():
            if name in ("targets", "components"):
                merged[name] = section
            else:
                merged[name].update(section)
        return Settings.from_mapping(merged)

    def make_good(self) -> ProductionWorld:
        self._containers(broken=False)
        (self.state / "iptables.rules").write_text(GOOD_RULES)
        self._binaries(owner=self.service_user)
        self.standins.add_unit(
            "ui.service",
            exec_start=str(self.botui),
            user=self.service_user,
            environment={"BOTSERVER_URL": "http://localhost:5858", "PORT": "5859"},
        )
        self.caddy_storage.mkdir(parents=True, exist_ok=True)
        self._write(self.caddyfile, caddyfile(SITES, storage_root=str(self.caddy_storage)))
        self._write(self.corefile, corefile(every_zone_acl=True))
        self._cache(self.sccache, 4096)
        self._cache(self.cargo / "registry/cache", 4096)
        self._snapshots(stale=False)
        self._host(good=True)
        self._fail2ban(good=True)
        self._schedules(good=True)
        self._vault(good=True)
        self._dns(dead=())
        return self

    def make_broken(self) -> ProductionWorld:
        self._containers(broken=True)
        (self.state / "iptables.rules").write_text(BROKEN_RULES)
        self._binaries(owner="root")
        self.standins.add_unit(
            "ui.service",
            exec_start=str(self.botui),
            user=self.service_user,
            environment={"BOTSERVER_URL": "https://chat.example.com", "PORT": "5859"},
        )
        self.standins.add_unit("system.service", exec_start=f"{self.botserver} 300")
        self.start_unit("system.service")
        self._write(self.caddyfile, caddyfile(SITES[5:7], storage_root=None, typo=True))
        self._write(self.corefile, corefile(every_zone_acl=False))
        self._cache(self.sccache, 2 * 1024 * 1024)
        self._cache(self.cargo / "registry/cache", 2 * 1024 * 1024)
        self._snapshots(stale=True)
        self._host(good=False)
        self._fail2ban(good=False)
        self._schedules(good=False)
        self._vault(good=False)
        self._dns(dead=(f"{SITES[6]}.example.com",))
        self.reach_target_as("deployer")
        return self

    def _host(self, *, good: bool) -> None:
        policy = "ACCEPT" if good else "DROP"
        self._write(self.etc / "default/ufw", UFW_DEFAULTS.replace("FORWARD_POLICY_VALUE", policy))
        self.standins.add_unit(
            "lxd-forward.service",
            exec_start="/usr/sbin/iptables -I FORWARD -i lxdbr0 -j ACCEPT",
            enabled=good,
        )

    def _fail2ban(self, *, good: bool) -> None:
        directory = self.state / "fail2ban"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
        flood = dict(FLOOD_JAIL, logpath=[str(self.root / "opt/gbo/logs/access.log")])
        if good:
            places = {"host": {"sshd": SSHD_JAIL}, PROXY: {"caddy-http-flood": flood}}
            places[EMAIL] = {"stalwart": MAIL_JAIL}
        else:
            sloppy = dict(flood, maxretry=10, bantime=600, failregex=['"client_ip":"<HOST>"'])
            places = {PROXY: {"caddy-http-flood": sloppy, "sshd": SSHD_JAIL}}
            places[EMAIL] = {"sshd": SSHD_JAIL}  # running, but nothing watches the mail server
        for place, jails in places.items():
            (directory / f"{place}.json").write_text(json.dumps({"jails": jails}, indent=2))
        enabled = "false" if good else "true"
        self._write(
            self.etc / "fail2ban/jail.d/defaults-debian.conf",
            f"[sshd]\nenabled = {enabled}\nbackend = systemd\n",
        )

    def _schedules(self, *, good: bool) -> None:
        crontabs = self.state / "crontab"
        shutil.rmtree(crontabs, ignore_errors=True)
        crontabs.mkdir()
        for directory in ("cron.d", "cron.hourly", "cron.daily", "cron.weekly", "cron.monthly"):
            shutil.rmtree(self.etc / directory, ignore_errors=True)
        self._write(self.etc / "crontab", SYSTEM_CRONTAB)
        if good:
            self.standins.add_unit(
                "cache-cleanup.service", exec_start="/usr/local/bin/gbdeploy maintain"
            )
            self.standins.add_timer(
                "cache-cleanup.timer", on_calendar="*-*-* 03:17:00", unit="cache-cleanup.service"
            )
            self._write(self.etc / "cron.d/zfs-auto-snapshot", ZFS_AUTO_SNAPSHOT_FREQUENT)
            for label, keep in (("hourly", 24), ("daily", 7)):
                script = ZFS_AUTO_SNAPSHOT.replace("LABEL", label).replace("KEEP", str(keep))
                self._write(self.etc / f"cron.{label}/zfs-auto-snapshot", script)
        else:
            (crontabs / CI_RUNNER).write_text(
                f"# m h dom mon dow command\n0 4 * * 0 rm -rf {self.sccache}/*\n"
            )
            self._write(
                self.etc / "cron.d/zfs-snapshots",
                "0 2 * * * root zfs snapshot -r default/containers@daily-$(date +\\%F)\n",
            )

    def _vault(self, *, good: bool) -> None:
        self._write(self.vault_init, '{"unseal_keys_b64": ["c2VjcmV0"], "root_token": "s.x"}\n')
        self.vault_init.chmod(0o600 if good else 0o644)
        stack_git = self.root / "opt/gbo/bin/botserver-stack/.git"
        if good:
            shutil.rmtree(stack_git, ignore_errors=True)
        else:
            stack_git.mkdir(parents=True, exist_ok=True)

    def _dns(self, *, dead: tuple[str, ...]) -> None:
        names = [f"{prefix}{site}.example.com" for site in SITES for prefix in ("", "www.")]
        records = {n: [f"203.0.113.{i % 250 + 1}"] for i, n in enumerate(names) if n not in dead}
        (self.state / "dns.json").write_text(json.dumps(records, indent=2))

    def _containers(self, *, broken: bool) -> None:
        host_mount = {
            "gbo-bin": {
                "path": "/opt/gbo",
                "source": "/var/snap/lxd/common/lxd/containers/pragmatismo-system/rootfs/opt/gbo",
                "type": "disk",
            }
        }
        volume = {
            "cache": {
                "path": "/root/.cache",
                "pool": "default",
                "source": "ci-cache",
                "type": "disk",
            }
        }
        mail = {
            "smtp": proxy(25),
            "smtps": proxy(465),
            "submission": proxy(587),
            "imaps": proxy(993),
            "pop3s": proxy(995),
            "imap": proxy(143),
            "pop3": proxy(110),
        }
        if not broken:
            mail["sieve"] = proxy(4190)
        dns = {} if broken else {"dns-udp": proxy(53, "udp"), "dns-tcp": proxy(53)}
        self.standins.add_container(SYSTEM, config=instance(not broken, {}))
        self.standins.add_container(
            CI_RUNNER, config=instance(None, {**volume, **(host_mount if broken else {})})
        )
        self.standins.add_container(
            PROXY, config=instance(None, {"http": proxy(80), "https": proxy(443)})
        )
        self.standins.add_container(EMAIL, config=instance(None, mail))
        self.standins.add_container(DNS, config=instance(None, dns))

    def _binaries(self, *, owner: str) -> None:
        record = pwd.getpwnam(owner)
        for binary in (self.botserver, self.botui):
            binary.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SLEEP, binary)  # an ELF: /proc/PID/exe names the binary itself
            binary.chmod(0o755)
            os.chown(binary, record.pw_uid, record.pw_gid)

    def _cache(self, directory: Path, size: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "blob").write_bytes(b"\0" * size)

    def _snapshots(self, *, stale: bool) -> None:
        now = int(time.time())
        rows = [
            (f"default/containers/{SYSTEM}@daily-{day}", now - day * 86400, 1_200_000_000)
            for day in (1, 2, 3)
        ]
        if stale:
            rows.append(
                (
                    f"default/containers/{CI_RUNNER}@snapshot-before-mounts",
                    now - 40 * 86400,
                    55_834_574_848,
                )
            )
        text = "".join(f"{name}\t{created}\t{used}\n" for name, created, used in rows)
        (self.state / "zfs.snapshots").write_text(text)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    # --- units -----------------------------------------------------------------------------
    def start_unit(self, unit: str) -> None:
        subprocess.run([str(self.standins.bin / "systemctl"), "start", unit], check=True)

    def stop_units(self) -> None:
        """Stop exactly the units this world's systemctl started (by their recorded pids)."""
        for spec in sorted(self.standins.units.glob("*.json")):
            subprocess.run(
                [str(self.standins.bin / "systemctl"), "stop", spec.stem + ".service"],
                check=False,
            )

    def close(self) -> None:
        self.stop_units()

    # --- what a user would look at ---------------------------------------------------------
    def rules(self) -> str:
        return (self.state / "iptables.rules").read_text()

    def caddy_reloads(self) -> list[str]:
        path = self.state / "caddy.reloads"
        return path.read_text().splitlines() if path.exists() else []

    def owner(self, path: Path) -> str:
        return pwd.getpwuid(path.stat().st_uid).pw_name
