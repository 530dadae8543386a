"""Access tokens as LiveKit's server checks them: HS256 JWTs signed with one of the configured
API secrets (`iss` names the key), the grant each API method needs, and the signature LiveKit
puts on outgoing webhooks. Error messages are LiveKit's own."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

BEARER = "Bearer "
# go-jose, which LiveKit uses, accepts tokens up to a minute past their expiry.
LEEWAY_SECONDS = 60
WEBHOOK_TOKEN_TTL = 5 * 60


class AuthError(Exception):
    """Rejected by the auth middleware: HTTP 401 with the message as plain text."""


class PermissionDenied(Exception):
    """A valid token without the grant a method needs: Twirp `unauthenticated`."""

    def __init__(self) -> None:
        super().__init__("permissions denied")


@dataclass(frozen=True, slots=True)
class Claims:
    api_key: str
    identity: str = ""
    name: str = ""
    metadata: str = ""
    kind: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    # The `video` grant with its camelCase keys as they appear in the JWT.
    video: dict[str, Any] = field(default_factory=dict)
    room_config: dict[str, Any] | None = None

    def grant(self, name: str) -> bool:
        return bool(self.video.get(name))

    @property
    def room(self) -> str:
        return str(self.video.get("room") or "")


class KeyRing:
    """The API keys a server accepts, and token verification against them."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        if not keys:
            raise ValueError("at least one API key is required")
        self.keys = dict(keys)

    def verify(self, token: str) -> Claims:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError("invalid authorization token") from exc
        api_key = unverified.get("iss")
        secret = self.keys.get(api_key) if isinstance(api_key, str) else None
        if not secret:
            raise AuthError(f"invalid API key: {api_key or ''}")
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], issuer=api_key, leeway=LEEWAY_SECONDS)
        except jwt.PyJWTError as exc:
            # LiveKit also echoes the token here; a test stand-in has no need to.
            raise AuthError(f"invalid token: error: {exc}") from exc
        return Claims(
            api_key=api_key,
            identity=str(claims.get("sub") or ""),
            name=str(claims.get("name") or ""),
            metadata=str(claims.get("metadata") or ""),
            kind=str(claims.get("kind") or ""),
            attributes=dict(claims.get("attributes") or {}),
            video=dict(claims.get("video") or {}),
            room_config=claims.get("roomConfig") or None,
        )

    def verify_header(self, header: str | None) -> Claims | None:
        """Claims from an `Authorization` header; None when there is no header, which LiveKit
        lets through so that the method's own grant check answers "permissions denied"."""
        if not header:
            return None
        if not header.startswith(BEARER):
            raise AuthError(f"invalid authorization header. Must start with {BEARER}")
        return self.verify(header[len(BEARER) :])


def ensure_create(claims: Claims | None) -> None:
    if claims is None or not claims.grant("roomCreate"):
        raise PermissionDenied()


def ensure_list(claims: Claims | None) -> None:
    if claims is None or not claims.grant("roomList"):
        raise PermissionDenied()


def ensure_admin(claims: Claims | None, room: str) -> None:
    """roomAdmin is scoped: it only covers the room named in the same grant."""
    if claims is None or not claims.grant("roomAdmin") or claims.room != room:
        raise PermissionDenied()


def ensure_join(claims: Claims) -> str:
    """The room a participant token may join."""
    if not claims.grant("roomJoin"):
        raise PermissionDenied()
    return claims.room


def sign_webhook(body: bytes, api_key: str, api_secret: str, *, now: float | None = None) -> str:
    """The `Authorization` value LiveKit sends with a webhook: a JWT (no `Bearer `) valid for
    five minutes whose `sha256` claim is the base64 SHA-256 of the exact body."""
    issued = int(now if now is not None else time.time())
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    claims = {"iss": api_key, "nbf": issued, "exp": issued + WEBHOOK_TOKEN_TTL, "sha256": digest}
    return jwt.encode(claims, api_secret, algorithm="HS256")
