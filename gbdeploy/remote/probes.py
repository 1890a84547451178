"""Facts about a target, one probe each: the exact shell command, and a parser for its output.

Each `probe_*` function returns a `Probe`: `probe.command` is the POSIX sh script (the functions of
`far_end/probes.sh`, then one call line, every value quoted), `probe.parse(result)` turns the
command's result into a value, and `probe.run(remote)` does both over a `Remote`. The functions
look for the tools they need (`command -v`) and fall back, because a production container may lack
curl, sha256sum or python3, so one round trip answers on any target.
The commands never match processes by pattern: a process is found by its executable
(/proc/PID/exe), so the ssh shell that carries the command (whose command line holds the same path)
is never mistaken for the service.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from ..config import Component
from ..errors import ConfigError, RemoteError
from . import far_end
from .connection import CommandResult, quote

T = TypeVar("T")


class Runner(Protocol):
    """What a probe needs from a `connection.Remote`."""

    def run(
        self, command: str, *, check: bool = True, timeout: float | None = 120.0
    ) -> CommandResult: ...


@dataclass(frozen=True)
class Probe(Generic[T]):
    """One fact: the remote command and how to read its result."""

    name: str
    command: str
    parse: Callable[[CommandResult], T]
    timeout: float = 30.0

    def run(self, remote: Runner) -> T:
        return self.parse(remote.run(self.command, check=False, timeout=self.timeout))


def _script(function: str, *arguments: object, processes: bool = False) -> str:
    """The probes' functions (after procs.sh's, for `processes`), then one call line."""
    call = " ".join([function, *(quote(argument) for argument in arguments)])
    library = [far_end.processes()] if processes else []
    return "\n".join([*library, far_end.probes(), call])


def _failed(name: str, result: CommandResult) -> RemoteError:
    detail = (result.stderr.strip() or result.stdout.strip())[-500:]
    return RemoteError(
        f"probe {name} failed (exit {result.exit_code}): {result.command}"
        + (f"\n  {detail}" if detail else "")
    )


# --- processes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    uid: int
    user: str
    deleted: bool  # runs a binary that has since been replaced or removed


def probe_processes(binary: str) -> Probe[list[ProcessInfo]]:
    """Processes whose /proc/PID/exe is exactly `binary`, with their user."""
    command = _script("processes_of", binary, processes=True)
    return Probe("processes", command, _parse_processes, timeout=30.0)


def _parse_processes(result: CommandResult) -> list[ProcessInfo]:
    if not result.ok:
        raise _failed("processes", result)
    found = []
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0].isdigit():
            found.append(ProcessInfo(int(parts[0]), int(parts[1]), parts[2], parts[3] == "deleted"))
    return found


# --- files ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileStat:
    mtime: int  # seconds since the epoch
    size: int
    uid: int
    owner: str
    group: str
    mode: int  # permission bits, e.g. 0o755


def probe_stat(path: str) -> Probe[FileStat | None]:
    """mtime, size, owner and mode of `path` (None when it does not exist)."""
    command = _script("file_stat", path)
    return Probe("stat", command, _parse_stat)


def _parse_stat(result: CommandResult) -> FileStat | None:
    if result.stdout.strip() == "missing":
        return None
    parts = result.stdout.split()
    if not result.ok or len(parts) != 6:
        raise _failed("stat", result)
    mtime, size, uid, owner, group, mode = parts
    return FileStat(int(mtime), int(size), int(uid), owner, group, int(mode, 8))


def probe_sha256(path: str) -> Probe[str | None]:
    """sha256 of `path` as 64 hex digits (None when it does not exist).

    Uses the first of sha256sum, busybox, shasum, openssl, python3 that the target has.
    """
    command = _script("file_sha256", path)
    return Probe("sha256", command, _parse_sha256, timeout=300.0)


_SHA256 = re.compile(r"\b[0-9a-f]{64}\b")


def _parse_sha256(result: CommandResult) -> str | None:
    if result.stdout.strip() == "missing":
        return None
    found = _SHA256.search(result.stdout)
    if not result.ok or not found:
        raise _failed("sha256", result)
    return found.group(0)


def probe_contains(path: str, needle: str | bytes) -> Probe[bool | None]:
    """Whether the bytes of `path` contain `needle` (None when the file does not exist).

    `grep -a -F` (a binary file read as text, fixed string); python3 when grep is missing.
    """
    text = needle.decode() if isinstance(needle, bytes) else needle
    if not text or "\n" in text:
        raise ValueError("the needle must be a non-empty single line")
    command = _script("file_contains", path, text)
    return Probe("contains", command, _parse_contains, timeout=300.0)


def _parse_contains(result: CommandResult) -> bool | None:
    answer = result.stdout.strip()
    if answer == "missing":
        return None
    if not result.ok or answer not in ("yes", "no"):
        raise _failed("contains", result)
    return answer == "yes"


def probe_last_line(path: str) -> Probe[str | None]:
    """The last line of a text file (None when it does not exist or is empty)."""
    command = _script("last_line", path)

    def parse(result: CommandResult) -> str | None:
        lines = result.stdout.splitlines()
        if lines[:1] == ["missing"]:
            return None
        if not result.ok or lines[:1] != ["present"]:
            raise _failed("last line", result)
        return lines[1] if len(lines) > 1 and lines[1] else None

    return Probe("last line", command, parse)


def probe_tail(path: str, *, lines: int = 20, from_byte: int = 0) -> Probe[str]:
    """The last `lines` lines of `path`, reading only from byte `from_byte` (0: whole file)."""
    p = quote(path)
    command = f"[ -e {p} ] && tail -c +{int(from_byte) + 1} -- {p} | tail -n {int(lines)}"
    return Probe("tail", command, lambda result: result.stdout)


# --- health ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Health:
    url: str
    http_status: int | None  # None: no HTTP answer at all
    data: dict[str, Any] = field(default_factory=dict)  # the JSON body, when it is an object
    error: str = ""  # why there was no usable answer

    @property
    def ok(self) -> bool:
        return self.http_status == 200 and self.data.get("status") == "ok"

    @property
    def commit(self) -> str | None:
        value = self.data.get("commit")
        return str(value) if value is not None else None

    @property
    def version(self) -> str | None:
        value = self.data.get("version")
        return str(value) if value is not None else None

    def describe(self) -> str:
        if self.http_status is None:
            return f"no answer from {self.url}: {self.error or 'unknown error'}"
        body = json.dumps(self.data) if self.data else (self.error or "no JSON body")
        return f"HTTP {self.http_status} from {self.url}: {body}"


_STATUS_MARK = "__gbdeploy_http_status="
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9A-Fa-f:.]+)$")


def probe_health(url: str, *, timeout: float = 5.0) -> Probe[Health]:
    """GET `url` on the target (it names localhost there) and read its JSON answer.

    curl (https allowed with verification off: the services serve their own certificate), else
    wget, else bash's /dev/tcp for plain http.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    try:
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        raise ValueError(f"not a valid port in {url!r}") from None
    if not _HOST.fullmatch(parts.hostname):
        raise ValueError(f"not a host name or address: {parts.hostname!r} in {url!r}")
    seconds = max(1, round(timeout))
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    arguments: list[object] = [_STATUS_MARK, url, seconds]
    if parts.scheme == "http":  # bash's /dev/tcp as the last resort: plain http only
        request = f"GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        # bash tries only the first address: localhost may be ::1 first, services listen on IPv4.
        arguments += ["127.0.0.1" if host == "localhost" else host, int(port), request]
    command = _script("http_get", *arguments)
    return Probe("health", command, lambda r: parse_health(url, r), timeout=timeout + 10)


def probe_through_proxy(url: str, *, ca: str | None = None, timeout: float = 5.0) -> Probe[Health]:
    """GET `url` (a site Caddy serves) from the proxy target itself: its host resolved to
    127.0.0.1, so the request reaches Caddy's own listener whatever DNS says, and an https
    certificate verified against the site's name (with `ca` as the trust anchor when given;
    never unverified). curl, else python3."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    seconds = max(1, round(timeout))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    arguments: list[object] = [_STATUS_MARK, url, parts.scheme, host, port, path, seconds]
    command = _script("site_get", *arguments, *([ca] if ca else []))

    def parse(result: CommandResult) -> Health:
        answer = parse_health(url, result)
        said = result.stderr.strip().splitlines()
        if answer.http_status is None and said:  # curl's first line says why (then its advice)
            return replace(answer, error=said[0][:300])
        return answer

    return Probe("through proxy", command, parse, timeout=timeout + 10)


def health_probe(component: Component) -> Probe[Health] | None:
    """The probe of the component's health URL (None without one); a URL the probe cannot use
    is the config's error, named by its key. The deploy, rollback, start and `status` use it."""
    if not component.health:
        return None
    try:
        return probe_health(component.health, timeout=5.0)
    except ValueError as error:
        raise ConfigError(f"components.{component.name}.health", str(error)) from None


def parse_health(url: str, result: CommandResult) -> Health:
    out = result.stdout
    status: int | None = None
    body = out
    if _STATUS_MARK in out:  # curl
        body, _, code = out.rpartition(_STATUS_MARK)
        body = body[:-1] if body.endswith("\n") else body
        status = int(code.strip() or 0) or None
    else:  # raw response (bash /dev/tcp) or wget -S headers followed by the body
        head = re.search(r"HTTP/\d(?:\.\d)?\s+(\d{3})", out)
        if head:
            status = int(head.group(1))
            split = re.split(r"\r?\n\r?\n", out, maxsplit=1)
            body = split[1] if out.startswith("HTTP/") and len(split) > 1 else out
            if not out.startswith("HTTP/"):  # wget: headers (indented) then the body
                body = "\n".join(
                    line for line in out.splitlines() if line and not line.startswith(" ")
                )
    data: dict[str, Any] = {}
    error = ""
    try:
        parsed = json.loads(body) if body.strip() else None
        if isinstance(parsed, dict):
            data = parsed
    except ValueError:
        error = f"not JSON: {body.strip()[:200]!r}"
    if status is None:
        error = (result.stderr.strip() or out.strip() or f"exit {result.exit_code}")[-300:]
    return Health(url, status, data, error)
