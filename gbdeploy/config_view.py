"""`config`: the effective configuration, and which layer gave each value.

Invoke merges, lowest first: the defaults, `/etc/gbdeploy.yaml`, `~/.gbdeploy.yaml`, the project's
`gbdeploy.yaml`, `GBDEPLOY_*` variables, and the `-f` file. A value's source is the highest layer
that holds its key. The token never comes from a file and is shown only as set or unset.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from invoke import Config as InvokeConfig
from invoke import Exit

from .config import TOKEN_VARIABLES
from .config_layers import load_settings, plain
from .errors import ConfigError, UsageError
from .output import Reporter, table

# Highest first: the first layer holding a key is where its value came from.
LAYERS = (("runtime", "-f file"), ("env", "environment"), ("project", "project file"))
LAYERS += (("user", "user file"), ("system", "system file"))


@dataclass(frozen=True)
class Value:
    key: str
    value: Any
    source: str  # default | system | user | project | env | runtime
    origin: str  # the file, the variable, or "built-in"


def _leaves(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for key in data:
        value = data[key]
        if isinstance(value, Mapping) and value:
            paths += _leaves(value, (*prefix, str(key)))
        else:
            paths.append((*prefix, str(key)))
    return paths


def _lookup(data: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return False, None
        data = data[key]
    return True, data


def effective_values(config: InvokeConfig) -> list[Value]:
    """Every gbdeploy key of the merged configuration (Invoke's own sections left out)."""
    merged = plain(config)
    ours = {k: v for k, v in merged.items() if k not in InvokeConfig.global_defaults()}
    values = []
    for path in _leaves(ours):
        values.append(Value(".".join(path), _lookup(ours, path)[1], *_source(config, path)))
    return values


def _source(config: InvokeConfig, path: tuple[str, ...]) -> tuple[str, str]:
    for layer, _ in LAYERS:
        found, _value = _lookup(getattr(config, f"_{layer}", None) or {}, path)
        if found:
            if layer == "env":
                return layer, "GBDEPLOY_" + "_".join(path).upper()
            return layer, layer_file(config, layer) or layer
    return "default", "built-in"


def token_state() -> dict[str, Any]:
    for variable in TOKEN_VARIABLES:
        if os.environ.get(variable, "").strip():
            return {"set": True, "from": variable}
    return {"set": False, "from": None}


def layer_file(config: InvokeConfig, layer: str) -> str | None:
    """The file a layer was read from. Invoke records a missing `.py` candidate as read (it
    loads as empty), so only a file that exists counts."""
    path = getattr(config, f"_{layer}_path", None)
    return str(path) if path and os.path.isfile(path) else None


def files(config: InvokeConfig) -> dict[str, str | None]:
    return {layer: layer_file(config, layer) for layer in ("system", "user", "project", "runtime")}


def as_json(config: InvokeConfig, values: list[Value]) -> dict[str, Any]:
    return {
        "files": files(config),
        "token": token_state(),
        "values": {v.key: {"value": v.value, "source": v.source, "from": v.origin} for v in values},
    }


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def format_config(config: InvokeConfig, values: list[Value]) -> list[str]:
    found = files(config)
    lines = ["files read (lowest first):"]
    for layer in ("system", "user", "project", "runtime"):
        lines.append(f"  {layer:8} {found[layer] or '(none)'}")
    token = token_state()
    variables = " or ".join(TOKEN_VARIABLES)
    lines.append(
        f"token: set (from {token['from']})" if token["set"] else f"token: unset ({variables})"
    )
    lines.append("")
    rows = [[v.key, _shown(v.value), v.origin] for v in values]
    lines += table(rows, header=["key", "value", "from"])
    return lines


def selected(values: list[Value], key: str | None) -> list[Value]:
    """The values under `key` (`forge`, `components.botserver`, `forge.url`); all without it."""
    if not key:
        return values
    chosen = [v for v in values if v.key == key or v.key.startswith(f"{key}.")]
    if not chosen:
        keys = {v.key for v in values} | {v.key.rsplit(".", 1)[0] for v in values}
        near = difflib.get_close_matches(key, sorted(keys), n=1, cutoff=0.6)
        raise UsageError(
            f"no configuration key {key!r}" + (f": did you mean {near[0]!r}?" if near else ""),
            hint="`gbdeploy config` lists every key",
        )
    return chosen


def run_config(
    config: InvokeConfig,
    reporter: Reporter,
    *,
    as_json_output: bool = False,
    key: str | None = None,
) -> None:
    """A wrong key or value is said first, naming the file it came from; the values follow (to
    see what else each layer gave), and the exit code is 2."""
    try:
        load_settings(config)
        problem = None
    except ConfigError as error:
        problem = error
        print(f"gbdeploy: error: {error}", file=sys.stderr, flush=True)
    values = selected(effective_values(config), key)
    if as_json_output:
        reporter.say(json.dumps(as_json(config, values), indent=2, sort_keys=True))
    else:
        for line in format_config(config, values):
            reporter.say(line)
    if problem is not None:
        raise Exit(code=problem.exit_code)
