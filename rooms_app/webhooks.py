"""LiveKit webhooks: verified, checked and recorded on the request; applied off it.

A webhook is trusted only if `livekit_boundary.webhooks.webhook_verify` accepts it: a JWT
signed with our API secret whose `sha256` claim is the hash of the exact body. Anything else
is refused before a single row is written. A trusted event is recorded in one short
statement whose unique event id makes LiveKit's redeliveries harmless (delivery is
at-least-once); LiveKit hears 200 once the event is durable. What the event changes in the
ledger (and the LiveKit calls that causes) is applied by a Celery task the record queues, in
the order events were recorded (`rooms_app.services.webhook_events`), so the answer stays
fast whatever the ledger or LiveKit is doing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from dispatchportal import metrics
from dispatchportal.exceptions import ApplicationError
from dispatchportal.limits import MAX_NAME_LENGTH
from dispatchportal.serializers import name_problem
from livekit_boundary.webhooks import webhook_verify

from . import services
from .models import Room, WebhookEvent

logger = logging.getLogger(__name__)


class Field:
    """The ledger's column sizes a webhook's values must fit."""

    EVENT_ID_MAX = WebhookEvent._meta.get_field("event_id").max_length
    EVENT_MAX = WebhookEvent._meta.get_field("event").max_length
    SID_MAX = Room._meta.get_field("sid").max_length
    AGENT_NAME_MAX = WebhookEvent._meta.get_field("agent_name").max_length


@dataclass(slots=True)
class WebhookOutcome:
    event: str
    event_id: str
    duplicate: bool = False


def webhook_receive(*, body: bytes, authorization: str) -> WebhookOutcome:
    event = webhook_verify(body=body, authorization=authorization)
    problems = webhook_event_problems(event=event)
    if problems:
        metrics.webhook_refused_record(reason="invalid fields")
        raise ApplicationError(problems)
    if not event.id:
        # LiveKit redelivers the same body: its digest stands in for the missing id.
        event.id = f"sha256:{hashlib.sha256(body).hexdigest()[:56]}"
    return webhook_event_handle(event=event)


def webhook_event_problems(*, event: Any) -> dict[str, list[str]]:
    """`{field: [message]}` for what no LiveKit server sends and the ledger cannot hold:
    oversize ids and names, names with control characters. Checked before anything is
    written, so a signed but absurd event is a 400, not a database error."""
    problems: dict[str, list[str]] = {}

    def check(field: str, value: str, limit: int | None, *, name: bool = False) -> None:
        if limit is not None and len(value) > limit:
            problems[field] = [f"Ensure this field has no more than {limit} characters."]
        elif name and (problem := name_problem(value)):
            problems[field] = [problem]

    check("id", event.id, Field.EVENT_ID_MAX)
    check("event", event.event, Field.EVENT_MAX)
    check("room.name", event.room.name, MAX_NAME_LENGTH, name=True)
    check("room.sid", event.room.sid, Field.SID_MAX)
    if event.HasField("participant"):
        check("participant.identity", event.participant.identity, MAX_NAME_LENGTH, name=True)
        agent_name = event.participant.attributes.get("lk.agent_name", "")
        check("participant.attributes.lk.agent_name", agent_name, Field.AGENT_NAME_MAX)
    return problems


def webhook_event_handle(*, event: Any) -> WebhookOutcome:
    """Record one verified event, once per event id; the ledger takes it in off the request
    (`services.webhook_events_apply`)."""
    metrics.webhook_event_record(event=event.event)
    recorded = services.webhook_event_record(event=event)
    return WebhookOutcome(event=event.event, event_id=event.id, duplicate=not recorded)
