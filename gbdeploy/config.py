"""Configuration: Invoke's layered config (prefix `gbdeploy`), validated into typed settings.

Layers, lowest first: the defaults below, `/etc/gbdeploy.yaml`, `~/.gbdeploy.yaml`, the project's
`gbdeploy.yaml` (found from the current directory upward, like Invoke finds `tasks.py`),
`GBDEPLOY_*` environment variables, and a runtime file given with `-f`. The forge token comes only
from `GBDEPLOY_FORGE_TOKEN` or `FORGEJO_TOKEN`, and lives in a `Secret` that never prints itself.

Each key is written once: as a field of its section's dataclass, whose type carries the rule its
value must follow and whose default is the default (`keep_releases: Count = 3` in `Component`).
`DEFAULTS`, Invoke's lowest layer, is derived from those fields; the targets and components that
exist without any config file are `BUILT_IN_TARGETS` and `BUILT_IN_COMPONENTS`, holding only
what differs from the field defaults. A new section is a dataclass plus one field of `Settings`.
"""

from __future__ import annotations

import difflib
import errno
import ipaddress
import json
import math
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from invoke import Config as InvokeConfig
from invoke.config import AmbiguousMergeError, DataProxy
from invoke.exceptions import AmbiguousEnvVar, UncastableEnvVar, UnknownFileType
from invoke.util import yaml as invoke_yaml  # Invoke parses with its vendored copy of PyYAML

from .errors import ConfigError, UsageError

CONFIG_NAMES = ("gbdeploy.yaml", "gbdeploy.yml", "gbdeploy.json")
TOKEN_VARIABLES = ("GBDEPLOY_FORGE_TOKEN", "FORGEJO_TOKEN")


# --- what a value must be, beyond its type ----------------------------------------------------
# A field's type says it: `stop_timeout: Seconds = 20.0`. `_check` applies the rule after the
# type, so a mistake is refused when the config is loaded, naming the key.


@dataclass(frozen=True)
class Rule:
    expected: str  # completes "expected …, got VALUE"
    accepts: Callable[[Any], bool]


def _matching(expected: str, regex: str, also: Callable[[str], bool] = lambda _: True) -> Rule:
    compiled = re.compile(regex)
    return Rule(expected, lambda value: bool(compiled.fullmatch(value)) and also(value))


def _between(low: float, high: float, expected: str) -> Rule:
    return Rule(expected, lambda value: low <= value <= high)  # NaN fails both comparisons


def _target_path(value: str) -> bool:
    """An absolute path naming a file or directory below `/`: no empty, `.` or `..` part."""
    parts = value.split("/")[1:]
    return all(part not in ("", ".", "..") and not part.startswith("-") for part in parts)


def _formats_with(*names: str) -> Callable[[str], bool]:
    def formats(value: str) -> bool:
        try:
            value.format(**dict.fromkeys(names, "x"))
        except (KeyError, IndexError, ValueError, AttributeError):
            return False
        return True

    return formats


def _http_url(*, port_required: bool) -> Callable[[str], bool]:
    def accepts(value: str) -> bool:
        value = with_port(value, 1)  # a switch component's health names its port `{port}`
        if not _URL.fullmatch(value):
            return False
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            return False
        host = parts.hostname or ""
        return (
            parts.scheme in ("http", "https")
            and bool(_HOST.fullmatch(host))
            and parts.username is None
            and (port is not None or not port_required)
            and (port is None or 0 < port < 65536)
        )

    return accepts


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def with_port(template: str, port: int) -> str:
    """`template` (a component's `start` or `health`) with `{port}` replaced by `port`; other
    braces (a shell's `${VAR}`) are left as they are."""
    return template.replace("{port}", str(port))


_URL = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]+")  # no quotes, spaces, `$` or backticks
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|[0-9A-Fa-f:.]+")
_NO_CONTROL = r"[^\x00-\x1f\x7f]*"
_SAFE_PATH = r"[A-Za-z0-9._+@/~-]*"
WEEK = 7 * 86400.0

Seconds = Annotated[float, _between(1e-3, WEEK, "a number of seconds above 0, at most a week")]
Count = Annotated[int, _between(0, 1_000_000, "a whole number from 0 to 1000000")]
Gigabytes = Annotated[float, _between(0, 1_000_000, "a size in GiB from 0 to 1000000")]
Port = Annotated[int, _between(1, 65535, "a port number from 1 to 65535")]
Name = Annotated[
    str,
    _matching(
        "a name of letters, digits, `.`, `_` and `-` that starts with a letter, digit or `_`",
        r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}",
    ),
]
UserName = Annotated[
    str,
    _matching(
        "a user name (letters, digits, `_`, `.`, `-`, starting with a letter or `_`)",
        r"[A-Za-z_][A-Za-z0-9_.-]{0,31}",
    ),
]
UnitName = Annotated[
    str,
    _matching("a systemd unit name, e.g. ui.service", r"[A-Za-z0-9_][A-Za-z0-9:_.@-]{0,250}"),
]
ContainerName = Annotated[
    str,
    _matching(
        "a container name (letters, digits, `-`), optionally after a remote (`bot:system`)",
        r"(?:[A-Za-z0-9][A-Za-z0-9._-]*:)?[A-Za-z][A-Za-z0-9-]{0,62}",
    ),
]
SshHost = Annotated[
    str,
    _matching(
        "an ssh Host alias or host name (letters, digits, `._@:-`)",
        r"[A-Za-z0-9_][A-Za-z0-9._@:%+-]{0,252}",
    ),
]
BranchName = Annotated[
    str,
    _matching(
        "a branch name (letters, digits, `._/-`, no `..`)",
        r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}",
        lambda v: ".." not in v and "//" not in v and not v.endswith(("/", ".", ".lock")),
    ),
]
TargetPath = Annotated[
    str,
    _matching(
        "an absolute path to a file, without quotes, `$` or backslashes, e.g. /opt/gbo/bin/x",
        r"/[^\x00-\x1f\x7f$`\"'\\]*",
        _target_path,
    ),
]
RelativePath = Annotated[
    str,
    _matching(
        "a path inside the root repository (letters, digits, `._+@/-`, no `..`)",
        r"[A-Za-z0-9_][A-Za-z0-9._+@/-]{0,250}",
        lambda v: ".." not in v.split("/") and "" not in v.rstrip("/").split("/"),
    ),
]
ArtifactPath = Annotated[
    str,
    _matching(
        "a file path of letters, digits and `._+@/~-` (no spaces, quotes or `$`)",
        r"[A-Za-z0-9_./~+@]" + _SAFE_PATH,
    ),
]
LocalPath = Annotated[str, _matching("a path on one line", r"[^\x00-\x1f\x7f]{1,4096}")]
WorkflowFile = Annotated[
    str,
    _matching(
        "a workflow file name ending in .yaml or .yml, e.g. botserver.yaml",
        r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}\.ya?ml",
    ),
]
OneLine = Annotated[str, _matching("text on one line", _NO_CONTROL)]
WorkflowRepo = Annotated[
    str,
    _matching(
        "root, component or OWNER/REPO (where the component's workflow lives and runs)",
        r"root|component|[A-Za-z0-9_][A-Za-z0-9._-]{0,99}/[A-Za-z0-9_][A-Za-z0-9._-]{0,99}",
    ),
]
ForgeUrl = Annotated[
    str,
    _matching(
        "an http:// or https:// URL with a host and no user or password in it",
        r".+",
        _http_url(port_required=False),
    ),
]
HealthUrl = Annotated[
    str,
    _matching(
        "an http:// or https:// URL with host and port, e.g. http://localhost:5858/health "
        "(a switch component: http://localhost:{port}/health)",
        r".+",
        _http_url(port_required=True),
    ),
]
CommitMessage = Annotated[
    str,
    _matching(
        "text whose only placeholders are {component}, {short_sha} and {sha}",
        r"(?s).+",
        _formats_with("component", "short_sha", "sha"),
    ),
]
RunAs = Annotated[
    str,
    _matching(
        "a command prefix on one line whose only placeholder is {user}, e.g. sudo -u {user}",
        _NO_CONTROL,
        _formats_with("user"),
    ),
]
EnvName = Annotated[
    str, _matching("an environment variable name, e.g. PORT", r"[A-Za-z_][A-Za-z0-9_]{0,127}")
]
ToolchainPath = Annotated[
    str,
    _matching(
        "directories separated by `:`, each absolute or under $HOME, e.g. $HOME/.cargo/bin",
        r"(?:/|\$HOME/|\$HOME$)[^\x00-\x1f\x7f$`\"'\\:]*"
        r"(?::(?:/|\$HOME/|\$HOME$)[^\x00-\x1f\x7f$`\"'\\:]*)*",
    ),
]
Sibling = Annotated[
    str,
    _matching(
        "a directory beside the component in the root repository, optionally =OWNER/REPO "
        "(default: forge.owner and the directory's name), e.g. botlib=GeneralBots/botlib",
        r"[A-Za-z0-9_][A-Za-z0-9._+@-]{0,99}(?:/[A-Za-z0-9_][A-Za-z0-9._+@-]{0,99})*"
        r"(?:=[A-Za-z0-9_][A-Za-z0-9._-]{0,99}/[A-Za-z0-9_][A-Za-z0-9._-]{0,99})?",
    ),
]
SecretName = Annotated[
    str,
    _matching(
        "the name of a repository secret (letters, digits, `_`; not FORGEJO_, GITEA_, GITHUB_)",
        r"(?:[A-Za-z_][A-Za-z0-9_]{0,99})?",
        # a Forgejo token is 40 hex digits: the secret's name goes here, never the token
        lambda v: (
            not v.upper().startswith(("FORGEJO_", "GITEA_", "GITHUB_"))
            and not re.fullmatch(r"[0-9a-fA-F]{40}", v)
        ),
    ),
]
TokenText = re.compile(r"[\x21-\x7e]{1,4096}")  # visible ASCII: what a forge token is made of


class Secret:
    """A value that never shows itself in str(), repr() or f-strings; `.reveal()` gives it.
    `problem`: why it cannot be used (a token with a newline), raised where it would be used."""

    __slots__ = ("_value", "problem")

    def __init__(self, value: str, problem: ConfigError | None = None) -> None:
        self._value = value
        self.problem = problem

    def reveal(self) -> str:
        if self.problem is not None:
            raise self.problem
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


# --- the settings, each key once with its default ---------------------------------------------
# A section's dataclass is the only place its keys and defaults are written: DEFAULTS (Invoke's
# lowest layer) is derived from it. `metadata=NOT_A_KEY` marks a field that no file sets.

NOT_A_KEY = {"key": False}


@dataclass(frozen=True)
class ForgeSettings:
    url: ForgeUrl = "http://alm.pragmatismo.com.br"
    owner: Name = "GeneralBots"
    repo: Name = "gb"
    timeout: Seconds = 30.0
    token: Secret | None = field(default=None, compare=False, metadata=NOT_A_KEY)
    # A CA certificate (PEM) that verifies forge.url's https certificate (alm's own CA).
    ca_file: LocalPath | None = None


@dataclass(frozen=True)
class GitSettings:
    branch: BranchName = "main"
    submodule_remotes: list[Name] = field(default_factory=lambda: ["origin", "alm"])
    root_remotes: list[Name] = field(default_factory=lambda: ["alm"])
    message: CommitMessage = "Update submodule {component} to {short_sha}"


@dataclass(frozen=True)
class SshSettings:
    config: LocalPath = "~/.ssh/config"
    connect_timeout: Seconds = 15.0
    accept_new_host_keys: bool = False
    # Set by the CI workflow from its secrets (GBDEPLOY_SSH_IDENTITY_FILE and
    # GBDEPLOY_SSH_KNOWN_HOSTS); unset, the ssh config's IdentityFile and ~/.ssh/known_hosts apply.
    identity_file: LocalPath | None = None
    known_hosts: LocalPath | None = None


@dataclass(frozen=True)
class ReleaseSettings:
    timeout: Seconds = 1800.0
    appear_timeout: Seconds = 120.0
    verify_timeout: Seconds = 120.0
    poll_interval: Seconds = 5.0


@dataclass(frozen=True)
class Target:
    """Where a component runs: an ssh Host alias, optionally a container behind it, reached with
    `via` (lxc or incus, behind sudo when `sudo`). `lxc: NAME` is the older spelling of
    `container: NAME` with `via: lxc`."""

    name: Name = field(metadata=NOT_A_KEY)
    ssh: SshHost
    lxc: ContainerName | None = None
    container: ContainerName | None = None
    via: Literal["lxc", "incus"] = "lxc"
    sudo: bool = False

    def __post_init__(self) -> None:
        key = f"targets.{self.name}"
        if self.lxc:
            if self.container not in (None, self.lxc) or self.via != "lxc":
                raise ConfigError(
                    f"{key}.lxc", "give either `lxc: NAME` or `container: NAME` with `via`"
                )
            object.__setattr__(self, "container", self.lxc)
        if self.sudo and not self.container:
            raise ConfigError(f"{key}.sudo", "applies to the container tool: set `container`")


@dataclass(frozen=True)
class Restart:
    mode: Literal["process", "systemd"]
    unit: str | None = None


UpstreamHost = Annotated[
    str,
    _matching(
        "a host name or IP address as Caddy dials it, without port, e.g. 10.16.164.33",
        r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|[0-9A-Fa-f:.]+",
        lambda v: ":" not in v or _is_ip_address(v),  # `host:port` is no IPv6 address
    ),
]


@dataclass(frozen=True)
class Switch:
    """`components.X.switch`: the zero-downtime strategy behind Caddy. The service alternates
    between the two `ports` (`PORT` in its environment, `{port}` in `start` and `health`); Caddy
    runs on the target `proxy` and dials it as `upstream_host:PORT` in `caddyfile`; the old
    process gets `drain` seconds for its in-flight requests before it is stopped; `caddy` is how
    the proxy target runs Caddy's command line."""

    ports: list[Port]
    proxy: Name
    upstream_host: UpstreamHost
    caddyfile: TargetPath = "/opt/gbo/conf/config"
    drain: Annotated[float, _between(0, 3600, "a number of seconds from 0 to 3600")] = 10.0
    caddy: OneLine = "caddy"  # the caddy command on the proxy target

    def idle_port(self, live: int) -> int:
        """The port the next switch starts the new binary on, while `live` serves."""
        return self.ports[1] if live == self.ports[0] else self.ports[0]


@dataclass(frozen=True)
class Component:
    """A service gbdeploy deploys. `submodule`, `workflow` and `artifact` left empty follow the
    component's name (see `_component`)."""

    name: Name = field(metadata=NOT_A_KEY)
    binary: TargetPath
    submodule: RelativePath = ""
    workflow: WorkflowFile = ""
    workflow_repo: WorkflowRepo = "root"
    target: Name = "system"
    artifact: ArtifactPath = ""
    build: str | None = None
    user: UserName = "gbuser"
    start: OneLine | None = None
    run_as: RunAs | None = "sudo -u {user}"
    log: TargetPath | None = None
    restart: Restart = field(default=Restart("process"), metadata=NOT_A_KEY)
    health: HealthUrl | None = None
    env: dict[EnvName, str] = field(default_factory=dict)
    # Repositories the build needs beside the component's (botlib for botserver): the root
    # repository's submodule path, =OWNER/REPO where a component workflow fetches it from.
    siblings: list[Sibling] = field(default_factory=list)
    stop_timeout: Seconds = 20.0
    health_timeout: Seconds = 60.0
    # how long a new process must stay alive and healthy before its release is kept
    health_settle: Annotated[float, _between(0, 3600, "a number of seconds from 0 to 3600")] = 3.0
    # binaries that passed health kept on the target for `rollback`; at least the running one
    keep_releases: Annotated[int, _between(1, 100, "a whole number from 1 to 100")] = 3
    switch: Switch | None = field(default=None, metadata=NOT_A_KEY)  # built in _component

    def on_port(self, port: int) -> Component:
        """This component as it runs on `port`: `{port}` replaced in `start` and `health`, and
        `PORT` in its environment."""
        return replace(
            self,
            start=with_port(self.start, port) if self.start else None,
            health=with_port(self.health, port) if self.health else None,
            env={**self.env, "PORT": str(port)},
        )

    @property
    def directory(self) -> str:
        return str(PurePosixPath(self.binary).parent)  # a path on the target: POSIX

    @property
    def start_command(self) -> str:
        return self.start or f"./{PurePosixPath(self.binary).name}"

    @property
    def log_path(self) -> str:
        return self.log or f"{self.binary}.log"


PROXY_PORTS = (80, 443, 25, 465, 587, 993, 995, 143, 110, 4190, 53)


@dataclass(frozen=True)
class DoctorSettings:
    """`doctor:` — where the production invariants are checked. Sizes are GiB. `host` is the ssh
    Host alias of the LXD host (`doctor` refuses to run without it); a container set to null
    skips that container's checks."""

    host: SshHost | None = None
    system: ContainerName | None = "pragmatismo-system"
    ci_runner: ContainerName | None = "pragmatismo-alm-ci"
    proxy: ContainerName | None = "pragmatismo-proxy"
    dns: ContainerName | None = "pragmatismo-dns"
    caddyfile: TargetPath = "/opt/gbo/conf/config"
    caddy: OneLine = "caddy"
    caddy_storage_root: TargetPath = "/opt/gbo/data/caddy"
    corefile: TargetPath = "/opt/gbo/conf/Corefile"
    # A full proxy config has about 25 sites; 1 or 2 means a truncated or partial file. 20 leaves
    # room for removing a few dead domains.
    min_vhosts: Count = 20
    valkey_cli: TargetPath = "/opt/gbo/bin/botserver-stack/bin/cache/bin/valkey-cli"
    iptables_rules_file: TargetPath = "/etc/iptables/rules.v4"
    botui_unit: UnitName = "ui.service"
    botserver_url: ForgeUrl = "http://localhost:5858"
    proxy_ports: list[Port] = field(default_factory=lambda: list(PROXY_PORTS))
    # The runner's caches, where the rendered workflows put them (WorkflowSettings).
    sccache_dir: TargetPath = "/opt/gbo/cache/sccache"
    sccache_max_gb: Gigabytes = 20.0
    cargo_home: TargetPath = "/opt/gbo/cache/cargo"
    cargo_max_gb: Gigabytes = 20.0
    snapshot_retention_days: Count = 7
    email: ContainerName | None = "pragmatismo-email"
    ufw_defaults: TargetPath = "/etc/default/ufw"
    lxd_bridge: Name = "lxdbr0"  # the bridge whose FORWARD rule a systemd service must restore
    fail2ban_dir: TargetPath = "/etc/fail2ban"
    flood_jail: Name = "caddy-http-flood"  # in the proxy: 4xx from Caddy's JSON access log
    flood_maxretry: Count = 100
    flood_findtime: Count = 60
    flood_bantime: Count = 3600
    caddy_access_log: TargetPath = "/opt/gbo/logs/access.log"
    mail_jails: list[Name] = field(
        default_factory=lambda: ["stalwart", "stalwart-mail", "postfix", "postfix-sasl", "dovecot"]
    )  # in the email container, one of these must run
    cron_etc: TargetPath = "/etc"  # where crontab, cron.d/ and cron.daily/ are
    vault_init: TargetPath = "/opt/gbo/bin/botserver-stack/conf/vault/init.json"
    via: Literal["lxc", "incus"] = "lxc"  # the container tool on doctor.host
    sudo: bool = False  # run that tool with sudo (an ssh user outside the lxd/incus group)


@dataclass(frozen=True)
class MaintenanceSettings:
    sccache_dir: LocalPath = "/opt/gbo/cache/sccache"  # as the rendered workflows build
    cargo_home: LocalPath = "/opt/gbo/cache/cargo"
    max_age_days: Count = 14
    max_size_gb: Gigabytes = 20.0


@dataclass(frozen=True)
class WorkflowSettings:
    """What `gbdeploy workflows` renders: the runner label jobs run on, the pinned source the job
    installs gbdeploy from (a VCS URL at an exact commit, or a file with its sha256; empty: the
    commit this gbdeploy runs from, at `source`), and the runner's persistent build caches and
    build-log directory (`{component}` is replaced by the component's name)."""

    runs_on: Name = "gbo"
    install: OneLine = ""
    source: OneLine = ""
    cargo_target_dir: TargetPath = "/opt/gbo/ci/{component}/target"
    sccache_dir: TargetPath = "/opt/gbo/cache/sccache"
    cargo_home: TargetPath = "/opt/gbo/cache/cargo"
    logs_dir: TargetPath = "/opt/gbo/logs"
    # Each component's sources, kept between jobs and updated to each run's commit: cargo then
    # rebuilds only what changed (a fresh checkout gives every file a new mtime).
    source_dir: TargetPath = "/opt/gbo/ci/{component}/src"
    # Put before the runner daemon's PATH in every build (it has no login profile).
    toolchain_path: ToolchainPath = "$HOME/.cargo/bin"
    # The secret holding a token that may read the private submodules ("": the job token).
    submodules_secret: SecretName = ""


@dataclass(frozen=True)
class HookSettings:
    """`hooks:` — local shell commands around each deploy, run with the deploy's facts in
    `GBDEPLOY_*` variables (see `hooks.FACT_VARIABLES`). A failing `pre_deploy` stops the deploy
    before anything changes (exit 2)."""

    pre_deploy: OneLine | None = None
    post_deploy: OneLine | None = None
    on_failure: OneLine | None = None


@dataclass(frozen=True)
class NotifySettings:
    """`notify:` — a JSON POST to `webhook` per deploy, rollback and release; a webhook that does
    not answer within `timeout` seconds is a warning, never a failure."""

    webhook: ForgeUrl | None = None
    timeout: Seconds = 5.0


# The targets and components General Bots has, as gbdeploy knows them without a config file.
# Only what differs from the dataclass defaults (and from the name-derived ones) is written.
BUILT_IN_TARGETS: dict[str, dict[str, Any]] = {
    "system": {"ssh": "pragmatismo-system"},
}
BUILT_IN_COMPONENTS: dict[str, dict[str, Any]] = {
    "botserver": {
        "binary": "/opt/gbo/bin/botserver",
        "artifact": "target/debug/botserver",
        "build": "cargo build -p botserver",
        "siblings": ["botlib"],  # its path dependency ../botlib
        "start": "./botserver --noconsole",
        "log": "/opt/gbo/logs/error.log",
        "health": "http://localhost:5858/health",
    },
    "botui": {
        "binary": "/opt/gbo/bin/botui",
        "build": "cargo build --release -p botui --features embed-ui",
        "restart": {"systemd": "ui.service"},
        "health": "http://localhost:5859/health",
    },
}


@dataclass(frozen=True)
class Settings:
    forge: ForgeSettings
    git: GitSettings
    ssh: SshSettings
    release: ReleaseSettings
    targets: dict[str, Target]
    components: dict[str, Component]
    doctor: DoctorSettings
    maintenance: MaintenanceSettings
    workflows: WorkflowSettings = field(default_factory=WorkflowSettings)
    hooks: HookSettings = field(default_factory=HookSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    project_dir: Path | None = field(default=None, metadata=NOT_A_KEY)
    disabled: tuple[str, ...] = field(default=(), metadata=NOT_A_KEY)  # `enabled: false`

    def component(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
            if name in self.disabled:
                raise UsageError(
                    f"{name} is disabled: components.{name}.enabled is false",
                    hint=f"`gbdeploy config components.{name}` shows which file says so",
                ) from None
            known = ", ".join(sorted(self.components)) or "none"
            raise UsageError(
                f"unknown component {name!r} (configured: {known})",
                hint="add it under `components:` in gbdeploy.yaml",
            ) from None

    def target_of(self, component: Component) -> Target:
        return self.targets[component.target]

    @classmethod
    def from_mapping(
        cls, data: typing.Mapping[str, Any], *, project_dir: Path | None = None
    ) -> Settings:
        if not isinstance(data, typing.Mapping):
            raise ConfigError("config", _top_level_problem(data))
        unknown = set(data) - set(DEFAULTS) - set(InvokeConfig.global_defaults())
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(key, f"unknown section (known: {', '.join(sorted(DEFAULTS))})")
        section = {name: _mapping(data.get(name), name) for name in DEFAULTS}
        if "token" in section["forge"]:
            raise ConfigError(
                "forge.token",
                "the token is never read from a file",
                hint=f"export {TOKEN_VARIABLES[0]} (or {TOKEN_VARIABLES[1]}) instead",
            )
        targets: dict[str, Target] = {}
        for given_name, raw in section["targets"].items():
            name = _check(given_name, Name, "targets")
            key = f"targets.{name}"
            targets[name] = _build(Target, {"name": name, **_mapping(raw, key)}, key)
        components: dict[str, Component] = {}
        disabled: list[str] = []
        for given_name, raw in section["components"].items():
            name = _check(given_name, Name, "components")
            key = f"components.{name}"
            fields_ = _mapping(raw, key)
            # `botui: {enabled: false}` drops a default component (Invoke cannot merge a null
            # over a mapping, so `botui: null` is refused when the files are loaded).
            enabled = _check(fields_.pop("enabled", True), bool, f"{key}.enabled")
            if enabled:
                components[name] = _component(name, fields_, targets)
            else:
                disabled.append(name)
        sections = {
            name: _build(kind, section[name], name) for name, kind in _section_types().items()
        }
        sections["forge"] = replace(sections["forge"], token=read_token())
        return cls(
            **sections,
            targets=targets,
            components=components,
            project_dir=project_dir,
            disabled=tuple(disabled),
        )


def _section_types() -> dict[str, type]:
    """Settings' fields that are a section of their own: name -> its dataclass."""
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in fields(Settings) if is_dataclass(hints[f.name])}


def read_token() -> Secret | None:
    """The forge token from the environment. One that could not be a token is kept with its
    problem, which is raised (its value never shown) by the command that would send it, so a
    command that never talks to the forge (`deploy`) is not stopped by it."""
    for variable in TOKEN_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if not value:
            continue
        if not TokenText.fullmatch(value):
            return Secret(
                value,
                ConfigError(
                    variable,
                    "holds a character no token has (a newline, a space, or another control "
                    "or non-ASCII character); its value is not shown",
                    hint=f'set it again from the token alone, e.g. export {variable}="$(cat FILE)"',
                ),
            )
        return Secret(value)
    return None


def token_values() -> tuple[str, ...]:
    """Whatever the token variables hold, unchecked: what must never be printed."""
    values = (os.environ.get(variable, "") for variable in TOKEN_VARIABLES)
    return tuple(value.strip() for value in values if value.strip())


def _component(name: str, raw: dict[str, Any], targets: dict[str, Target]) -> Component:
    key = f"components.{name}"
    # What follows from the name when not given.
    raw = {
        "submodule": name,
        "workflow": f"{name}.yaml",
        "artifact": f"target/release/{name}",
        **raw,
    }
    default_restart = BUILT_IN_COMPONENTS.get(name, {}).get("restart", "process")
    restart = raw.pop("restart", default_restart)
    if restart == "process":
        parsed_restart = Restart("process")
    elif isinstance(restart, typing.Mapping) and set(restart) == {"systemd"} and restart["systemd"]:
        unit = _check(restart["systemd"], UnitName, f"{key}.restart.systemd")
        parsed_restart = Restart("systemd", unit)
    else:
        raise ConfigError(
            f"{key}.restart", f"expected `process` or `{{systemd: UNIT}}`, got {_shown(restart)}"
        )
    raw_switch = raw.pop("switch", None)
    component = _build(Component, {"name": name, **raw}, key, restart=parsed_restart)
    if component.target not in targets:
        known = ", ".join(sorted(targets)) or "none"
        raise ConfigError(
            f"{key}.target", f"no target named {component.target!r} (targets: {known})"
        )
    if raw_switch is None:
        for field_name in ("start", "health"):
            if "{port}" in (getattr(component, field_name) or ""):
                raise ConfigError(
                    f"{key}.{field_name}",
                    "{port} is the port a switch deploy chose, and this component has none",
                    hint=f"set {key}.switch (ports, proxy, upstream_host), or write the port",
                )
        return component
    switch = _switch(_mapping(raw_switch, f"{key}.switch"), f"{key}.switch", targets)
    _check_switch_component(component, key)
    return replace(component, switch=switch)


def _switch(raw: dict[str, Any], key: str, targets: dict[str, Target]) -> Switch:
    switch = _build(Switch, raw, key)
    if len(switch.ports) != 2 or switch.ports[0] == switch.ports[1]:
        raise ConfigError(
            f"{key}.ports",
            f"expected two different ports, got {_shown(switch.ports)}",
            hint="e.g. ports: [5858, 5868]: the service alternates between them",
        )
    if switch.proxy not in targets:
        known = ", ".join(sorted(targets)) or "none"
        raise ConfigError(
            f"{key}.proxy",
            f"no target named {switch.proxy!r} (targets: {known})",
            hint="add the target where Caddy runs under `targets:`",
        )
    return switch


def _check_switch_component(component: Component, key: str) -> None:
    """What a switch needs of the component itself: a port-bearing health URL, no fixed PORT."""
    if component.restart.mode != "process":
        raise ConfigError(
            f"{key}.switch",
            "runs two processes of the binary side by side, which one systemd unit cannot",
            hint=f"use `restart: process` for {component.name}, or remove switch",
        )
    if not component.health or "{port}" not in component.health:
        raise ConfigError(
            f"{key}.health",
            "a switch component's health URL must name its port as {port}",
            hint="e.g. health: http://localhost:{port}/health",
        )
    if "PORT" in component.env:
        raise ConfigError(
            f"{key}.env.PORT",
            "a switch sets PORT to the port it starts the new binary on",
            hint=f"remove {key}.env.PORT; {key}.switch.ports lists the ports",
        )


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, typing.Mapping):
        raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
    return dict(value)


def _top_level_problem(data: Any) -> str:
    return (
        f"the top level must be a mapping of sections (forge:, git:, components:, …), "
        f"not {'a list' if isinstance(data, list) else type(data).__name__}"
    )


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


_T = typing.TypeVar("_T")


def _build(cls: type[_T], raw: dict[str, Any], key: str, **given: Any) -> _T:
    """Build dataclass `cls` from `raw`, checking every key and every value's type and rule."""
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in fields(cls) if f.metadata.get("key", True)}  # type: ignore[arg-type]
    for unknown in sorted(set(raw) - names - set(given) - {"name"}):
        raise ConfigError(f"{key}.{unknown}", f"unknown key (known: {', '.join(sorted(names))})")
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            values[f.name] = given[f.name]
        elif f.name == "name" and "name" in raw:
            values[f.name] = raw[f.name]
        elif f.name in raw:
            values[f.name] = _check(raw[f.name], hints[f.name], f"{key}.{f.name}")
    try:
        return cls(**values)
    except TypeError:
        missing = [f.name for f in fields(cls) if f.name not in values]  # type: ignore[arg-type]
        raise ConfigError(f"{key}.{missing[0]}", "is required") from None


def _check(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        checked = _check(value, args[0], key)
        for rule in args[1:]:
            if not rule.accepts(checked):
                raise ConfigError(key, f"expected {rule.expected}, got {_shown(value)}")
        return checked
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise ConfigError(key, f"expected one of {choices}, got {_shown(value)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check(value, inner[0], key)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {_shown(value)}")
        return [_check(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, typing.Mapping):
            raise ConfigError(key, f"expected a mapping, got {_shown(value)}")
        return {
            _check(k, args[0], f"{key}.{k}"): _check(v, args[1], f"{key}.{k}")
            for k, v in value.items()
        }
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > 1e15:
            raise ConfigError(key, f"expected a finite number of usual size, got {_shown(value)}")
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {_shown(value)}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(key, f"expected a whole number, got {_shown(value)}")
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # YAML reads `branch: 2024` as a number
    if hint in (str, float) and not isinstance(value, hint):
        what = "text" if hint is str else "number"
        raise ConfigError(key, f"expected {what}, got {_shown(value)}")
    return value


# Invoke's lowest layer: every key of every section with its default, the built-in targets and
# components filled in the same way, so that a GBDEPLOY_* variable can set any of them.


def _defaults_of(cls: type) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in fields(cls):
        if not f.metadata.get("key", True):
            continue
        if f.default is not MISSING:
            values[f.name] = f.default
        elif f.default_factory is not MISSING:
            values[f.name] = f.default_factory()
    return values


def _component_defaults(name: str, given: dict[str, Any]) -> dict[str, Any]:
    # `restart` is not a layer key: Invoke cannot merge `{systemd: UNIT}` over `process` or back,
    # so a component's built-in restart is applied when the typed settings are built.
    derived = {"submodule": name, "workflow": f"{name}.yaml", "artifact": f"target/release/{name}"}
    merged = {**_defaults_of(Component), **derived, **given}
    merged.pop("restart", None)
    return merged


DEFAULTS: dict[str, Any] = {
    **{name: _defaults_of(cls) for name, cls in _section_types().items()},
    "targets": {name: {**_defaults_of(Target), **t} for name, t in BUILT_IN_TARGETS.items()},
    "components": {name: _component_defaults(name, c) for name, c in BUILT_IN_COMPONENTS.items()},
}


def find_project_dir(start: Path | None = None) -> Path | None:
    """The nearest directory, from `start` upward, holding a gbdeploy config file."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if any((directory / name).is_file() for name in CONFIG_NAMES):
            return directory
    return None


class GbdeployConfig(InvokeConfig):
    """Invoke's Config with gbdeploy's prefix, defaults and project-file discovery."""

    prefix = "gbdeploy"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("project_location") is None:
            found = find_project_dir()
            kwargs["project_location"] = str(found) if found else None
        super().__init__(*args, **kwargs)

    @staticmethod
    def global_defaults() -> dict[str, Any]:
        base = InvokeConfig.global_defaults()
        base.update(_deep_copy(DEFAULTS))
        return base

    def _load_yaml(self, path: str) -> Any:
        return _top_level(path, lambda: super(GbdeployConfig, self)._load_yaml(path))

    def _load_json(self, path: str) -> Any:
        return _top_level(path, lambda: super(GbdeployConfig, self)._load_json(path))

    def load_shell_env(self) -> None:
        """The `GBDEPLOY_*` layer, read here rather than by Invoke, which ignores a variable
        that matches no key (a typo would silently do nothing) and casts `false` to True."""
        self.merge()
        self._set(_env=environment_layer(self._config, os.environ))
        self.merge()

    def _load_py(self, path: str) -> Any:
        # Invoke would execute a gbdeploy.py beside the project file; a config is data.
        if Path(path).exists():
            raise ConfigError(path, "gbdeploy reads YAML or JSON config files, not Python")
        raise FileNotFoundError(errno.ENOENT, "no such file", path)


# gbdeploy's own variables that are not config keys: the debug switch, what a rendered
# workflow's job sets for its steps (the deploy step runs gbdeploy with them in its environment;
# a test checks every name a rendered workflow uses), and the facts a hook is given (a hook may
# run gbdeploy itself).
OWN_VARIABLES = frozenset(
    {
        "GBDEPLOY_DEBUG",
        *TOKEN_VARIABLES,
        # workflow steps
        "GBDEPLOY_ARTIFACT",
        "GBDEPLOY_BIN",
        "GBDEPLOY_BRANCH",
        "GBDEPLOY_BUILD_DIR",
        "GBDEPLOY_BUILT",
        "GBDEPLOY_COMPONENT",
        "GBDEPLOY_FETCH",
        "GBDEPLOY_GIT_TOKEN",
        "GBDEPLOY_INSTALL",
        "GBDEPLOY_INSTALL_SHA256",
        "GBDEPLOY_INSTALL_URL",
        "GBDEPLOY_LOCK",
        "GBDEPLOY_LOGS_DIR",
        "GBDEPLOY_SIBLINGS",
        "GBDEPLOY_SOURCE_DIR",
        "GBDEPLOY_SUBMODULE",
        "GBDEPLOY_TOOLCHAIN_PATH",
        "GBDEPLOY_WORKSPACE_TOML",
        # hooks
        "GBDEPLOY_ACTION",
        "GBDEPLOY_TARGET",
        "GBDEPLOY_FROM_COMMIT",
        "GBDEPLOY_TO_COMMIT",
        "GBDEPLOY_SHA256",
        "GBDEPLOY_STRATEGY",
        "GBDEPLOY_RESULT",
        "GBDEPLOY_WHO",
        "GBDEPLOY_RUN_URL",
    }
)
ENV_PREFIX = "GBDEPLOY_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _variables(data: typing.Mapping[str, Any], path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Each key's variable name (`GBDEPLOY_FORGE_URL`) -> (its dotted key, its current value)."""
    found: dict[str, Any] = {}
    for key, value in data.items():
        here = (*path, str(key))
        if isinstance(value, typing.Mapping):
            found.update(_variables(value, here))
        else:
            found[ENV_PREFIX + "_".join(here).upper()] = (here, value)
    return found


def environment_layer(merged: typing.Mapping[str, Any], environ: typing.Mapping[str, str]) -> dict:
    """The values the `GBDEPLOY_*` variables set, each cast to its key's type. A variable that
    matches no key is an error like a wrong key in a file; so is a value of the wrong type."""
    known = _variables(merged)
    layer: dict[str, Any] = {}
    for name in sorted(n for n in environ if n.startswith(ENV_PREFIX) and n not in OWN_VARIABLES):
        if name not in known:
            near = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
            raise ConfigError(
                name,
                "matches no configuration key" + (f": did you mean {near[0]}?" if near else ""),
                hint="a variable names a key by its path in capitals: forge.url is "
                "GBDEPLOY_FORGE_URL; `gbdeploy config` lists the keys",
            )
        path, current = known[name]
        key = ".".join(path)
        value = _cast_variable(name, key, current, environ[name])
        target = layer
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return layer


def _cast_variable(name: str, key: str, current: Any, text: str) -> Any:
    def wrong(expected: str) -> ConfigError:
        return ConfigError(name, f"expected {expected} ({key}), got {_shown(text)}")

    if isinstance(current, bool):
        if text.strip().lower() not in (*_TRUE, *_FALSE):
            raise wrong("true or false")
        return text.strip().lower() in _TRUE
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise wrong("a whole number") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise wrong("a number") from None
    if isinstance(current, list | tuple):
        raise ConfigError(
            name,
            f"{key} is a list, which a variable cannot set",
            hint="put it in a file: gbdeploy.yaml, ~/.gbdeploy.yaml or -f FILE",
        )
    return text


def _top_level(path: str, load: Callable[[], Any]) -> dict[str, Any]:
    """A config file's contents, which must be a mapping (an empty file is an empty one)."""
    try:
        data = load()
    except OSError as error:
        if error.errno == errno.ENOENT:
            raise  # Invoke skips a file that is not there
        raise ConfigError(path, f"cannot be read: {error.strerror or error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, _top_level_problem(data))
    return _string_keys(data)


def _string_keys(value: Any) -> Any:
    """YAML reads `2024:` as a number; every key is a name, and Invoke needs them as text."""
    if isinstance(value, dict):
        return {str(key): _string_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_string_keys(item) for item in value]
    return value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


def load_config(runtime_path: str | None = None, *, start: Path | None = None) -> GbdeployConfig:
    """Every layer loaded, for callers that do not run under gbdeploy's own Program."""
    found = find_project_dir(start)
    config: GbdeployConfig | None = None
    try:
        config = GbdeployConfig(
            project_location=str(found) if found else None, runtime_path=runtime_path
        )
        check_runtime_path(runtime_path)
        config.load_project()
        config.load_runtime()
        config.load_shell_env()
    except CONFIG_LOAD_ERRORS as error:
        raise config_load_error(error, config) from None
    return config


# What Invoke and the parsers raise for a broken file or variable, instead of a traceback.
CONFIG_LOAD_ERRORS = (
    yaml.YAMLError,
    invoke_yaml.YAMLError,
    json.JSONDecodeError,
    AmbiguousMergeError,
    AmbiguousEnvVar,
    UncastableEnvVar,
    UnknownFileType,
)


def check_runtime_path(path: str | None) -> None:
    """Invoke skips a `-f FILE` that does not exist; a typo there must not go unnoticed."""
    if path is not None and not Path(path).is_file():
        raise ConfigError("-f", f"no such file: {path}")


def config_load_error(error: Exception, config: InvokeConfig | None) -> ConfigError:
    """One of CONFIG_LOAD_ERRORS as a ConfigError naming the file or the key."""
    if isinstance(error, yaml.YAMLError | invoke_yaml.YAMLError):
        mark = getattr(error, "problem_mark", None)
        where = f"{mark.name}:{mark.line + 1}" if mark else "a config file"
        return ConfigError(where, f"not valid YAML: {getattr(error, 'problem', None) or error}")
    if isinstance(error, json.JSONDecodeError):
        return ConfigError("a config file", f"not valid JSON: {error}")
    if isinstance(error, AmbiguousMergeError) and config is not None:
        for layer in ("_system", "_user", "_project", "_env", "_runtime"):
            key = _shape_mismatch(DEFAULTS, getattr(config, layer, None) or {})
            if key:
                drop = key.startswith("components.") and key.count(".") == 1
                return ConfigError(
                    key,
                    "expected a mapping here (see the defaults)",
                    hint=f"to drop a default component write `{key.split('.')[1]}: "
                    "{enabled: false}`"
                    if drop
                    else None,
                )
    if isinstance(error, UncastableEnvVar | AmbiguousEnvVar):
        names = sorted(
            n for n in os.environ if n.startswith("GBDEPLOY_") and n not in TOKEN_VARIABLES
        )
        return ConfigError(
            " ".join(names) or "environment",
            f"{error}",
            hint="a GBDEPLOY_* variable sets text, numbers or true/false; put lists in a file",
        )
    return ConfigError("config", f"{type(error).__name__}: {error}")


def _shape_mismatch(base: typing.Mapping[str, Any], layer: typing.Mapping[str, Any]) -> str | None:
    """The dotted key where `layer` puts a mapping over a non-mapping or the other way round."""
    for key, value in layer.items():
        if key not in base:
            continue
        if isinstance(base[key], dict) != isinstance(value, typing.Mapping):
            return str(key)
        if isinstance(value, typing.Mapping):
            inner = _shape_mismatch(base[key], value)
            if inner:
                return f"{key}.{inner}"
    return None


def load_settings(config: InvokeConfig | None = None, *, start: Path | None = None) -> Settings:
    """Typed settings from an Invoke config; from a fresh `load_config()` when it is not ours."""
    if not isinstance(config, GbdeployConfig):
        config = load_config(start=start)
    project = config._project_path  # type: ignore[attr-defined]
    project_dir = Path(project).parent if project else None
    try:
        return Settings.from_mapping(_plain(config), project_dir=project_dir)
    except ConfigError as error:
        if error.key in TOKEN_VARIABLES:
            raise
        where = origin_of(config, error.key)
        raise ConfigError(
            error.key,
            error.message.split(": ", 2)[-1] + (f" (in {where})" if where else ""),
            hint=error.hint,
        ) from None


# The layers a value can come from, highest first, and each one's file.
_LAYERS = ("runtime", "env", "project", "user", "system")


def origin_of(config: InvokeConfig, key: str) -> str | None:
    """The file (or `GBDEPLOY_*` variable) that gave `key` (`components.x.binary`, or
    `git.submodule_remotes[0]`): the highest layer holding it, or its nearest enclosing key."""
    path = re.sub(r"\[\d+\]", "", key).split(".")
    for length in range(len(path), 0, -1):
        for layer in _LAYERS:
            data: Any = getattr(config, f"_{layer}", None) or {}
            for part in path[:length]:
                data = data.get(part) if isinstance(data, typing.Mapping) else None
            if data is None:
                continue
            if layer == "env":
                return ENV_PREFIX + "_".join(path[:length]).upper()
            file = getattr(config, f"_{layer}_path", None)
            if file and os.path.isfile(file):
                return str(file)
    return None


def _plain(value: Any) -> Any:
    """Invoke's DataProxy trees as plain dicts and lists."""
    if isinstance(value, DataProxy | typing.Mapping):
        return {key: _plain(value[key]) for key in value}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
