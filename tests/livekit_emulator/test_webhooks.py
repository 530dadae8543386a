"""Webhooks: signed like LiveKit's, verifiable with WebhookReceiver, retried, and the switches."""

from __future__ import annotations

import time

import pytest
from livekit import api

from .support import call, eventually, join_token


def _verify(server, received):
    receiver = api.WebhookReceiver(api.TokenVerifier(server.api_key, server.api_secret))
    return receiver.receive(received.body, received.authorization)


def test_room_lifecycle_webhooks_are_signed_and_verifiable(livekit_server, webhook_receiver):
    livekit_server.control.join(join_token(livekit_server, "hooked", "alice"))
    livekit_server.control.leave("hooked", "alice")
    call(livekit_server, lambda lk: lk.room.delete_room(api.DeleteRoomRequest(room="hooked")))
    livekit_server.control.wait_webhooks()

    assert webhook_receiver.events() == [
        "room_started",
        "participant_joined",
        "participant_left",
        "room_finished",
    ]
    first = webhook_receiver.received[1]
    assert first.content_type == "application/webhook+json"
    assert not first.authorization.startswith("Bearer ")
    event = _verify(livekit_server, first)
    assert event.id.startswith("EV_") and event.created_at > 0
    assert (event.room.name, event.participant.identity) == ("hooked", "alice")
    assert '"createdAt"' in first.body  # protojson: camelCase names
    finished = _verify(livekit_server, webhook_receiver.received[-1])
    assert finished.room_end_reason == api.RoomEndReason.ROOM_END_API_DELETE


def test_a_changed_body_fails_verification(livekit_server, webhook_receiver):
    livekit_server.control.join(join_token(livekit_server, "tampered", "alice"))
    livekit_server.control.wait_webhooks()
    genuine = webhook_receiver.received[0]

    genuine.body = genuine.body.replace("tampered", "tampere")
    with pytest.raises(Exception, match="hash mismatch"):
        _verify(livekit_server, genuine)


def test_deliveries_are_retried_after_a_5xx(livekit_server, webhook_receiver):
    webhook_receiver.fail_next = 2

    livekit_server.control.join(join_token(livekit_server, "flaky", "alice"))
    status = livekit_server.control.wait_webhooks()

    assert webhook_receiver.failures == 2
    assert webhook_receiver.events() == ["room_started", "participant_joined"]
    assert status["sent"] == 2 and status["failed"] == 0


def test_delivery_gives_up_after_the_retries(livekit_server, webhook_receiver):
    livekit_server.control.webhooks(max_retries=1)
    webhook_receiver.fail_next = 100

    livekit_server.control.join(join_token(livekit_server, "down-receiver", "alice"))
    status = livekit_server.control.wait_webhooks()

    assert webhook_receiver.failures == 4  # two events, two attempts each
    assert status["failed"] == 2 and status["sent"] == 0


def test_drop_switch(livekit_server, webhook_receiver):
    livekit_server.control.webhooks(drop=1)

    livekit_server.control.join(join_token(livekit_server, "dropped", "alice"))
    status = livekit_server.control.wait_webhooks()

    assert webhook_receiver.received == [] and status["dropped"] == 2


def test_duplicate_switch(livekit_server, webhook_receiver):
    livekit_server.control.webhooks(duplicate=1)

    livekit_server.control.join(join_token(livekit_server, "twice", "alice"))
    livekit_server.control.wait_webhooks()

    ids = [r.json["id"] for r in webhook_receiver.received]
    assert len(ids) == 4 and len(set(ids)) == 2  # same event id twice: deduplicate by id


def test_delay_switch(livekit_server, webhook_receiver):
    livekit_server.control.webhooks(delay_ms=300)
    sent = time.monotonic()

    livekit_server.control.join(join_token(livekit_server, "late", "alice"))
    eventually(lambda: webhook_receiver.received)

    assert webhook_receiver.received[0].at - sent >= 0.3


def test_agent_participants_produce_webhooks_too(livekit_server, webhook_receiver):
    livekit_server.control.add_worker("triage", behavior="crash", crash_after_ms=20)

    call(
        livekit_server,
        lambda lk: lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(room="r", agent_name="triage")
        ),
    )
    eventually(lambda: "participant_left" in webhook_receiver.events())

    left = _verify(livekit_server, webhook_receiver.received[-1])
    assert left.participant.kind == api.ParticipantInfo.Kind.AGENT
    assert left.participant.identity.startswith("agent-AJ_")
