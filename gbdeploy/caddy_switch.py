"""The proxy side of a switch: move Caddy's upstream for a component from one port to the other by
the operations guide's rules — back up the Caddyfile (`config.bak-YYYYmmddHHMM`, never over an
existing backup), write the new file atomically (a file beside it, validated, then renamed over
it: never a partial file, never an invalid one in place), `caddy reload` (never a restart), and on
a failed reload put the backup back and reload again.

Each operation is the exact shell text it runs on the proxy target (`far_end/proxy.sh`, then one
call line), so `--dry-run` prints what would run. `CaddySwitch.apply` runs them over a `Remote` or
a `Session`; `CaddySwitch.undo` puts the backup back (a later step — the check through Caddy —
failed). Which upstreams change is `caddyfile`'s.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .caddyfile import Change, admin_address, switch_upstream
from .deploy.layout import call
from .errors import OperationFailed, RemoteError
from .remote import far_end
from .remote.connection import CommandResult, quote
from .remote.probes import Health, Runner, probe_health, probe_through_proxy

ADAPTER = "--adapter caddyfile"
# The new file travels inside the command (printf '%s' WORD), which reaches the proxy as one
# argument of `sh -c` (quoted once more through `lxc exec`): Linux takes 128 KiB per argument.
# A full proxy config of ~25 sites is a few KiB.
MAX_CADDYFILE_BYTES = 60_000
# How long the answer through Caddy may take to come from the new process: a reload is graceful,
# so a request on a connection opened before it may still reach the old upstream for a moment.
SITE_CONFIRM_SECONDS = 10.0
SITE_CONFIRM_INTERVAL = 0.2
CHANGED = 3  # proxy.sh's exit when the Caddyfile changed since it was read


@dataclass(frozen=True)
class Operation:
    name: str
    command: str  # exact, run by sh on the proxy target
    summary: str  # one line for the plan

    def plan_line(self) -> str:
        return f"{self.name}: {self.summary}"


class ProxySwitchFailed(OperationFailed):
    """The switch on the proxy failed. `restored`: the Caddyfile is back as it was. `dials_new`:
    whether the running Caddy may dial the new port (None: its admin API could not say), so the
    caller knows whether stopping the new process is safe."""

    def __init__(
        self,
        message: str,
        *,
        restored: bool,
        dials_new: bool | None = False,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.restored = restored
        self.dials_new = dials_new


def backup_stamp(now: float | None = None) -> str:
    """`YYYYmmddHHMM` in UTC, as `date +%Y%m%d%H%M` on the proxy container gives it."""
    return time.strftime("%Y%m%d%H%M", time.gmtime(now))


def read_file(path: str) -> Operation:
    return Operation("read the Caddyfile", f"cat -- {quote(path)}", f"cat {path}")


def backup(path: str, stamp: str, sha256: str) -> Operation:
    """Copy the file, as it was read, to `PATH.bak-STAMP`; a backup of that name holding other
    bytes is never overwritten (the next free `-N` is taken). Prints the backup's path."""
    command = _script(call("caddy_backup", path, f"{path}.bak-{stamp}", sha256))
    return Operation("back up the Caddyfile", command, f"cp -p {path} {path}.bak-{stamp}")


def write(path: str, content: str, sha256: str, caddy: str) -> Operation:
    """Put `content` in place of the file read with `sha256`: written beside it with its owner
    and mode, validated by Caddy there, then renamed over it (atomic in one directory)."""
    new = _beside(path, ".gbdeploy-new")
    command = _script(call("caddy_write", path, new, sha256, content, caddy))
    size = len(content.encode())
    return Operation(
        "write the new Caddyfile",
        command,
        f"{size} bytes to {new}, caddy validate it, mv it over {path}",
    )


def reload(path: str, caddy: str) -> Operation:
    command = f"{quote(caddy)} reload {ADAPTER} --config {quote(path)}"
    return Operation("reload Caddy", command, command)


def restore(path: str, backup_path: str) -> Operation:
    """The backup's bytes back in place, atomically, with the live file's owner and mode."""
    command = _script(call("caddy_restore", path, backup_path, _beside(path, ".gbdeploy-new")))
    return Operation("put the backup back", command, f"{backup_path} back to {path}")


def _beside(path: str, suffix: str) -> str:
    p = PurePosixPath(path)
    return str(p.with_name(f".{p.name}{suffix}"))


def _script(line: str) -> str:
    """`far_end/proxy.sh`, then its one call `line`."""
    return f"{far_end.proxy()}\n{line}"


@dataclass
class CaddySwitch:
    """Move `host:old_port` to `host:new_port` in the Caddyfile at `path` on the proxy."""

    path: str
    host: str
    old_port: int
    new_port: int
    caddy: str = "caddy"
    stamp: str = field(default_factory=backup_stamp)
    backup_path: str | None = None  # set once the backup exists
    changes: tuple[Change, ...] = ()
    new_text: str = ""  # the Caddyfile as the switch writes it
    site_url: str | None = None  # the health as users reach it through Caddy (`switch.site`)
    site_ca: str | None = None  # the CA file on the proxy that signs the site's certificate

    def operations(self, current: str) -> Iterator[Operation]:
        """What `apply` runs after reading `current`: the plan `--dry-run` prints."""
        new = switch_upstream(current, self.host, self.old_port, self.new_port)
        self.changes, self.new_text = new.changes, new.text
        if len(new.text.encode()) > MAX_CADDYFILE_BYTES:
            raise ProxySwitchFailed(
                f"{self.path} is over {MAX_CADDYFILE_BYTES} bytes, more than one command carries",
                restored=True,
            )
        digest = hashlib.sha256(current.encode()).hexdigest()
        yield backup(self.path, self.stamp, digest)
        yield write(self.path, new.text, digest, self.caddy)
        yield reload(self.path, self.caddy)

    def current_text(self, remote: Runner) -> str:
        return _checked(remote, read_file(self.path)).stdout

    def apply(self, remote: Runner, current: str | None = None) -> None:
        """Back up, write, validate, reload. On a failed reload the backup goes back and Caddy is
        reloaded with it; Caddy keeps running the config it had whenever a reload fails."""
        current = self.current_text(remote) if current is None else current
        for operation in self.operations(current):
            if operation.name == "reload Caddy":
                self._reload_or_restore(remote, operation)
                continue
            result = _checked(remote, operation, nothing_changed=True)
            if operation.name == "back up the Caddyfile":
                self.backup_path = result.stdout.strip().splitlines()[-1]

    def confirm(self, remote: Runner, unhealthy: Callable[[Health], str] | None = None) -> str:
        """That the Caddy on the proxy runs a config dialling `host:new_port` and no longer
        `host:old_port`: the reload took; and, with `site_url`, that the site answers through
        Caddy's listener on the proxy as `unhealthy` (why an answer is not the new process's,
        "" when it is) accepts. ProxySwitchFailed otherwise (the caller undoes the switch, and
        stops the new process only once Caddy is seen dialling the old port). Says what it
        saw."""
        dials = self.running_dials(remote)
        new, old = self.dial(self.new_port), self.dial(self.old_port)
        if dials is None and self.site_url is None:
            raise ProxySwitchFailed(
                f"Caddy's running config cannot be read from its admin API (see {self.path}'s "
                "`admin` option)",
                restored=False,
                dials_new=None,
            )
        # with the admin API off, the answer through the site is the proof
        if dials is not None and (new not in dials or old in dials):
            raise ProxySwitchFailed(
                f"Caddy runs a config that dials {', '.join(sorted(dials)) or 'nothing'}, not "
                f"{new} alone for this service: the reload did not take",
                restored=False,
                dials_new=new in dials,
            )
        if self.site_url is None or unhealthy is None:
            return f"Caddy dials {new}"
        return self.confirm_site(remote, unhealthy, dials_new=None if dials is None else True)

    def confirm_site(
        self, remote: Runner, unhealthy: Callable[[Health], str], *, dials_new: bool | None
    ) -> str:
        """Ask `site_url` through Caddy's own listener on the proxy until an answer is the new
        process's, for at most SITE_CONFIRM_SECONDS."""
        assert self.site_url is not None
        probe = probe_through_proxy(self.site_url, ca=self.site_ca)
        deadline = time.monotonic() + SITE_CONFIRM_SECONDS
        while True:
            answer = probe.run(remote)
            why = unhealthy(answer)
            if not why:
                return f"{self.site_url} answers through Caddy: commit {answer.commit or '?'}"
            if time.monotonic() >= deadline:
                raise ProxySwitchFailed(
                    f"through Caddy, {why} (for {SITE_CONFIRM_SECONDS:g}s after the reload)",
                    restored=False,
                    dials_new=dials_new,
                    hint=f"the site of `switch.site` must be served by this component's "
                    f"reverse_proxy in {self.path}; a certificate that does not verify needs "
                    "`switch.site_ca` (the CA file on the proxy target)",
                )
            time.sleep(SITE_CONFIRM_INTERVAL)

    def running_dials(self, remote: Runner) -> set[str] | None:
        """The upstreams the Caddy on the proxy dials now, from its admin API (`GET /config/`
        at the address the Caddyfile's `admin` option names); None when it cannot be read."""
        address = admin_address(self.new_text)
        if address is None:
            return None
        answer = probe_health(f"http://{address}/config/").run(remote)
        return set(_dials(answer.data)) if answer.http_status == 200 else None

    def dial(self, port: int) -> str:
        """`host:port` as Caddy's running config names the upstream (`[v6]:port` for IPv6)."""
        return f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"

    def undo(self, remote: Runner) -> None:
        """The backup back in place and reloaded: Caddy dials the old port again."""
        if self.backup_path is None:
            return  # the file was never changed
        _checked(remote, restore(self.path, self.backup_path))
        _checked(remote, reload(self.path, self.caddy))

    def _reload_or_restore(self, remote: Runner, operation: Operation) -> None:
        result = remote.run(operation.command, check=False)
        if result.ok:
            return
        assert self.backup_path is not None
        said = _said(result)
        try:
            _checked(remote, restore(self.path, self.backup_path))
        except (ProxySwitchFailed, RemoteError) as error:
            raise ProxySwitchFailed(
                f"caddy reload failed ({said}), and putting {self.backup_path} back failed too: "
                f"{error}",
                restored=False,
                dials_new=None,
                hint=f"on the proxy: cp {self.backup_path} {self.path}, caddy validate, "
                "caddy reload (Caddy keeps running the config it had)",
            ) from None
        again = remote.run(reload(self.path, self.caddy).command, check=False)
        tail = "" if again.ok else f"; reloading it failed too ({_said(again)})"
        dials = self.running_dials(remote)
        dials_new = None if dials is None else self.dial(self.new_port) in dials
        running = {
            None: "its admin API does not say which config Caddy runs",
            True: "Caddy still dials the new port",
            False: "Caddy runs the config it had",
        }[dials_new]
        raise ProxySwitchFailed(
            f"caddy reload failed: {said}. {self.path} is back as it was{tail}; {running}",
            restored=True,
            dials_new=dials_new,
            hint="`caddy reload` must reach the admin endpoint that the Caddyfile's `admin` "
            "option names: run it by hand on the proxy to see why it fails",
        )


def _checked(
    remote: Runner, operation: Operation, *, nothing_changed: bool = False
) -> CommandResult:
    result = remote.run(operation.command, check=False)
    if not result.ok:
        where = "; the Caddyfile is as it was" if nothing_changed else ""
        raise ProxySwitchFailed(f"{operation.name} failed: {_said(result)}{where}", restored=True)
    return result


def _dials(config: object) -> Iterator[str]:
    """Every upstream `dial` of a Caddy JSON config, without a network prefix (`tcp/`)."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "dial" and isinstance(value, str):
                yield value.rpartition("/")[2]
            else:
                yield from _dials(value)
    elif isinstance(config, list):
        for item in config:
            yield from _dials(item)


def _said(result: CommandResult) -> str:
    lines = (
        result.stderr.strip() or result.stdout.strip() or f"exit {result.exit_code}"
    ).splitlines()
    return lines[-1][:400]
