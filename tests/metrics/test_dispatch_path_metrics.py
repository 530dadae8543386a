"""The dispatch path's own counters, as a scrape shows them after the real code ran: status
transitions and time to join, reconcile passes, webhooks, LiveKit errors."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from livekit import api as lkapi

from livekit_boundary.client import LiveKitError, livekit_call
from rooms_app import services as room_services
from rooms_app.models import Dispatch, Room
from rooms_app.reconcile import reconcile_run

from .test_metrics import sample

pytestmark = pytest.mark.django_db


class Scrapes:
    """Before/after scrapes of /metrics, compared sample by sample."""

    def __init__(self, client) -> None:
        self.client = client
        self.before = self._get()

    def _get(self) -> str:
        return self.client.get("/metrics").content.decode()

    def delta(self, name: str, **labels: str) -> float:
        return sample(self._get(), name, **labels) - sample(self.before, name, **labels)


def test_transitions_are_counted_and_the_time_to_join_observed(client):
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    room = Room.objects.create(name=f"room-{agent}", status="active")
    dispatch = Dispatch.objects.create(room=room, agent_name=agent, source="rule", status="pending")
    scrapes = Scrapes(client)
    requested = timezone.now() - timedelta(seconds=2)

    room_services.dispatch_transition(
        dispatch=dispatch,
        to="requested",
        expect=("pending",),
        detail="CreateDispatch answered",
        requested_at=requested,
    )
    room_services.dispatch_transition(
        dispatch=dispatch,
        to="agent_joined",
        expect=("requested",),
        detail="joined",
        joined_at=requested + timedelta(seconds=1.2),
    )

    assert scrapes.delta("dispatchportal_dispatches_total", status="requested", agent=agent) == 1
    assert scrapes.delta("dispatchportal_dispatches_total", status="agent_joined", agent=agent) == 1
    histogram = "dispatchportal_dispatch_time_to_join_seconds"
    assert scrapes.delta(histogram + "_count", agent=agent) == 1
    assert scrapes.delta(histogram + "_bucket", agent=agent, le="1.0") == 0
    assert scrapes.delta(histogram + "_bucket", agent=agent, le="2.0") == 1


def test_a_reconcile_pass_is_timed(client, lk):
    scrapes = Scrapes(client)

    report = reconcile_run(room_names=[])

    assert not report.skipped and not report.error
    assert scrapes.delta("dispatchportal_reconcile_duration_seconds_count", outcome="ok") == 1


def test_transitions_made_by_reconcile_are_counted_too(client, lk):
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    room = Room.objects.create(name=f"gone-{agent}", status="active", started_at=timezone.now())
    Dispatch.objects.create(room=room, agent_name=agent, source="rule", status="requested")
    scrapes = Scrapes(client)

    reconcile_run()  # LiveKit (the emulator) has no such room: its dispatch is closed

    assert Dispatch.objects.get(room=room).status == "room_closed"
    assert scrapes.delta("dispatchportal_dispatches_total", status="room_closed", agent=agent) == 1


def _signed(body: bytes, secret: str, key: str) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return lkapi.AccessToken(key, secret).with_sha256(digest).to_jwt()


def test_webhooks_are_counted_by_event_and_refusals_by_reason(client, lk):
    scrapes = Scrapes(client)
    body = json.dumps(
        {"event": "participant_left", "room": {"name": "nowhere-1"}, "id": f"EV_{uuid.uuid4().hex[:12]}"}
    ).encode()

    good = client.post(
        "/livekit/webhook",
        body,
        content_type="application/webhook+json",
        HTTP_AUTHORIZATION=_signed(body, lk.api_secret, lk.api_key),
    )
    forged = client.post(
        "/livekit/webhook",
        body,
        content_type="application/webhook+json",
        HTTP_AUTHORIZATION=_signed(body, "forged-secret-that-is-long-enough-0123456789", lk.api_key),
    )
    missing = client.post("/livekit/webhook", body, content_type="application/webhook+json")

    assert (good.status_code, forged.status_code, missing.status_code) == (200, 401, 401)
    assert scrapes.delta("dispatchportal_webhook_events_total", event="participant_left") == 1
    failures = "dispatchportal_webhook_verification_failures_total"
    assert scrapes.delta(failures, reason="missing authorization") == 1
    assert scrapes.delta(failures, reason="InvalidSignatureError") == 1


def test_livekit_errors_are_counted_by_method_and_code(client, lk, settings):
    scrapes = Scrapes(client)
    lk.control.faults(down=True)
    with pytest.raises(LiveKitError):
        livekit_call("list_rooms")
    lk.control.faults()
    settings.LIVEKIT_API_SECRET = "wrong-secret-that-is-long-enough-for-hs256-0123456789"
    with pytest.raises(LiveKitError):
        livekit_call("list_dispatches", "room-1")

    errors = "dispatchportal_livekit_api_errors_total"
    assert scrapes.delta(errors, method="ListRooms", code="unreachable") == 1
    assert scrapes.delta(errors, method="ListDispatch", code="http_401") == 1
