"""How the forge client's requests travel: an httpx client whose certificates are always verified
(against forge.ca_file when it is set), that follows no redirect and sends the token as
`Authorization: token`; a warning when that token would cross the network in clear; and a deadline
on the whole answer. The httpx transport it is given is the tests' seam.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import sys
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx

from ..config import ForgeSettings, Secret
from ..errors import ConfigError
from .endpoints import API_PREFIX


class TokenAuth(httpx.Auth):
    """`Authorization: token <T>` on every request; shows itself as `***`."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"token {self._token.reveal()}"
        yield request

    def __repr__(self) -> str:
        return "TokenAuth('***')"


def http_client(
    settings: ForgeSettings, base_url: str, transport: httpx.BaseTransport | None
) -> httpx.Client:
    """The httpx client for the API at `base_url`; warns when a token would go over plain http."""
    client = httpx.Client(
        base_url=base_url + API_PREFIX,
        timeout=httpx.Timeout(settings.timeout, connect=min(10.0, settings.timeout)),
        transport=transport,
        auth=TokenAuth(settings.token) if settings.token else None,
        headers={"Accept": "application/json", "User-Agent": "gbdeploy"},
        follow_redirects=False,
        verify=_verification(settings),
    )
    if settings.token:
        _warn_plain_http(base_url)
    return client


class Overdue(Exception):
    """The answer did not arrive whole before the request's deadline."""


def read_before_deadline(response: httpx.Response, overdue: Callable[[], bool]) -> None:
    """Read a streamed response's whole body, then close it; `Overdue` at the first chunk that
    arrives once `overdue()` says the deadline has passed."""
    response.stream = _DeadlineStream(response.stream, overdue)
    try:
        response.read()
    finally:
        response.close()


class _DeadlineStream(httpx.SyncByteStream):
    """A response body that stops with Overdue at the first chunk read after the deadline."""

    def __init__(
        self, stream: httpx.SyncByteStream | httpx.AsyncByteStream, overdue: Callable[[], bool]
    ) -> None:
        assert isinstance(stream, httpx.SyncByteStream)
        self._stream = stream
        self._overdue = overdue

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if self._overdue():
                raise Overdue
            yield chunk

    def close(self) -> None:
        self._stream.close()


_warned_plain_http: set[str] = set()  # forge URLs already warned about in this command


def _warn_plain_http(base_url: str) -> None:
    """A token over plain http to another machine travels in clear: say it once per command."""
    split = urlsplit(base_url)
    host = (split.hostname or "").lower()
    if split.scheme != "http" or base_url in _warned_plain_http:
        return
    if host == "localhost" or _is_loopback(host):
        return
    _warned_plain_http.add(base_url)
    print(
        f"warning: the forge token goes in clear over plain http to {base_url}: use "
        "https:// in forge.url, with forge.ca_file naming the CA certificate that signed the "
        "server's certificate if it is not a public one",
        file=sys.stderr,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _verification(settings: ForgeSettings) -> ssl.SSLContext | bool:
    """Certificates are always verified: against forge.ca_file when it is set."""
    if not settings.ca_file:
        return True
    path = os.path.expanduser(settings.ca_file)
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            "forge.ca_file",
            f"cannot read a CA certificate from {path}: {error}",
            hint="name a PEM file with the certificate of the CA that signed forge.url's",
        ) from None
