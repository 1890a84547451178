"""Steady load through a proxy on loopback, counting the requests that fail: what a user of a
deploy notices. For tests and the bench only.

`clients` threads each send `GET PATH` in a loop, each request on a new connection (a browser
retries a GET whose reused keep-alive connection was closed under it, so only a fresh connection's
failure is one a user sees). A request fails when it cannot connect, gets no complete answer
within `request_timeout`, or is answered with anything but 200. The load stops by itself after
`max_seconds` or `max_requests`, whichever comes first, and only ever reaches 127.0.0.1.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # why, e.g. "502", "refused"
    commits: Counter[str] = field(default_factory=Counter)  # which commit answered, how often
    seconds: float = 0.0

    def summary(self) -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in self.failures.most_common()) or "none"
        return f"{self.sent} requests in {self.seconds:.1f}s, {self.failed} failed ({why})"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Load:
    """`with Load("http://127.0.0.1:PORT/health", clients=8) as load: …` then `load.result`."""

    def __init__(
        self,
        url: str,
        *,
        clients: int = 8,
        max_seconds: float = 120.0,
        max_requests: int = 200_000,
        request_timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not _is_loopback(parts.hostname or ""):
            raise ValueError(f"the load generator only sends to http://127.0.0.1, not {url}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path or "/"
        self.clients = max(1, min(clients, 64))
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.request_timeout = request_timeout
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0

    def start(self) -> Load:
        self._started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._client, name=f"load-{n}", daemon=True)
            for n in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.request_timeout + 5)
        self.result.seconds = time.monotonic() - self._started
        return self.result

    def wait_for_requests(self, count: int, *, deadline_seconds: float = 30.0) -> bool:
        """Until `count` more requests were sent (the load is really running), or the deadline."""
        target = self.result.sent + count
        deadline = time.monotonic() + deadline_seconds
        while self.result.sent < target and time.monotonic() < deadline:
            if self._stop.is_set():
                break  # stopped (or its count reached): no more requests will come
            time.sleep(0.01)
        return self.result.sent >= target

    def _client(self) -> None:
        deadline = self._started + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self.result.sent >= self.max_requests:
                    self._stop.set()
                    return
            failure, commit = self._one_request()
            with self._lock:
                self.result.sent += 1
                if failure:
                    self.result.failed += 1
                    self.result.failures[failure] += 1
                elif commit:
                    self.result.commits[commit] += 1

    def _one_request(self) -> tuple[str | None, str | None]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.request_timeout)
        try:
            connection.request("GET", self.path, headers={"Connection": "close"})
            answer = connection.getresponse()
            body = answer.read()
        except ConnectionRefusedError:
            return "refused", None
        except (OSError, http.client.HTTPException) as error:
            return type(error).__name__, None
        finally:
            connection.close()
        if answer.status != 200:
            return str(answer.status), None
        try:
            return None, str(json.loads(body).get("commit", ""))
        except (ValueError, AttributeError):
            return None, None

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
