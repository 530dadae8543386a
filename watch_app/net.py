"""Outbound HTTP to addresses admins configured (alert targets, worker health URLs).

Every request has a timeout and never follows a redirect (a 3xx is an answer, not a hop), and a
URL must be https to a public address unless its admin allowed private and loopback addresses
for it. Errors name the host, never the path or query (a Slack URL's path is its secret).
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings


class UrlRefused(ValueError):
    """The URL is not allowed for this target; the message says why."""


class SendFailed(Exception):
    """No usable answer. `transient`: a connection error, a timeout, 429 or 5xx."""

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


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    return not ip.is_global


def url_check(url: str, *, allow_private: bool) -> None:
    """Raise UrlRefused unless the URL may be called. Without `allow_private`: https only (plain
    http too outside production) and every address the host resolves to must be public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused("must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise UrlRefused("must not carry a user name or password")
    if allow_private:
        return
    if parts.scheme != "https" and settings.PRODUCTION:
        raise UrlRefused("must be https (or allow a private address for this target)")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise UrlRefused(f"host {parts.hostname} does not resolve") from exc
    if any(_private(str(info[4][0])) for info in infos):
        raise UrlRefused(
            f"host {parts.hostname} is a private or loopback address; allow private addresses "
            "for this target if that is intended"
        )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None  # the 3xx surfaces as an HTTPError: redirects are never followed


_opener = urllib.request.build_opener(_NoRedirect())


def http_request(
    url: str,
    *,
    allow_private: bool,
    timeout_s: float,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    max_bytes: int = 65536,
) -> Answer:
    """GET (no body) or POST `body`. A 2xx is returned; anything else raises SendFailed."""
    try:
        url_check(url, allow_private=allow_private)
    except UrlRefused as exc:
        raise SendFailed(f"{safe_host(url)}: {exc}", transient=False) from None
    request = urllib.request.Request(
        url, data=body, headers=headers or {}, method="POST" if body is not None else "GET"
    )
    try:
        with _opener.open(request, timeout=timeout_s) as response:
            return Answer(status=response.status, body=response.read(max_bytes))
    except urllib.error.HTTPError as exc:
        status = exc.code
        transient = status >= 500 or status == 429
        what = "redirect not followed" if 300 <= status < 400 else "answered"
        raise SendFailed(f"{safe_host(url)} {what} {status}", transient=transient, status=status) from None
    except TimeoutError:
        raise SendFailed(f"{safe_host(url)} timed out after {timeout_s:g} s", transient=True) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SendFailed(f"cannot reach {safe_host(url)}: {type(reason).__name__}", transient=True) from None
