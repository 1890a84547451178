"""Configuration: Invoke's layered config (prefix `gbdeploy`), validated into typed settings.

Layers, lowest first: the defaults below, `/etc/gbdeploy.yaml`, `~/.gbdeploy.yaml`, the project's
`gbdeploy.yaml` (found from the current directory upward, like Invoke finds `tasks.py`),
`GBDEPLOY_*` environment variables, and a runtime file given with `-f`. The forge token comes only
from `GBDEPLOY_FORGE_TOKEN` or `FORGEJO_TOKEN`, and lives in a `Secret` that never prints itself.
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from invoke import Config as InvokeConfig
from invoke.config import DataProxy

from .errors import ConfigError, UsageError

CONFIG_NAMES = ("gbdeploy.yaml", "gbdeploy.yml", "gbdeploy.json")
TOKEN_VARIABLES = ("GBDEPLOY_FORGE_TOKEN", "FORGEJO_TOKEN")

DEFAULTS: dict[str, Any] = {
    "forge": {
        "url": "http://alm.pragmatismo.com.br",
        "owner": "GeneralBots",
        "repo": "gb",
        "timeout": 30.0,
    },
    "git": {
        "branch": "main",
        "submodule_remotes": ["origin", "alm"],
        "root_remotes": ["alm"],
        "message": "Update submodule {component} to {short_sha}",
    },
    "ssh": {
        "config": "~/.ssh/config",
        "connect_timeout": 15.0,
        "accept_new_host_keys": False,
        "identity_file": None,
        "known_hosts": None,
    },
    "release": {
        "timeout": 1800.0,
        "appear_timeout": 120.0,
        "verify_timeout": 120.0,
        "poll_interval": 5.0,
    },
    "targets": {
        "system": {"ssh": "pragmatismo-system"},
    },
    "components": {
        "botserver": {
            "submodule": "botserver",
            "workflow": "botserver.yaml",
            "target": "system",
            "binary": "/opt/gbo/bin/botserver",
            "artifact": "target/debug/botserver",
            "build": "cargo build -p botserver",
            "user": "gbuser",
            "start": "./botserver --noconsole",
            "run_as": "sudo -u {user}",
            "log": "/opt/gbo/logs/error.log",
            "restart": "process",
            "health": "http://localhost:5858/health",
        },
        "botui": {
            "submodule": "botui",
            "workflow": "botui.yaml",
            "target": "system",
            "binary": "/opt/gbo/bin/botui",
            "artifact": "target/release/botui",
            "build": "cargo build --release -p botui --features embed-ui",
            "user": "gbuser",
            "restart": {"systemd": "ui.service"},
            "health": "http://localhost:5859/health",
        },
    },
    "doctor": {
        "host": None,
        "system": "pragmatismo-system",
        "ci_runner": "pragmatismo-alm-ci",
        "proxy": "pragmatismo-proxy",
        "dns": "pragmatismo-dns",
        "storage_pool": "default",
        "caddyfile": "/opt/gbo/conf/config",
        "corefile": "/opt/gbo/conf/Corefile",
        "min_vhosts": 20,
        "valkey_cli": "/opt/gbo/bin/botserver-stack/bin/cache/bin/valkey-cli",
        "botui_unit": "ui.service",
        "botserver_url": "http://localhost:5858",
        "proxy_ports": [80, 443, 25, 465, 587, 993, 995, 143, 110, 4190, 53],
        "sccache_dir": "/root/.cache/sccache",
        "sccache_max_gb": 20.0,
        "cargo_home": "/root/.cargo",
        "cargo_max_gb": 20.0,
        "snapshot_retention_days": 7,
    },
    "maintenance": {
        "sccache_dir": "~/.cache/sccache",
        "cargo_home": "~/.cargo",
        "max_age_days": 14,
        "max_size_gb": 20.0,
    },
    "workflows": {
        "runs_on": "ubuntu-latest",
        "install": "gbdeploy",
    },
}


class Secret:
    """A value that never shows itself in str(), repr() or f-strings; `.reveal()` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class ForgeSettings:
    url: str
    owner: str
    repo: str
    timeout: float = 30.0
    token: Secret | None = field(default=None, compare=False)


@dataclass(frozen=True)
class GitSettings:
    branch: str
    submodule_remotes: list[str]
    root_remotes: list[str]
    message: str


@dataclass(frozen=True)
class SshSettings:
    config: str = "~/.ssh/config"
    connect_timeout: float = 15.0
    accept_new_host_keys: bool = False
    # Set by the CI workflow from its secrets (GBDEPLOY_SSH_IDENTITY_FILE and
    # GBDEPLOY_SSH_KNOWN_HOSTS); unset, the ssh config's IdentityFile and ~/.ssh/known_hosts apply.
    identity_file: str | None = None
    known_hosts: str | None = None


@dataclass(frozen=True)
class ReleaseSettings:
    timeout: float = 1800.0
    appear_timeout: float = 120.0
    verify_timeout: float = 120.0
    poll_interval: float = 5.0


@dataclass(frozen=True)
class Target:
    """Where a component runs: an ssh Host alias, optionally an LXD container behind it."""

    name: str
    ssh: str
    lxc: str | None = None


@dataclass(frozen=True)
class Restart:
    mode: Literal["process", "systemd"]
    unit: str | None = None


@dataclass(frozen=True)
class Component:
    name: str
    binary: str
    submodule: str = ""
    workflow: str = ""
    target: str = "system"
    artifact: str = ""
    build: str | None = None
    user: str = "gbuser"
    start: str | None = None
    run_as: str | None = "sudo -u {user}"
    log: str | None = None
    restart: Restart = Restart("process")
    health: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    stop_timeout: float = 20.0
    health_timeout: float = 60.0

    @property
    def directory(self) -> str:
        return os.path.dirname(self.binary)

    @property
    def start_command(self) -> str:
        return self.start or f"./{os.path.basename(self.binary)}"

    @property
    def log_path(self) -> str:
        return self.log or f"{self.binary}.log"


@dataclass(frozen=True)
class DoctorSettings:
    host: str | None = None
    system: str = "pragmatismo-system"
    ci_runner: str = "pragmatismo-alm-ci"
    proxy: str = "pragmatismo-proxy"
    dns: str = "pragmatismo-dns"
    storage_pool: str = "default"
    caddyfile: str = "/opt/gbo/conf/config"
    corefile: str = "/opt/gbo/conf/Corefile"
    min_vhosts: int = 20
    valkey_cli: str = "/opt/gbo/bin/botserver-stack/bin/cache/bin/valkey-cli"
    botui_unit: str = "ui.service"
    botserver_url: str = "http://localhost:5858"
    proxy_ports: list[int] = field(default_factory=list)
    sccache_dir: str = "/root/.cache/sccache"
    sccache_max_gb: float = 20.0
    cargo_home: str = "/root/.cargo"
    cargo_max_gb: float = 20.0
    snapshot_retention_days: int = 7


@dataclass(frozen=True)
class MaintenanceSettings:
    sccache_dir: str = "~/.cache/sccache"
    cargo_home: str = "~/.cargo"
    max_age_days: int = 14
    max_size_gb: float = 20.0


@dataclass(frozen=True)
class WorkflowSettings:
    """What `gbdeploy workflows` renders: the runner label jobs run on, and the pip requirement
    (name, path or VCS URL) the deploy job installs gbdeploy from when the runner lacks it."""

    runs_on: str = "ubuntu-latest"
    install: str = "gbdeploy"


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
    project_dir: Path | None = None

    def component(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
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
        unknown = set(data) - set(DEFAULTS) - set(InvokeConfig.global_defaults())
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(key, f"unknown section (known: {', '.join(sorted(DEFAULTS))})")
        section = {name: dict(data.get(name) or {}) for name in DEFAULTS}
        if "token" in section["forge"]:
            raise ConfigError(
                "forge.token",
                "the token is never read from a file",
                hint=f"export {TOKEN_VARIABLES[0]} (or {TOKEN_VARIABLES[1]}) instead",
            )
        targets = {
            name: _build(
                Target, {"name": name, **_mapping(raw, f"targets.{name}")}, f"targets.{name}"
            )
            for name, raw in _mapping(section["targets"], "targets").items()
        }
        components: dict[str, Component] = {}
        for name, raw in _mapping(section["components"], "components").items():
            if raw is None:  # `botui: null` removes a default component
                continue
            components[name] = _component(name, _mapping(raw, f"components.{name}"), targets)
        return cls(
            forge=_build(ForgeSettings, section["forge"], "forge", token=read_token()),
            git=_build(GitSettings, section["git"], "git"),
            ssh=_build(SshSettings, section["ssh"], "ssh"),
            release=_build(ReleaseSettings, section["release"], "release"),
            targets=targets,
            components=components,
            doctor=_build(DoctorSettings, section["doctor"], "doctor"),
            maintenance=_build(MaintenanceSettings, section["maintenance"], "maintenance"),
            workflows=_build(WorkflowSettings, section["workflows"], "workflows"),
            project_dir=project_dir,
        )


def read_token() -> Secret | None:
    for variable in TOKEN_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value:
            return Secret(value)
    return None


def _component(name: str, raw: dict[str, Any], targets: dict[str, Target]) -> Component:
    key = f"components.{name}"
    raw = {
        "submodule": name,
        "workflow": f"{name}.yaml",
        "artifact": f"target/release/{name}",
        **raw,
    }
    restart = raw.pop("restart", "process")
    if restart == "process":
        parsed_restart = Restart("process")
    elif isinstance(restart, typing.Mapping) and set(restart) == {"systemd"} and restart["systemd"]:
        parsed_restart = Restart("systemd", str(restart["systemd"]))
    else:
        raise ConfigError(
            f"{key}.restart", f"expected `process` or `{{systemd: UNIT}}`, got {restart!r}"
        )
    component = _build(Component, {"name": name, **raw}, key, restart=parsed_restart)
    if component.target not in targets:
        known = ", ".join(sorted(targets)) or "none"
        raise ConfigError(
            f"{key}.target", f"no target named {component.target!r} (targets: {known})"
        )
    if not component.binary.startswith("/"):
        raise ConfigError(f"{key}.binary", f"must be an absolute path, got {component.binary!r}")
    return component


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, typing.Mapping):
        raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
    return dict(value)


_T = typing.TypeVar("_T")


def _build(cls: type[_T], raw: dict[str, Any], key: str, **given: Any) -> _T:
    """Build dataclass `cls` from `raw`, checking every key and every value's type."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for unknown in sorted(set(raw) - names):
        raise ConfigError(f"{key}.{unknown}", f"unknown key (known: {', '.join(sorted(names))})")
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            values[f.name] = given[f.name]
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
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check(value, inner[0], key)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return [_check(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, typing.Mapping):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return {str(k): _check(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(key, f"expected a whole number, got {value!r}")
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # YAML reads `branch: 2024` as a number
    if hint in (str, float) and not isinstance(value, hint):
        raise ConfigError(key, f"expected a {'text' if hint is str else 'number'}, got {value!r}")
    return value


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


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


def load_config(runtime_path: str | None = None, *, start: Path | None = None) -> GbdeployConfig:
    """Every layer loaded, for callers that do not run under gbdeploy's own Program."""
    found = find_project_dir(start)
    config = GbdeployConfig(
        project_location=str(found) if found else None, runtime_path=runtime_path
    )
    config.load_project()
    config.load_shell_env()
    config.load_runtime()
    return config


def load_settings(config: InvokeConfig | None = None, *, start: Path | None = None) -> Settings:
    """Typed settings from an Invoke config; from a fresh `load_config()` when it is not ours."""
    if not isinstance(config, GbdeployConfig):
        config = load_config(start=start)
    project = config._project_path  # type: ignore[attr-defined]
    project_dir = Path(project).parent if project else None
    try:
        return Settings.from_mapping(_plain(config), project_dir=project_dir)
    except ConfigError as error:
        where = f" (in {project})" if project else ""
        raise ConfigError(
            error.key, error.message.split(": ", 2)[-1] + where, hint=error.hint
        ) from None


def _plain(value: Any) -> Any:
    """Invoke's DataProxy trees as plain dicts and lists."""
    if isinstance(value, DataProxy | typing.Mapping):
        return {key: _plain(value[key]) for key in value}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
