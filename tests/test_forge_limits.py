"""The forge client against a forge that misbehaves on the wire, over a real loopback socket: an
answer trickled a byte at a time ends at forge.timeout, and a server message that echoes the
token never shows any part of it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import TEST_TOKEN

TRICKLE_EVERY = 0.01  # seconds between two bytes, as the slow forge of issue 19 sends them


class LoopbackForge(ThreadingHTTPServer):
    """Answers every request with `status` and `body`; `trickle` sends the body a byte every
    10 ms (headers first, with the whole Content-Length, as a slow server does)."""

    daemon_threads = True

    def __init__(self, status: int, body: bytes, *, trickle: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = (status, body, trickle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackForge

    def do_GET(self) -> None:
        status, body, trickle = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if not trickle:
                self.wfile.write(body)
                return
            for index in range(len(body)):
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
                time.sleep(TRICKLE_EVERY)  # the server's pace, not a wait in the test
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator:
    servers: list[LoopbackForge] = []

    def start(status: int, body: bytes, *, trickle: bool = False) -> LoopbackForge:
        server = LoopbackForge(status, body, trickle=trickle)
        # shutdown() waits for the loop's next poll: 0.05 s, not the default half second
        poll = {"poll_interval": 0.05}
        threading.Thread(target=server.serve_forever, kwargs=poll, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def project(tmp_path: Path, gbdeploy_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GBDEPLOY_FORGE_TOKEN", TEST_TOKEN)
    return tmp_path


def configure(project: Path, forge: LoopbackForge, timeout: float) -> None:
    (project / "gbdeploy.yaml").write_text(
        f"forge: {{url: '{forge.url}', timeout: {timeout}}}\n"
        "release: {poll_interval: 0.05, appear_timeout: 1}\n"
    )


RUN = {
    "id": 7, "index_in_repo": 7, "status": "running", "commit_sha": "a" * 40, "event": "push",
    "trigger_event": "push", "workflow_id": "botserver.yaml", "prettyref": "main", "title": "t",
    "html_url": "http://127.0.0.1/x", "started": "2026-01-01T00:00:00Z",
    "stopped": "1970-01-01T00:00:00Z", "created": "2026-01-01T00:00:00Z",
    "updated": "2026-01-01T00:00:00Z", "duration": 1,
}  # fmt: skip
# About 3 s at a byte every 10 ms: six times the forge.timeout of these tests.
RUNS = json.dumps({"workflow_runs": [RUN], "total_count": 1}).encode().ljust(300)


def test_runs_from_a_trickling_forge_ends_at_forge_timeout(project, run_gbdeploy, serve):
    forge = serve(200, RUNS, trickle=True)
    configure(project, forge, timeout=0.5)

    result = run_gbdeploy("runs")

    assert result.code == 1, result.text
    assert result.err.startswith("gbdeploy: error: Forgejo at http://127.0.0.1:")
    assert "did not finish answering to listing the runs of" in result.err
    assert "within forge.timeout (0.5 s)" in result.err
    assert "Traceback" not in result.text


def test_wait_on_a_trickling_forge_ends_at_forge_timeout(project, run_gbdeploy, serve):
    forge = serve(200, json.dumps(RUN).encode().ljust(300), trickle=True)
    configure(project, forge, timeout=0.5)

    result = run_gbdeploy("wait", "--run-id", "7", "--timeout", "60")

    assert result.code == 1, result.text
    assert "did not finish answering to reading run 7 of" in result.err
    assert "within forge.timeout (0.5 s)" in result.err


@pytest.mark.parametrize("status", [403, 404, 422])
def test_a_server_message_echoing_the_token_at_the_cut_shows_none_of_it(
    project, run_gbdeploy, serve, status
):
    # The token straddles the 300th character of the message gbdeploy shows.
    message = "x" * (300 - len(TEST_TOKEN) // 2) + TEST_TOKEN + " was refused"
    forge = serve(status, json.dumps({"message": message, "url": "http://x"}).encode())
    configure(project, forge, timeout=5)

    result = run_gbdeploy("runs")

    assert result.code != 0
    assert "xxx***" in result.err, result.err
    for start in range(len(TEST_TOKEN) - 4):
        assert TEST_TOKEN[start : start + 5] not in result.text, result.text
