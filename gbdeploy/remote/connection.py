"""The remote layer: one `Remote` per target, over Fabric, with host keys checked.

A target is an ssh Host alias resolved through the ssh config file exactly as OpenSSH resolves it
(Fabric reads it with paramiko's SSHConfig: HostName, Port, User, IdentityFile, ProxyJump), and
optionally a container behind that host, in which case every command (the upload's receiving end
included) becomes `[sudo -n] lxc|incus exec [REMOTE:]NAME -- sh -c 'COMMAND'` (`Remote.wrap`).
`sudo -n` never waits for a password: a host whose sudo wants one fails at once, with sudo's
own message.

Before connecting, the alias is checked: a config file given in `ssh.config` must exist, and the
host name must resolve (unless a ProxyJump/ProxyCommand reaches it), so a typo is exit 2 with the
alias or the file named, not a retry loop against DNS.

Fabric trusts any host key on first use (it installs paramiko's AutoAddPolicy); `Remote` replaces
that: keys come from the config's UserKnownHostsFile (default ~/.ssh/known_hosts) and
GlobalKnownHostsFile, an unknown host is refused with a message that says how to add it, and a
changed key is always refused.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shlex
import socket
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko
from fabric import Config as FabricConfig
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from ..config import SshSettings, Target
from ..errors import ConfigError, HostKeyError, PreflightError, RemoteError

DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")
DEFAULT_SSH_CONFIG = SshSettings.config


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def quote(value: object) -> str:
    """Every value that enters a remote shell command goes through here."""
    return shlex.quote(str(value))


def container_tool(via: str, sudo: bool) -> str:
    """How the container tool is called on the host: `lxc`, `incus`, `sudo -n incus`."""
    return f"sudo -n {via}" if sudo else via


def container_prefix(target: Target) -> str:
    """What runs a command in the target's container (`sudo -n incus exec bot:system --`), or ""
    for a target that is the ssh host itself."""
    if not target.container:
        return ""
    return f"{container_tool(target.via, target.sudo)} exec {quote(target.container)} --"


def wrap_for_target(target: Target, command: str) -> str:
    """The exact command line sent over ssh for `command` on `target`."""
    prefix = container_prefix(target)
    return f"{prefix} sh -c {quote(command)}" if prefix else command


_NOT_FOUND = re.compile(r"\b(sudo|incus|lxc): (?:command )?not found\b")  # bash / dash
_NO_REMOTE = re.compile(r'Error: The remote "([^"]*)" doesn\'t exist')


def diagnose(target: Target, user: str, said: str) -> PreflightError | None:
    """What failed, in the user's terms, when a container target's command never ran: the
    container tool's or sudo's own message (`said`, their stderr) read as which part is missing
    where, with the key to fix (exit 2: nothing ran). None when `said` is none of those."""
    if not target.container:
        return None
    key = f"targets.{target.name}"
    host, tool, name = target.ssh, target.via, target.container
    missing = _NOT_FOUND.search(said)
    if missing and missing.group(1) == "sudo" and target.sudo:
        return PreflightError(
            f"sudo: command not found on {host} ({key}.sudo is true)",
            hint=f"install sudo on {host}, or set {key}.sudo: false if {user} may run {tool} "
            "without it",
        )
    if missing and missing.group(1) == tool:
        return PreflightError(
            f"{tool}: command not found on {host} ({key}.via is {tool})",
            hint=f"the container tool on {host} is the other one? set {key}.via "
            f"({'lxc' if tool == 'incus' else 'incus'}); or install {tool} there",
        )
    if "sudo: a password is required" in said or "sudo: a terminal is required" in said:
        return PreflightError(
            f"sudo asks for a password on {host}: {user} may not run {tool} without one, and "
            "gbdeploy never types one",
            hint=f"on {host}: `{user} ALL=(root) NOPASSWD: /usr/bin/{tool}` in "
            "/etc/sudoers.d/gbdeploy (visudo -f), as the README's container section says",
        )
    if "is not in the sudoers file" in said or "is not allowed to execute" in said:
        return PreflightError(
            f"sudo refuses {user} on {host}: {said.strip().splitlines()[-1][:200]}",
            hint=f"on {host}: `{user} ALL=(root) NOPASSWD: /usr/bin/{tool}` in "
            "/etc/sudoers.d/gbdeploy",
        )
    remote = _NO_REMOTE.search(said)
    if remote:
        return PreflightError(
            f"{tool} on {host} has no remote {remote.group(1)!r} ({key}.container is {name!r})",
            hint=f"`{tool} remote list` on {host} lists its remotes",
        )
    if "Error: Instance not found" in said:
        return PreflightError(
            f"container {name!r} not found on {host} ({key}.container)",
            hint=f"`{'sudo ' if target.sudo else ''}{tool} list` on {host} lists its containers",
        )
    return None


def aead_first_transport(sock: Any, *args: Any, **kwargs: Any) -> paramiko.Transport:
    """A paramiko Transport that prefers AES-GCM when the server offers it, over TCP_NODELAY.

    paramiko's default choice, aes128-ctr with hmac-sha2-256, costs a separate MAC pass per packet;
    AES-GCM (OpenSSH has offered it since 6.2) made a 150 MB upload on loopback about 1.5x faster.
    Servers without it still get the default list. Without TCP_NODELAY, Nagle's algorithm and the
    peer's delayed ACK hold small requests back (opening a channel took 45 ms on loopback, 0 with
    it), and a deploy is many small requests.
    """
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock, *args, **kwargs)
    options = transport.get_security_options()
    aead = tuple(name for name in options.ciphers if name.endswith("-gcm@openssh.com"))
    options.ciphers = aead + tuple(name for name in options.ciphers if name not in aead)
    return transport


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown hosts (or, when allowed, record them as OpenSSH's accept-new does)."""

    def __init__(self, alias: str, port: int, accept_new: bool, save_to: Path) -> None:
        self.alias = alias
        self.port = port
        self.accept_new = accept_new
        self.save_to = save_to

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        fingerprint = key.fingerprint
        if not self.accept_new:
            port = f"-p {self.port} " if self.port != 22 else ""
            host = hostname.split("]")[0].lstrip("[")
            raise HostKeyError(
                f"host key of {self.alias} ({hostname}, {key.get_name()} {fingerprint}) is not in "
                f"known_hosts ({self.save_to})",
                hint=(
                    f"check that fingerprint with the host's admin, then add it: "
                    f"ssh-keyscan {port}{host} >> {self.save_to}  "
                    f"(or once: ssh -o StrictHostKeyChecking=accept-new {self.alias} true)"
                ),
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.save_to.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.save_to, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


MAX_INCLUDE_DEPTH = 16  # as OpenSSH


def read_ssh_config(path: Path) -> paramiko.SSHConfig:
    """The ssh config file with its `Include`s expanded in place, which paramiko's parser does not
    do (Debian's own /etc/ssh/ssh_config starts with one). Relative patterns are taken from
    ~/.ssh, as OpenSSH does for a user's config."""
    return paramiko.SSHConfig.from_text(_expand_includes(path, 0))


def _expand_includes(path: Path, depth: int) -> str:
    if depth > MAX_INCLUDE_DEPTH:
        raise ConfigError("ssh.config", f"Include nested deeper than {MAX_INCLUDE_DEPTH} at {path}")
    lines = []
    for line in path.read_text().splitlines():
        keyword, _, rest = line.strip().replace("=", " ", 1).partition(" ")
        if keyword.lower() != "include":
            lines.append(line)
            continue
        for pattern in shlex.split(rest):
            pattern = os.path.expanduser(pattern)
            if not os.path.isabs(pattern):
                pattern = os.path.join(os.path.expanduser("~/.ssh"), pattern)
            for included in sorted(glob.glob(pattern)):
                lines.append(_expand_includes(Path(included), depth + 1))
    return "\n".join(lines) + "\n"


class Remote:
    """Commands on one target. Use as a context manager; the connection opens on first use."""

    def __init__(self, target: Target, ssh: SshSettings) -> None:
        self.target = target
        self.settings = ssh
        config_path = Path(os.path.expanduser(ssh.config))
        if not config_path.is_file() and ssh.config != DEFAULT_SSH_CONFIG:
            raise ConfigError(
                "ssh.config",
                f"{ssh.config} does not exist"
                + (f" (as {config_path})" if str(config_path) != ssh.config else ""),
                hint="name the ssh config file that holds the targets' Host entries",
            )
        self.ssh_config = read_ssh_config(config_path) if config_path.is_file() else None
        fabric_config = FabricConfig(ssh_config=self.ssh_config)
        connect_kwargs = {}
        if ssh.identity_file:  # the CI deploy job's key, written from a secret
            connect_kwargs["key_filename"] = [os.path.expanduser(ssh.identity_file)]
        self.connection = Connection(
            target.ssh,
            config=fabric_config,
            connect_timeout=int(ssh.connect_timeout),
            connect_kwargs=connect_kwargs,
        )
        self.connection.connect_kwargs.setdefault("transport_factory", aead_first_transport)
        options = self.connection.ssh_config
        self.known_hosts = _known_hosts_files(options)
        if ssh.known_hosts:
            self.known_hosts.insert(0, Path(os.path.expanduser(ssh.known_hosts)))
        strict = str(options.get("stricthostkeychecking", "ask")).lower()
        accept_new = ssh.accept_new_host_keys or strict in ("accept-new", "no", "off")
        save_to = (
            self.known_hosts[0] if self.known_hosts else Path(DEFAULT_KNOWN_HOSTS[0]).expanduser()
        )
        client = self.connection.client
        for path in self.known_hosts:
            if path.is_file():
                client.get_host_keys().load(str(path))
        client.set_missing_host_key_policy(
            _HostKeyPolicy(target.ssh, self.connection.port, accept_new, save_to)
        )

    @property
    def description(self) -> str:
        where = f"{self.connection.user}@{self.target.ssh}"
        if not self.target.container:
            return where
        tool = f"sudo {self.target.via}" if self.target.sudo else self.target.via
        return f"{where} ({tool} {self.target.container})"

    @property
    def user(self) -> str:
        """The user commands run as on the target (root inside a container)."""
        return "root" if self.target.container else str(self.connection.user)

    def wrap(self, command: str) -> str:
        return wrap_for_target(self.target, command)

    def diagnose(self, said: str) -> PreflightError | None:
        """A failure of the way into the container, from what the far end said (see diagnose)."""
        return diagnose(self.target, str(self.connection.user), said)

    def _way_in_failed(self, said: str, timeout: float | None) -> PreflightError | None:
        """When a failed command's message could be the container tool's or sudo's, whether the
        way in itself fails (a command inside may say `sudo: not found` about its own sudo)."""
        if self.diagnose(said) is None:
            return None
        try:
            probe = self.connection.run(
                self.wrap("true"), hide=True, warn=True, in_stream=False, timeout=timeout, pty=False
            )
        except (CommandTimedOut, OSError, EOFError, paramiko.SSHException):
            return None  # the command's own error, then
        return None if probe.exited == 0 else self.diagnose(probe.stderr)

    def check_address(self) -> None:
        """Refuse, before any connection attempt, an alias that names no host: no Host entry in
        the ssh config and not a resolvable name, or a HostName that does not resolve."""
        options = self.connection.ssh_config
        if options.get("proxyjump") or options.get("proxycommand"):
            return  # the name is resolved by the jump host, not here
        host = self.connection.host
        try:
            socket.getaddrinfo(host, self.connection.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as error:
            alias = self.target.ssh
            where = self.settings.config
            if host == alias and not self._alias_in_ssh_config():
                raise ConfigError(
                    f"targets.{self.target.name}.ssh",
                    f"{alias!r} is not a Host in the ssh config ({where}) and does not resolve "
                    f"as a host name ({error})",
                    hint=f"add `Host {alias}` with its HostName, User and Port to {where}, or "
                    "point ssh.config at the file that has it",
                ) from None
            raise PreflightError(
                f"host name {host!r} of ssh target {alias} does not resolve ({error})",
                hint=f"check HostName under `Host {alias}` in {where}, and the DNS of this machine",
            ) from None

    def _alias_in_ssh_config(self) -> bool:
        if self.ssh_config is None:
            return False
        patterns = [p for p in self.ssh_config.get_hostnames() if p not in ("*", "")]
        return any(
            fnmatch.fnmatchcase(self.target.ssh, p) for p in patterns if not p.startswith("!")
        )

    def open(self) -> None:
        if self.connection.is_connected:
            return
        self.check_address()
        try:
            self.connection.open()
        except HostKeyError:
            raise
        except paramiko.BadHostKeyException as error:
            raise HostKeyError(
                f"host key of {self.target.ssh} CHANGED (got {error.key.fingerprint}, "
                f"known_hosts has {error.expected_key.fingerprint}): refusing to connect",
                hint="if the host was really reinstalled, remove the old key with "
                "`ssh-keygen -R` and add the new one; otherwise treat this as an attack",
            ) from None
        except paramiko.AuthenticationException as error:
            raise RemoteError(
                f"ssh to {self.target.ssh} refused our key: {error}",
                hint=f"authorize this machine's key on {self.target.ssh} "
                f"(check with `ssh -o ConnectTimeout=5 {self.target.ssh} hostname`)",
            ) from None
        except (TimeoutError, OSError, paramiko.SSHException) as error:
            raise RemoteError(
                f"cannot reach {self.target.ssh} over ssh: {error}",
                hint=f"check the Host entry for {self.target.ssh} in {self.settings.config} and "
                f"that sshd answers: `ssh -o ConnectTimeout=5 {self.target.ssh} hostname`",
            ) from None

    def run(
        self, command: str, *, check: bool = True, timeout: float | None = 120.0
    ) -> CommandResult:
        """Run `command` (already quoted) on the target; RemoteError if `check` and it fails."""
        self.open()
        wrapped = self.wrap(command)
        try:
            result = self.connection.run(
                wrapped, hide=True, warn=True, in_stream=False, timeout=timeout, pty=False
            )
        except CommandTimedOut:
            raise RemoteError(
                f"on {self.description}: timed out after {timeout:.0f}s: {command}"
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as error:
            raise RemoteError(f"on {self.description}: connection lost: {error}") from None
        outcome = CommandResult(command, result.exited, result.stdout, result.stderr)
        if not outcome.ok:  # even unchecked: a command that never ran has no result to give
            found = self._way_in_failed(outcome.stderr, timeout)
            if found is not None:
                raise found
        if check and not outcome.ok:
            detail = (outcome.stderr.strip() or outcome.stdout.strip())[-800:]
            raise RemoteError(
                f"on {self.description}: command failed (exit {outcome.exit_code}): {command}"
                + (f"\n  {detail}" if detail else "")
            )
        return outcome

    def channel(self, command: str) -> paramiko.Channel:
        """An exec channel running `command` (wrapped for the target), for streaming data."""
        self.open()
        transport = self.connection.client.get_transport()
        if transport is None:
            raise RemoteError(f"on {self.description}: not connected")
        session = transport.open_session()
        session.exec_command(self.wrap(command))
        return session

    def close(self) -> None:
        self.connection.close()

    # -- the transport (ssh's one TCP connection under every channel)
    @property
    def alive(self) -> bool:
        """Whether the connection is open and its transport still active (not dropped)."""
        transport = self.connection.transport
        return bool(transport is not None and transport.is_active())

    def cut(self) -> None:
        """Shut the connection's socket down at once, so every wait on it ends now (a cancel);
        safe from another thread, from a signal handler and on a connection that is gone. It
        takes no lock, and marks the transport dead as paramiko's own close does, so nothing sends
        on it again: the interrupt that follows a cut may have left one of paramiko's locks
        held, and a send would then wait for that lock forever (a SIGTERM sweep hung that way)."""
        transport = self.connection.transport
        if transport is not None and transport.sock is not None:
            transport.active = False
            with suppress(OSError):
                transport.sock.shutdown(socket.SHUT_RDWR)

    def close_quietly(self) -> None:
        """Close, ignoring what a dead or interrupted connection raises while closing."""
        with suppress(OSError, EOFError, paramiko.SSHException):
            self.close()
        with suppress(OSError, EOFError, paramiko.SSHException):
            self.connection.client.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _known_hosts_files(options: Any) -> list[Path]:
    user_files = str(options.get("userknownhostsfile", DEFAULT_KNOWN_HOSTS[0])).split()
    global_files = str(options.get("globalknownhostsfile", DEFAULT_KNOWN_HOSTS[1])).split()
    return [Path(os.path.expanduser(p)) for p in [*user_files, *global_files] if p != "/dev/null"]
