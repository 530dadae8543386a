"""Access tokens as LiveKit's server checks them: HS256 JWTs signed with one of the configured
API secrets (`iss` names the key), the grant each API method needs, and the signature LiveKit
puts on outgoing webhooks. Error messages are LiveKit's own."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

BEARER = "Bearer "
# go-jose, which LiveKit uses, accepts tokens up to a minute past their expiry.
LEEWAY_SECONDS = 60
WEBHOOK_TOKEN_TTL = 5 * 60


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
    # The `sip` grant (admin, call), checked by the SIP service.
    sip: dict[str, Any] = field(default_factory=dict)

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
        # HS256 checked by hand rather than with PyJWT, which decodes slowly enough (two decodes
        # to find the key first) to dominate a request: each API call carries a fresh token.
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            header = json.loads(_b64decode(header_b64))
            payload = json.loads(_b64decode(payload_b64))
            signature = _b64decode(signature_b64)
        except (ValueError, binascii.Error) as exc:
            raise AuthError("invalid authorization token") from exc
        if not isinstance(header, dict) or not isinstance(payload, dict):
            raise AuthError("invalid authorization token")
        api_key = payload.get("iss")
        secret = self.keys.get(api_key) if isinstance(api_key, str) else None
        if not secret:
            raise AuthError(f"invalid API key: {api_key or ''}")
        # LiveKit echoes the caller's own token in these messages (golang-jwt v5's wording).
        invalid = f"invalid token: {token}, error: "
        if header.get("alg") != "HS256":
            raise AuthError(
                f"{invalid}token signature is invalid: signing method {header.get('alg')} is invalid"
            )
        signed = f"{header_b64}.{payload_b64}".encode()
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise AuthError(f"{invalid}token signature is invalid: signature is invalid")
        now = time.time()
        expires, not_before = payload.get("exp"), payload.get("nbf")
        if expires is not None and (not _is_number(expires) or now > expires + LEEWAY_SECONDS):
            raise AuthError(f"{invalid}token has invalid claims: token is expired")
        if not_before is not None and (not _is_number(not_before) or now < not_before - LEEWAY_SECONDS):
            raise AuthError(f"{invalid}token has invalid claims: token is not valid yet")
        return Claims(
            api_key=api_key,
            identity=str(payload.get("sub") or ""),
            name=str(payload.get("name") or ""),
            metadata=str(payload.get("metadata") or ""),
            kind=str(payload.get("kind") or ""),
            attributes=dict(payload.get("attributes") or {}),
            video=dict(payload.get("video") or {}),
            room_config=payload.get("roomConfig") or None,
            sip=dict(payload.get("sip") or {}),
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


def ensure_video_grant(claims: Claims | None, grant: str) -> None:
    if claims is None or not claims.grant(grant):
        raise PermissionDenied()


def ensure_sip_admin(claims: Claims | None) -> None:
    if claims is None or not claims.sip.get("admin"):
        raise PermissionDenied()


def ensure_agent(claims: Claims | None) -> None:
    """The worker WebSocket (`/agent`) needs `video.agent`."""
    if claims is None or not claims.grant("agent"):
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
