"""Outbound HTTP to addresses admins configured (alert targets, worker health URLs).

Every request has one deadline over the whole exchange (name resolution, connect, request,
status line, headers and body: a peer that trickles, hangs or never finishes is cut off at the
deadline), a cap on the answer's size, and never follows a redirect (a 3xx is an answer, not a
hop). It returns a 2xx answer or raises SendFailed with a readable message; nothing else
escapes. A URL must be https to a public address unless its admin allowed private, loopback
and link-local addresses for it; the addresses are checked when the URL is saved and again,
on the very addresses connected to, at every request (DNS may change). Errors name the host,
never the path or query (a Slack URL's path is its secret).

Built on aiohttp (already the emulator's server): `asyncio.timeout` bounds the whole exchange,
which a per-read socket timeout cannot do against a peer sending a byte a second.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings


class UrlRefused(ValueError):
    """The URL is not allowed for this target; the message says why."""


class SendFailed(Exception):
    """No usable answer. `transient`: worth another attempt later (a connection error, a
    timeout, an answer that is not HTTP, an early close, 429 or 5xx)."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.status = status


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


def safe_host(url: str) -> str:
    """What logs and errors may show of a URL: scheme and host, no path, query or userinfo."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


def address_refusal(address: str) -> str:
    """Why `address` needs the private-address permission ('' when it is public)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return "a link-local address (169.254.0.0/16, fe80::/10: where cloud metadata services answer)"
    if ip.is_loopback:
        return "a loopback address"
    if not ip.is_global:
        return "a private address"
    return ""


def _refuse_address(host: str, address: str) -> None:
    why = address_refusal(address)
    if why:
        raise UrlRefused(
            f"host {host} is {why}: refused unless 'allow private, loopback and link-local "
            "addresses' is ticked for this URL"
        )


def _shape_check(url: str, *, allow_private: bool) -> None:
    """The checks that need no DNS: scheme, host, no userinfo, https, an IP literal's range."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused("must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise UrlRefused("must not carry a user name or password")
    if allow_private:
        return
    if parts.scheme != "https" and settings.PRODUCTION:
        raise UrlRefused("must be https (or allow private addresses for this URL)")
    try:
        ipaddress.ip_address(parts.hostname.split("%")[0])
    except ValueError:
        return  # a name: its addresses are checked when it is resolved
    _refuse_address(parts.hostname, parts.hostname)


def url_check(url: str, *, allow_private: bool) -> None:
    """Raise UrlRefused unless the URL may be called. Without `allow_private`: https only (plain
    http too outside production) and every address the host resolves to must be public."""
    _shape_check(url, allow_private=allow_private)
    if allow_private:
        return
    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise UrlRefused(f"host {parts.hostname} does not resolve") from exc
    for info in infos:
        _refuse_address(str(parts.hostname), str(info[4][0]))


class _CheckedResolver(AbstractResolver):
    """Resolves names for the connection and refuses them when any address is not allowed:
    the addresses checked are the addresses connected to (no window for DNS to change)."""

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            for result in found:
                _refuse_address(host, result["host"])
        return found

    async def close(self) -> None:
        await self._inner.close()


def _not_http(exc: aiohttp.ClientResponseError) -> str:
    # aiohttp's parser message spans lines ("Bad status line:", what it expected, the bytes
    # received, a caret); one line of it reads well in admin.
    lines = [line.strip() for line in str(exc.message).splitlines()]
    return " ".join(line for line in lines if line and line != "^")[:200]


async def _exchange(
    url: str,
    *,
    allow_private: bool,
    deadline_s: float,
    body: bytes | None,
    headers: dict[str, str],
    max_bytes: int,
) -> Answer:
    host = safe_host(url)
    stage, received = "connecting", 0
    try:
        async with asyncio.timeout(deadline_s):
            connector = aiohttp.TCPConnector(
                resolver=_CheckedResolver(allow_private=allow_private), force_close=True
            )
            async with (
                aiohttp.ClientSession(
                    connector=connector,
                    timeout=aiohttp.ClientTimeout(total=deadline_s),
                    auto_decompress=False,  # the size cap counts the bytes received
                    trust_env=False,  # never through a proxy from the environment
                ) as session,
                session.request(
                    "POST" if body is not None else "GET",
                    url,
                    data=body,
                    headers={"Accept-Encoding": "identity", **headers},
                    allow_redirects=False,
                ) as response,
            ):
                stage = "reading the body"
                if response.content_length is not None and response.content_length > max_bytes:
                    raise SendFailed(
                        f"{host} answered {response.content_length} bytes, over the {max_bytes}-byte cap",
                        transient=False,
                        status=response.status,
                    )
                chunks = []
                async for chunk in response.content.iter_chunked(16384):
                    received += len(chunk)
                    if received > max_bytes:
                        raise SendFailed(
                            f"{host} answered more than the {max_bytes}-byte cap",
                            transient=False,
                            status=response.status,
                        )
                    chunks.append(chunk)
                status = response.status
    except SendFailed:
        raise
    except UrlRefused as exc:
        raise SendFailed(f"{host}: {exc}", transient=False) from None
    except TimeoutError:
        if stage == "connecting":
            stage = "before a complete status line and headers"
        else:
            stage = f"{stage} ({received} bytes so far)"
        raise SendFailed(f"{host} timed out after {deadline_s:g} s {stage}", transient=True) from None
    except aiohttp.ClientResponseError as exc:  # the parser's verdict: not HTTP at all
        raise SendFailed(f"{host} did not answer HTTP: {_not_http(exc)}", transient=True) from None
    except aiohttp.ServerDisconnectedError:
        raise SendFailed(f"{host} closed the connection without answering", transient=True) from None
    except aiohttp.ClientPayloadError:
        raise SendFailed(
            f"{host} closed the connection in the middle of the body ({received} bytes)", transient=True
        ) from None
    except aiohttp.ClientConnectorDNSError:
        raise SendFailed(f"cannot reach {host}: the name does not resolve", transient=True) from None
    except aiohttp.ClientConnectorError as exc:
        raise SendFailed(f"cannot reach {host}: {type(exc.os_error).__name__}", transient=True) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise SendFailed(f"cannot reach {host}: {type(exc).__name__}", transient=True) from None
    if 200 <= status < 300:
        return Answer(status=status, body=b"".join(chunks))
    what = "redirect not followed" if 300 <= status < 400 else "answered"
    raise SendFailed(f"{host} {what} {status}", transient=status >= 500 or status == 429, status=status)


def http_request(
    url: str,
    *,
    allow_private: bool,
    deadline_s: float,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    max_bytes: int | None = None,
) -> Answer:
    """GET (no body) or POST `body`, all of it within `deadline_s` seconds. A 2xx is returned
    with its body (at most `max_bytes`, default OUTBOUND_MAX_ANSWER_BYTES); anything else
    raises SendFailed."""
    try:
        _shape_check(url, allow_private=allow_private)
    except UrlRefused as exc:
        raise SendFailed(f"{safe_host(url)}: {exc}", transient=False) from None
    cap = int(max_bytes if max_bytes is not None else settings.OUTBOUND_MAX_ANSWER_BYTES)
    exchange: Any = _exchange(
        url,
        allow_private=allow_private,
        deadline_s=deadline_s,
        body=body,
        headers=headers or {},
        max_bytes=cap,
    )
    # Not asyncio.run: it waits for the resolver's thread at exit, and a hung DNS server would
    # outlast the deadline; close() leaves that thread to finish on its own.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(exchange)
    finally:
        loop.close()
