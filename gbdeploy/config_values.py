"""What a config value must be: the types a settings field is annotated with, each carrying its
rule (`Seconds`, `TargetPath`, `HealthUrl` …), and the checker that builds a section's dataclass
from raw values, refusing an unknown key or a wrong value with an error naming the key.

A field's type says it: `stop_timeout: Seconds = 20.0`. `check_value` applies the rule after the
type, so a mistake is refused when the config is loaded, naming the key.
"""

from __future__ import annotations

import ipaddress
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from .errors import ConfigError


@dataclass(frozen=True)
class Rule:
    expected: str  # completes "expected …, got VALUE"
    accepts: Callable[[Any], bool]


def _matching(expected: str, regex: str, also: Callable[[str], bool] = lambda _: True) -> Rule:
    compiled = re.compile(regex)
    return Rule(expected, lambda value: bool(compiled.fullmatch(value)) and also(value))


def between(low: float, high: float, expected: str) -> Rule:
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

Seconds = Annotated[float, between(1e-3, WEEK, "a number of seconds above 0, at most a week")]
Count = Annotated[int, between(0, 1_000_000, "a whole number from 0 to 1000000")]
Gigabytes = Annotated[float, between(0, 1_000_000, "a size in GiB from 0 to 1000000")]
Port = Annotated[int, between(1, 65535, "a port number from 1 to 65535")]
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
# Where users reach a switch component through Caddy: scheme, host, optional port and path prefix;
# the component's health path is appended (see `Switch.site_url`).
SiteUrl = Annotated[
    str,
    _matching(
        "an http:// or https:// URL of the site Caddy serves the component on, without query, "
        "e.g. https://bots.example.com (the health path is appended)",
        r"[^?#{}]+",
        _http_url(port_required=False),
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


UpstreamHost = Annotated[
    str,
    _matching(
        "a host name or IP address as Caddy dials it, without port, e.g. 10.16.164.33",
        r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|[0-9A-Fa-f:.]+",
        lambda v: ":" not in v or _is_ip_address(v),  # `host:port` is no IPv6 address
    ),
]


def mapping_of(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, typing.Mapping):
        raise ConfigError(key, f"expected a mapping, got {type(value).__name__}")
    return dict(value)


def shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


_T = typing.TypeVar("_T")


def build_dataclass(cls: type[_T], raw: dict[str, Any], key: str, **given: Any) -> _T:
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
            values[f.name] = check_value(raw[f.name], hints[f.name], f"{key}.{f.name}")
    try:
        return cls(**values)
    except TypeError:
        missing = [f.name for f in fields(cls) if f.name not in values]  # type: ignore[arg-type]
        raise ConfigError(f"{key}.{missing[0]}", "is required") from None


def check_value(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        checked = check_value(value, args[0], key)
        for rule in args[1:]:
            if not rule.accepts(checked):
                raise ConfigError(key, f"expected {rule.expected}, got {shown(value)}")
        return checked
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise ConfigError(key, f"expected one of {choices}, got {shown(value)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return check_value(value, inner[0], key)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {shown(value)}")
        return [check_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, typing.Mapping):
            raise ConfigError(key, f"expected a mapping, got {shown(value)}")
        return {
            check_value(k, args[0], f"{key}.{k}"): check_value(v, args[1], f"{key}.{k}")
            for k, v in value.items()
        }
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > 1e15:
            raise ConfigError(key, f"expected a finite number of usual size, got {shown(value)}")
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {shown(value)}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(key, f"expected a whole number, got {shown(value)}")
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # YAML reads `branch: 2024` as a number
    if hint in (str, float) and not isinstance(value, hint):
        what = "text" if hint is str else "number"
        raise ConfigError(key, f"expected {what}, got {shown(value)}")
    return value
