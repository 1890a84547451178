"""A real OpenSSH server on 127.0.0.1 with its own host key, client key and port.

It writes an ssh_config with a Host alias, and a known_hosts holding the server's key, so that
gbdeploy reaches it exactly as it reaches production: through an alias in an ssh config file.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from gbdeploy.errors import UsageError

from .ports import free_port
from .procs import end_process

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_sshd() -> str:
    for candidate in (*SSHD_CANDIDATES, shutil.which("sshd")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise UsageError(
        "no OpenSSH server (sshd) on this machine: the sandbox needs one on 127.0.0.1",
        hint="apt-get update && apt-get install -y openssh-server",
    )


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


class LoopbackSshd:
    """`with LoopbackSshd(directory, alias="pragmatismo-system") as sshd:` then connect with
    `ssh -F sshd.ssh_config alias`. `extra_path` directories go first on the server's PATH (for
    stand-in executables such as `lxc` or `systemctl`)."""

    def __init__(
        self,
        directory: Path,
        *,
        alias: str = "pragmatismo-system",
        extra_path: Iterable[Path] = (),
        user: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.alias = alias
        self.extra_path = [Path(p) for p in extra_path]
        self.user = user or _current_user()
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.host_key = self.directory / "ssh_host_ed25519_key"
        self.client_key = self.directory / "id_ed25519"
        self.ssh_config = self.directory / "ssh_config"
        self.known_hosts = self.directory / "known_hosts"
        self.log = self.directory / "sshd.log"

    def start(self) -> LoopbackSshd:
        sshd = find_sshd()
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            _keygen(self.host_key, "gbdeploy-sandbox-host")
            _keygen(self.client_key, "gbdeploy-sandbox-client")
        authorized = self.directory / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        for attempt in range(5):
            self.port = free_port()
            self._write_configs(authorized)
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    [sshd, "-D", "-e", "-f", str(self.directory / "sshd_config")],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            if self._wait_listening():
                return self
            self.stop()
            if attempt == 4:
                break
        raise RuntimeError(f"sshd did not start; see {self.log}:\n{self.log.read_text()[-2000:]}")

    def _write_configs(self, authorized: Path) -> None:
        path = ":".join([*(str(p) for p in self.extra_path), DEFAULT_PATH])
        (self.directory / "sshd_config").write_text(
            f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {self.directory / "sshd.pid"}
AuthorizedKeysFile {authorized}
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowUsers {self.user}
MaxStartups 64:30:128
MaxSessions 64
Subsystem sftp internal-sftp
SetEnv PATH={path}
LogLevel VERBOSE
"""
        )
        public = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n")
        self.ssh_config.write_text(
            f"""Host {self.alias}
    HostName 127.0.0.1
    Port {self.port}
    User {self.user}
    IdentityFile {self.client_key}
    IdentitiesOnly yes
    UserKnownHostsFile {self.known_hosts}
    StrictHostKeyChecking yes
    ConnectTimeout 10
"""
        )

    def _wait_listening(self, deadline_seconds: float = 10.0) -> bool:
        deadline = time.monotonic() + deadline_seconds
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.02)
        return False

    def ssh_command(self, *remote: str) -> list[str]:
        """An OpenSSH client command line to this server (for baselines and manual use)."""
        return ["ssh", "-F", str(self.ssh_config), self.alias, *remote]

    def stop(self) -> None:
        end_process(self.process)
        self.process = None

    def __enter__(self) -> LoopbackSshd:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
