"""Loading the configuration: Invoke's layered Config (prefix `gbdeploy`), turned into `Settings`.

Layers, lowest first: `config.DEFAULTS`, `/etc/gbdeploy.yaml`, `~/.gbdeploy.yaml`, the project's
`gbdeploy.yaml` (found from the current directory upward, like Invoke finds `tasks.py`),
`GBDEPLOY_*` environment variables (read here, each checked against the keys), and a runtime file
given with `-f`. A broken file or variable becomes a `ConfigError` naming the file or the key.
"""

from __future__ import annotations

import difflib
import errno
import json
import os
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from invoke import Config as InvokeConfig
from invoke.config import AmbiguousMergeError, DataProxy
from invoke.exceptions import AmbiguousEnvVar, UncastableEnvVar, UnknownFileType
from invoke.util import yaml as invoke_yaml  # Invoke parses with its vendored copy of PyYAML

from .config import DEFAULTS, TOKEN_VARIABLES, Settings, top_level_problem
from .config_values import shown
from .errors import ConfigError
from .hooks import FACT_VARIABLES

CONFIG_NAMES = ("gbdeploy.yaml", "gbdeploy.yml", "gbdeploy.json")


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
        *FACT_VARIABLES,  # what a hook is given
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
        return ConfigError(name, f"expected {expected} ({key}), got {shown(text)}")

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
        raise ConfigError(path, top_level_problem(data))
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
        return Settings.from_mapping(plain(config), project_dir=project_dir)
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


def plain(value: Any) -> Any:
    """Invoke's DataProxy trees as plain dicts and lists."""
    if isinstance(value, DataProxy | typing.Mapping):
        return {key: plain(value[key]) for key in value}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
