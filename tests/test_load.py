"""The load generator the switch tests and bench count failed requests with: loopback only,
bounded in count and time, and it counts what a user would see fail."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from gbdeploy_sandbox.load import Load
from gbdeploy_sandbox.sshd import free_port


class Answers(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status":"ok","commit":"c0ffee1"}' if self.path == "/health" else b"{}"
        self.send_response(200 if self.path == "/health" else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    # shutdown() waits for the loop's next poll: 0.05 s, not the default half second
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_it_stops_by_itself_after_its_count(server: int):
    load = Load(f"http://127.0.0.1:{server}/health", clients=3, max_requests=60).start()
    for thread in load._threads:
        thread.join(30)  # no stop(): the clients end when the count is reached
    assert not any(thread.is_alive() for thread in load._threads)
    result = load.stop()
    assert 60 <= result.sent <= 63  # each client finishes the request it was sending
    assert result.failed == 0
    assert result.commits == {"c0ffee1": result.sent}


def test_it_stops_by_itself_after_its_time(server: int):
    load = Load(f"http://127.0.0.1:{server}/health", clients=2, max_seconds=0.3).start()
    for thread in load._threads:
        thread.join(10)  # no stop(): the clients end when the time is up
    assert not any(thread.is_alive() for thread in load._threads)
    assert load.stop().sent > 0


def test_refusals_and_error_answers_are_failures(server: int):
    with Load(f"http://127.0.0.1:{server}/other", clients=2, max_requests=20) as load:
        load.wait_for_requests(20)
    assert load.result.failures["503"] == load.result.sent
    with Load(f"http://127.0.0.1:{free_port()}/health", clients=2, max_requests=20) as load:
        load.wait_for_requests(20)
    assert load.result.failures["refused"] == load.result.failed == load.result.sent


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:80/health", "https://127.0.0.1:1/", "http://example.com/"]
)
def test_it_sends_only_to_loopback_http(url: str):
    with pytest.raises(ValueError, match=r"only sends to http://127\.0\.0\.1"):
        Load(url)
