"""Configuration: Invoke's layered config (prefix `gbdeploy`), validated into typed settings.

Layers, lowest first: the defaults below, `/etc/gbdeploy.yaml`, `~/.gbdeploy.yaml`, the project's
`gbdeploy.yaml` (found from the current directory upward, like Invoke finds `tasks.py`),
`GBDEPLOY_*` environment variables, and a runtime file given with `-f`. The forge token comes only
from `GBDEPLOY_FORGE_TOKEN` or `FORGEJO_TOKEN`, and lives in a `Secret` that never prints itself.
"""

from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from invoke import Config as InvokeConfig
from invoke.config import AmbiguousMergeError, DataProxy
from invoke.exceptions import AmbiguousEnvVar, UncastableEnvVar, UnknownFileType
from invoke.util import yaml as invoke_yaml  # Invoke parses with its vendored copy of PyYAML

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
        "host": None,  # ssh Host alias of the LXD host; `doctor` refuses to run without it
        "system": "pragmatismo-system",  # container names; null skips that container's checks
        "ci_runner": "pragmatismo-alm-ci",
        "proxy": "pragmatismo-proxy",
        "dns": "pragmatismo-dns",
        "caddyfile": "/opt/gbo/conf/config",
        "caddy": "caddy",
        "caddy_storage_root": "/opt/gbo/data/caddy",
        "corefile": "/opt/gbo/conf/Corefile",
        # The seed: "~25 vhosts; if you only see 1-2, it is a broken/partial config". 20 leaves
        # room for removing a few dead domains and still catches a truncated file.
        "min_vhosts": 20,
        "valkey_cli": "/opt/gbo/bin/botserver-stack/bin/cache/bin/valkey-cli",
        "iptables_rules_file": "/etc/iptables/rules.v4",
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
    keep_releases: int = 3  # binaries that passed health kept on the target, for `rollback`

    @property
    def directory(self) -> str:
        return str(PurePosixPath(self.binary).parent)  # a path on the target: POSIX

    @property
    def start_command(self) -> str:
        return self.start or f"./{PurePosixPath(self.binary).name}"

    @property
    def log_path(self) -> str:
        return self.log or f"{self.binary}.log"


SEED_PROXY_PORTS = (80, 443, 25, 465, 587, 993, 995, 143, 110, 4190, 53)


@dataclass(frozen=True)
class DoctorSettings:
    """`doctor:` — where the seed's production invariants are checked. Sizes are GiB."""

    host: str | None = None
    system: str | None = "pragmatismo-system"
    ci_runner: str | None = "pragmatismo-alm-ci"
    proxy: str | None = "pragmatismo-proxy"
    dns: str | None = "pragmatismo-dns"
    caddyfile: str = "/opt/gbo/conf/config"
    caddy: str = "caddy"
    caddy_storage_root: str = "/opt/gbo/data/caddy"
    corefile: str = "/opt/gbo/conf/Corefile"
    min_vhosts: int = 20
    valkey_cli: str = "/opt/gbo/bin/botserver-stack/bin/cache/bin/valkey-cli"
    iptables_rules_file: str = "/etc/iptables/rules.v4"
    botui_unit: str = "ui.service"
    botserver_url: str = "http://localhost:5858"
    proxy_ports: list[int] = field(default_factory=lambda: list(SEED_PROXY_PORTS))
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
        section = {name: _mapping(data.get(name), name) for name in DEFAULTS}
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
            fields_ = _mapping(raw, f"components.{name}")
            # `botui: {enabled: false}` drops a default component (Invoke cannot merge a null
            # over a mapping, so `botui: null` is refused when the files are loaded).
            enabled = _check(fields_.pop("enabled", True), bool, f"components.{name}.enabled")
            if enabled:
                components[name] = _component(name, fields_, targets)
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
    runtime = getattr(config, "_runtime_path", None)
    project_dir = Path(project).parent if project else None
    try:
        return Settings.from_mapping(_plain(config), project_dir=project_dir)
    except ConfigError as error:
        files = [str(path) for path in (project, runtime) if path]
        where = f" (in {' or '.join(files)})" if files else ""
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
