"""Fetch one web page on a caller's behalf, within limits, without ever reaching our own network.

Limits: http and https only; a total time budget for the whole fetch, redirects and body included; a byte cap
checked while streaming, so a larger page is never held in memory; a few redirects, each one checked again.
Addresses follow `addresses.refusal`. The check happens where the connection is made: the network backend under
httpx resolves the host name, refuses it if any of its addresses is refused, and connects to an address it just
checked. The address checked is therefore the address used, which closes the DNS-rebinding gap between a check
and a later, second resolution. Environment proxies are ignored: a proxy would make the connection instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import anyio.to_thread
import httpcore
import httpx

from imago_api.ai.addresses import refusal

ACCEPTED_TYPES = ("text/html", "text/plain")
USER_AGENT = "Imago-Summarizer/1.0"


class FetchError(Exception):
    """The page could not be fetched; the message says why, for the API caller."""


class UrlNotAllowed(FetchError):
    """The scheme or an address of the host is refused."""


class FetchFailed(FetchError):
    """The connection failed or the server answered with an error status."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class TooManyRedirects(FetchError):
    pass


class FetchTimeout(FetchError):
    pass


class UnsupportedContent(FetchError):
    """Not text/html or text/plain."""


class PageTooLarge(FetchError):
    pass


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 2 * 1024 * 1024
    timeout_s: float = 10.0
    max_redirects: int = 3
    allow_private: bool = False


@dataclass(frozen=True)
class Page:
    url: str  # after redirects
    media_type: str
    charset: str | None
    body: bytes


def check_url(url: str | httpx.URL, *, allow_private: bool) -> httpx.URL:
    """The URL if its scheme is allowed and its host is not a refused IP literal; names are checked at connect."""
    try:
        parsed = httpx.URL(url)
        host = parsed.host  # decoded from IDNA here: a malformed A-label (xn--) raises
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise UrlNotAllowed(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise UrlNotAllowed(f"only http and https URLs are fetched, not {parsed.scheme or 'a URL without a scheme'}")
    if not host:
        raise UrlNotAllowed("the URL has no host")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return parsed
    reason = refusal(str(literal), allow_private=allow_private)
    if reason:
        raise UrlNotAllowed(f"{parsed.host} is {reason}")
    return parsed


def resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Every address of `host`, or `UrlNotAllowed` if any one of them is refused (a name may point anywhere)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchFailed(f"cannot resolve {host}: {exc.strerror}") from exc
    except UnicodeError as exc:  # an empty label (a..b) or one over 63 characters: no name to resolve
        raise UrlNotAllowed(f"{host} is not a valid host name") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        reason = refusal(address, allow_private=allow_private)
        if reason:
            shown = host if host == address else f"{host} resolves to {address}, which"
            raise UrlNotAllowed(f"{shown} is {reason}")
    return addresses


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks and connects in one step, so the connection goes to an address that was checked."""

    def __init__(self, *, allow_private: bool):
        self.allow_private = allow_private
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable | None = None) -> httpcore.AsyncNetworkStream:
        addresses = await anyio.to_thread.run_sync(
            lambda: resolve(host, port, allow_private=self.allow_private), abandon_on_cancel=True)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"no address for {host}")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable | None = None) -> httpcore.AsyncNetworkStream:
        raise UrlNotAllowed("unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport on the checked backend."""

    def __init__(self, *, allow_private: bool):
        super().__init__(trust_env=False)
        # httpx takes no network backend, so its pool is rebuilt on ours (httpx is pinned in pyproject.toml).
        self._pool = httpcore.AsyncConnectionPool(ssl_context=httpx.create_ssl_context(),
                                                  network_backend=_CheckedBackend(allow_private=allow_private))


async def fetch_page(url: str, limits: FetchLimits) -> Page:
    """The page at `url` after at most `limits.max_redirects` redirects, or a `FetchError` saying why not."""
    target = check_url(url, allow_private=limits.allow_private)
    try:
        async with asyncio.timeout(limits.timeout_s):
            return await _fetch(target, limits)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise FetchTimeout(f"the page did not arrive within {limits.timeout_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise FetchFailed(f"could not fetch the page: {exc or type(exc).__name__}") from exc


async def _fetch(target: httpx.URL, limits: FetchLimits) -> Page:
    headers = {"User-Agent": USER_AGENT, "Accept": "text/html, text/plain;q=0.9"}
    async with httpx.AsyncClient(transport=_CheckedTransport(allow_private=limits.allow_private), headers=headers,
                                 timeout=limits.timeout_s, follow_redirects=False, trust_env=False) as client:
        request = client.build_request("GET", target)
        redirects = 0
        while True:
            response = await client.send(request, stream=True)
            try:
                if not response.is_redirect:
                    return await _read(response, limits)
                if redirects == limits.max_redirects:
                    raise TooManyRedirects(f"the page redirected more than {limits.max_redirects} times")
                redirects += 1
                request = response.next_request
                try:
                    check_url(request.url, allow_private=limits.allow_private)
                except UrlNotAllowed as exc:
                    raise UrlNotAllowed(f"redirected to {request.url}: {exc}") from exc
            finally:
                await response.aclose()


async def _read(response: httpx.Response, limits: FetchLimits) -> Page:
    if not response.is_success:
        raise FetchFailed(f"the page answered HTTP {response.status_code}", status=response.status_code)
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if media_type not in ACCEPTED_TYPES:
        raise UnsupportedContent(f"{media_type or 'a page without a content type'} is not text/html or text/plain")
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise PageTooLarge(f"the page is {int(declared)} bytes, over the {limits.max_bytes}-byte limit")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limits.max_bytes:
            raise PageTooLarge(f"the page is over the {limits.max_bytes}-byte limit")
    return Page(url=str(response.url), media_type=media_type, charset=response.charset_encoding, body=bytes(body))
