"""The probe a switch's confirmation sends through Caddy's listener from the proxy target: the
site's name goes in the request (Host, SNI) while the connection goes to 127.0.0.1, whichever
client the target has (curl, else python3). Run over a local sh against a local server."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gbdeploy.remote.local import LocalRemote
from gbdeploy.remote.probes import probe_through_proxy


class Site(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "commit": "abc1234", "host": self.headers["Host"]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def site_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("client", ["curl", "python3"])
def test_the_site_is_asked_by_its_name_on_the_proxy_itself(
    site_port: int, client: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    if client == "python3":  # a proxy container without curl
        tools = tmp_path / "bin"
        tools.mkdir()
        sh = shutil.which("sh")
        assert sh is not None
        os.symlink(sh, tools / "sh")
        os.symlink(os.path.realpath(sys.executable), tools / "python3")  # not a shell shim
        monkeypatch.setenv("PATH", str(tools))
    url = f"http://bots.example.invalid:{site_port}/health"  # a name no DNS answers

    answer = probe_through_proxy(url).run(LocalRemote())

    assert answer.ok and answer.commit == "abc1234", answer.describe()
    assert answer.data["host"] == f"bots.example.invalid:{site_port}"


def test_no_answer_says_why_in_one_line(tmp_path: Path):
    answer = probe_through_proxy("https://bots.example.invalid:1/health").run(LocalRemote())
    assert answer.http_status is None and not answer.ok
    assert "\n" not in answer.error and answer.error
