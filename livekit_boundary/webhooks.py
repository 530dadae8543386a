"""LiveKit webhook verification: a webhook is trusted only if `WebhookReceiver` accepts it, a JWT
signed with our API secret whose `sha256` claim is the hash of the exact body."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from google.protobuf import json_format
from livekit.api import TokenVerifier, WebhookReceiver
from rest_framework import status

from dispatchportal import metrics
from dispatchportal.exceptions import ApplicationError

logger = logging.getLogger(__name__)


class WebhookRejected(ApplicationError):
    status_code = status.HTTP_401_UNAUTHORIZED
    code = "unauthenticated"


def webhook_verify(*, body: bytes, authorization: str) -> Any:
    """The verified event (a `livekit.protocol.webhook.WebhookEvent`), or WebhookRejected."""
    token = authorization.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token:
        metrics.webhook_refused_record(reason="missing authorization")
        raise WebhookRejected("missing Authorization header (a JWT signed with the LiveKit API secret)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        metrics.webhook_refused_record(reason="body not utf-8")
        raise WebhookRejected("body is not UTF-8") from None
    receiver = WebhookReceiver(TokenVerifier(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET))
    try:
        return receiver.receive(text, token)
    except (json_format.ParseError, RecursionError):  # signed, but not a WebhookEvent
        metrics.webhook_refused_record(reason="malformed body")
        raise ApplicationError("body is not a LiveKit WebhookEvent (protojson)", field="body") from None
    except Exception as exc:  # noqa: BLE001  the SDK raises bare Exception for a hash mismatch
        # Name the kind of failure, never the token or the key.
        reason = (
            str(exc)
            if str(exc) in ("hash mismatch", "sha256 was not found in the token")
            else type(exc).__name__
        )
        logger.warning("webhook refused: %s", reason)
        metrics.webhook_refused_record(reason=reason)
        raise WebhookRejected(f"webhook signature or body hash invalid ({reason})") from None
