"""The configuration's typed settings: one frozen dataclass per section, each key written once.

Each key is a field of its section's dataclass, whose type carries the rule its value must follow
(`config_values`) and whose default is the default (`keep_releases: … = 3` in `Component`).
`DEFAULTS`, Invoke's lowest layer, is derived from those fields; the targets and components that
exist without any config file are `BUILT_IN_TARGETS` and `BUILT_IN_COMPONENTS`, holding only
what differs from the field defaults. A new section is a dataclass plus one field of `Settings`.
The files and variables that set them are read by `config_layers`. The forge token comes only
from `GBDEPLOY_FORGE_TOKEN` or `FORGEJO_TOKEN`, and lives in a `Secret` that never prints itself.
"""

from __future__ import annotations

import os
import re
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from invoke import Config as InvokeConfig

from .config_values import (
    ArtifactPath,
    BranchName,
    CommitMessage,
    ContainerName,
    Count,
    EnvName,
    ForgeUrl,
    Gigabytes,
    HealthUrl,
    LocalPath,
    Name,
    OneLine,
    Port,
    RelativePath,
    RunAs,
    Seconds,
    SecretName,
    Sibling,
    SiteUrl,
    SshHost,
    TargetPath,
    ToolchainPath,
    UnitName,
    UpstreamHost,
    UserName,
    WorkflowFile,
    WorkflowRepo,
    between,
    build_dataclass,
    check_value,
    mapping_of,
    shown,
    with_port,
)
from .errors import ConfigError, UsageError

CONFIG_NAMES = ("gbdeploy.yaml", "gbdeploy.yml", "gbdeploy.json")
TOKEN_VARIABLES = ("GBDEPLOY_FORGE_TOKEN", "FORGEJO_TOKEN")


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


@dataclass(frozen=True)
class Switch:
    """`components.X.switch`: the zero-downtime strategy behind Caddy. The service alternates
    between the two `ports` (`PORT` in its environment, `{port}` in `start` and `health`); Caddy
    runs on the target `proxy` and dials it as `upstream_host:PORT` in `caddyfile`; the old
    process gets `drain` seconds for its in-flight requests before it is stopped; `caddy` is how
    the proxy target runs Caddy's command line. `site` (optional) is the address users reach the
    component by through Caddy: the switch then confirms the new commit answers there, asking
    Caddy's own listener from the proxy target, its certificate verified (against `site_ca`, a
    CA file on the proxy target, when the site's certificate is Caddy's internal one)."""

    ports: list[Port]
    proxy: Name
    upstream_host: UpstreamHost
    caddyfile: TargetPath = "/opt/gbo/conf/config"
    drain: Annotated[float, between(0, 3600, "a number of seconds from 0 to 3600")] = 10.0
    caddy: OneLine = "caddy"  # the caddy command on the proxy target
    site: SiteUrl | None = None
    site_ca: TargetPath | None = None

    def site_url(self, health: str) -> str:
        """The component's health (its URL's path and query) as users reach it through Caddy."""
        assert self.site is not None
        parts = urlsplit(health)
        path = self.site.rstrip("/") + (parts.path or "/")
        return path + (f"?{parts.query}" if parts.query else "")

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
    health_settle: Annotated[float, between(0, 3600, "a number of seconds from 0 to 3600")] = 3.0
    # binaries that passed health kept on the target for `rollback`; at least the running one
    keep_releases: Annotated[int, between(1, 100, "a whole number from 1 to 100")] = 3
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
    # The largest the runner's caches may grow (where they are: workflows.sccache_dir, cargo_home).
    sccache_max_gb: Gigabytes = 20.0
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
    """How `gbdeploy maintain` trims the runner's caches (workflows.sccache_dir, cargo_home)."""

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

    def __post_init__(self) -> None:
        for key in RUNNER_CACHES:  # one of each: `maintain` trims it and `doctor` measures it
            if "{component}" in getattr(self, key):
                raise ConfigError(
                    f"workflows.{key}", "is one cache for every component: no {component} in it"
                )


RUNNER_CACHES = ("sccache_dir", "cargo_home")  # the fields of WorkflowSettings that name them


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
            raise ConfigError("config", top_level_problem(data))
        unknown = set(data) - set(DEFAULTS) - set(InvokeConfig.global_defaults())
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(key, f"unknown section (known: {', '.join(sorted(DEFAULTS))})")
        section = {name: mapping_of(data.get(name), name) for name in DEFAULTS}
        for old, key in ((s, k) for s in ("doctor", "maintenance") for k in RUNNER_CACHES):
            if key in section[old]:
                raise ConfigError(f"{old}.{key}", f"moved to workflows.{key}, where builds put it")
        if "token" in section["forge"]:
            raise ConfigError(
                "forge.token",
                "the token is never read from a file",
                hint=f"export {TOKEN_VARIABLES[0]} (or {TOKEN_VARIABLES[1]}) instead",
            )
        targets: dict[str, Target] = {}
        for given_name, raw in section["targets"].items():
            name = check_value(given_name, Name, "targets")
            key = f"targets.{name}"
            targets[name] = build_dataclass(Target, {"name": name, **mapping_of(raw, key)}, key)
        components: dict[str, Component] = {}
        disabled: list[str] = []
        for given_name, raw in section["components"].items():
            name = check_value(given_name, Name, "components")
            key = f"components.{name}"
            fields_ = mapping_of(raw, key)
            # `botui: {enabled: false}` drops a default component (Invoke cannot merge a null
            # over a mapping, so `botui: null` is refused when the files are loaded).
            enabled = check_value(fields_.pop("enabled", True), bool, f"{key}.enabled")
            if enabled:
                components[name] = _component(name, fields_, targets)
            else:
                disabled.append(name)
        sections = {
            name: build_dataclass(kind, section[name], name)
            for name, kind in _section_types().items()
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
        unit = check_value(restart["systemd"], UnitName, f"{key}.restart.systemd")
        parsed_restart = Restart("systemd", unit)
    else:
        raise ConfigError(
            f"{key}.restart", f"expected `process` or `{{systemd: UNIT}}`, got {shown(restart)}"
        )
    raw_switch = raw.pop("switch", None)
    component = build_dataclass(Component, {"name": name, **raw}, key, restart=parsed_restart)
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
    switch = _switch(mapping_of(raw_switch, f"{key}.switch"), f"{key}.switch", targets)
    _check_switch_component(component, key)
    return replace(component, switch=switch)


def _switch(raw: dict[str, Any], key: str, targets: dict[str, Target]) -> Switch:
    switch = build_dataclass(Switch, raw, key)
    if len(switch.ports) != 2 or switch.ports[0] == switch.ports[1]:
        raise ConfigError(
            f"{key}.ports",
            f"expected two different ports, got {shown(switch.ports)}",
            hint="e.g. ports: [5858, 5868]: the service alternates between them",
        )
    if switch.proxy not in targets:
        known = ", ".join(sorted(targets)) or "none"
        raise ConfigError(
            f"{key}.proxy",
            f"no target named {switch.proxy!r} (targets: {known})",
            hint="add the target where Caddy runs under `targets:`",
        )
    if switch.site_ca and not switch.site:
        raise ConfigError(
            f"{key}.site_ca",
            "is the CA that signs the certificate of `site`, and no site is set",
            hint=f"set {key}.site (e.g. https://bots.example.com), or remove site_ca",
        )
    if switch.site_ca and not switch.site.startswith("https://"):
        raise ConfigError(
            f"{key}.site_ca", f"applies to an https:// site, and site is {switch.site}"
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


def top_level_problem(data: Any) -> str:
    return (
        f"the top level must be a mapping of sections (forge:, git:, components:, …), "
        f"not {'a list' if isinstance(data, list) else type(data).__name__}"
    )


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
