"""A git smart-HTTP server on 127.0.0.1: git's own `git http-backend` behind a tiny CGI bridge.

It serves the bare repositories under `root` as `http://127.0.0.1:PORT/OWNER/NAME.git`, as
Forgejo does. A repository named in `private` answers 401 with a Basic challenge to a request
without the right credentials (Basic with password `token`, or `Authorization: token …`), as
Forgejo answers anonymous git: git then asks for a username on the terminal unless
`GIT_TERMINAL_PROMPT=0`.

    with GitHttpServer(root, private={"GeneralBots/gbdeploy"}, token="t") as server:
        server.url_of("GeneralBots/gbdeploy")
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class GitHttpServer:
    def __init__(
        self, root: Path, *, private: Iterable[str] = (), token: str = "git-token"
    ) -> None:
        self.root = Path(root)
        self.private = {name.lower() for name in private}
        self.token = token
        self.requests: list[tuple[str, int]] = []  # (path, status) of each request
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the git server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url_of(self, full_name: str) -> str:
        return f"{self.url}/{full_name}.git"

    def start(self) -> GitHttpServer:
        backend = _http_backend()
        handler = type("Handler", (_Handler,), {"server_of": self, "backend": backend})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="git-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> GitHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def allows(self, path: str, authorization: str) -> bool:
        """A public repository to anyone; a private one to the right Basic credentials."""
        parts = path.strip("/").split("/")
        name = "/".join(parts[:2]).removesuffix(".git").lower()
        if name not in self.private:
            return True
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() in ("token", "bearer"):  # Forgejo takes an API token header too
            return value.strip() == self.token
        if scheme.lower() != "basic":
            return False
        try:
            _, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return password == self.token


def _http_backend() -> str:
    """`git http-backend`'s path (it lives in git's exec path, not on PATH)."""
    exec_path = subprocess.run(
        ["git", "--exec-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    found = Path(exec_path) / "git-http-backend"
    if not found.is_file():
        raise RuntimeError(f"git-http-backend is not in {exec_path}")
    return str(found)


class _Handler(BaseHTTPRequestHandler):
    server_of: GitHttpServer
    backend: str

    def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
        pass

    def _serve(self) -> None:
        split = urlsplit(self.path)
        if not self.server_of.allows(split.path, self.headers.get("Authorization", "")):
            self.server_of.requests.append((split.path, 401))
            body = b"Unauthorized\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="Gitea"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server_of.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": split.path,
            "QUERY_STRING": split.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        done = subprocess.run([self.backend], input=body, env=env, capture_output=True, check=False)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = done.stdout.partition(b"\n\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.server_of.requests.append((split.path, status))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve
