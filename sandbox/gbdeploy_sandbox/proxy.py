"""Debian's real Caddy (2.6) on loopback, in front of stand-in services, for tests and the bench.

Its admin API listens on a free 127.0.0.1 port (the Caddyfile's global `admin` option, which
`caddy reload --config FILE` reads to find it), every site binds 127.0.0.1 on a free port with
`auto_https off`, and its storage is `file_system` under the world's directory, as the operations
guide requires (so doctor's storage rule holds here too). HOME and the XDG directories point into
the world's directory: nothing of this Caddy lands in the machine's ~/.config or ~/.local.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from types import TracebackType

from gbdeploy.errors import UsageError

from .procs import end_process, wait_for
from .sshd import free_port

MIGRATE_REQUESTS = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def reload_keeps_queued_connections() -> bool:
    """Whether this network namespace hands the connections queued on a closing SO_REUSEPORT
    listener to another one: Caddy binds a new socket per config and closes the old one, so
    without it a reload under load resets a few connections (measured with Caddy 2.6.2: 24 of
    16635 requests over 40 reloads; 0 with it)."""
    try:
        return MIGRATE_REQUESTS.read_text().strip() == "1"
    except OSError:
        return False


def caddy_binary() -> str:
    found = shutil.which("caddy")
    if found is None:
        raise UsageError(
            "Debian's caddy is not installed: the switch tests and bench run a real Caddy",
            hint="bash .ci/setup (apt-get install -y caddy)",
        )
    return found


class LoopbackCaddy:
    """`with LoopbackCaddy(directory, upstream_port=P) as caddy:` — `caddy.url` is the site that
    proxies to 127.0.0.1:P, `caddy.other_url` a site that answers by itself, `caddy.caddyfile`
    the file it was started from."""

    def __init__(self, directory: Path, *, upstream_host: str = "127.0.0.1", upstream_port: int):
        self.directory = Path(directory)
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.admin_port = free_port()
        self.site_port = free_port()
        self.other_port = free_port()
        self.caddyfile = self.directory / "config"
        self.storage = self.directory / "data/caddy"
        self.log = self.directory / "caddy.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.site_port}"

    @property
    def other_url(self) -> str:
        return f"http://127.0.0.1:{self.other_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def text(self) -> str:
        """A proxy's Caddyfile: the global block, the component's site, and other sites (one
        dials the component's host on another port, as botui beside botserver)."""
        return f"""\
{{
\tadmin 127.0.0.1:{self.admin_port}
\tstorage file_system {{
\t\troot {self.storage}
\t}}
\tauto_https off
}}

# the component behind the proxy
http://127.0.0.1:{self.site_port} {{
\tbind 127.0.0.1
\treverse_proxy {self.upstream_host}:{self.upstream_port}
}}

# another site on the same proxy, which a switch leaves byte for byte
http://127.0.0.1:{self.other_port} {{
\tbind 127.0.0.1
\t@ui path /ui/*
\treverse_proxy @ui {self.upstream_host}:9
\trespond "other site" 200
}}
"""

    def environment(self) -> dict[str, str]:
        home = self.directory / "home"
        return {
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local/share"),
        }

    def start(self) -> LoopbackCaddy:
        if not reload_keeps_queued_connections():
            raise UsageError(
                "net.ipv4.tcp_migrate_req is not 1 here: every Caddy reload under load would "
                "reset the connections queued on its old listener",
                hint="bash .ci/setup (sysctl -w net.ipv4.tcp_migrate_req=1)",
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(parents=True, exist_ok=True)
        self.caddyfile.write_text(self.text())
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [caddy_binary(), "run", "--adapter", "caddyfile", "--config", str(self.caddyfile)],
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        if not wait_for(self._answers, deadline_seconds=30) or not self.running():
            self.stop()
            raise RuntimeError(f"caddy did not start; see {self.log}")
        return self

    def _answers(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return True  # exited: start() sees it below
        try:
            with urllib.request.urlopen(f"{self.other_url}/", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        end_process(self.process)

    def __enter__(self) -> LoopbackCaddy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
