"""Webhooks: signed like LiveKit's, verifiable with WebhookReceiver, retried, and the switches."""

from __future__ import annotations

import time

import pytest
from livekit import api

from .support import call, eventually, join, join_token, leave

EMULATOR_SWITCH = "the emulator's webhook switches"


def _verify(server, received):
    receiver = api.WebhookReceiver(api.TokenVerifier(server.api_key, server.api_secret))
    return receiver.receive(received.body, received.authorization)


def _events_reach(receiver, room: str, count: int) -> list[str]:
    return eventually(lambda: len(receiver.events(room)) >= count and receiver.events(room), timeout=15)


def _of(receiver, room: str, event: str):
    return [r for r in receiver.received if r.json["event"] == event and r.json["room"]["name"] == room]


def test_room_lifecycle_webhooks_are_signed_and_verifiable(livekit_server, webhook_receiver):
    join(livekit_server, join_token(livekit_server, "hooked", "alice"))
    leave(livekit_server, "hooked", "alice")
    _events_reach(webhook_receiver, "hooked", 3)
    call(livekit_server, lambda lk: lk.room.delete_room(api.DeleteRoomRequest(room="hooked")))

    assert _events_reach(webhook_receiver, "hooked", 4) == [
        "room_started",
        "participant_joined",
        "participant_left",
        "room_finished",
    ]
    [first] = _of(webhook_receiver, "hooked", "participant_joined")
    assert first.content_type == "application/webhook+json"
    assert not first.authorization.startswith("Bearer ")
    event = _verify(livekit_server, first)
    assert event.id.startswith("EV_") and event.created_at > 0
    assert (event.room.name, event.participant.identity) == ("hooked", "alice")
    assert '"createdAt"' in first.body  # protojson: camelCase names
    [finished] = _of(webhook_receiver, "hooked", "room_finished")
    finished = _verify(livekit_server, finished)
    assert finished.room.name == "hooked" and finished.room_end_reason == 0  # the server never sets it


def test_a_changed_body_fails_verification(livekit_server, webhook_receiver):
    join(livekit_server, join_token(livekit_server, "tampered", "alice"))
    _events_reach(webhook_receiver, "tampered", 1)
    [genuine] = _of(webhook_receiver, "tampered", "room_started")

    genuine.body = genuine.body.replace("tampered", "tampere")
    with pytest.raises(Exception, match="hash mismatch"):
        _verify(livekit_server, genuine)


def test_deliveries_are_retried_after_a_5xx(livekit_server, webhook_receiver):
    webhook_receiver.fail_next = 2

    join(livekit_server, join_token(livekit_server, "flaky", "alice"))

    assert _events_reach(webhook_receiver, "flaky", 2) == ["room_started", "participant_joined"]
    assert webhook_receiver.failures == 2


@pytest.mark.emulator_only(EMULATOR_SWITCH)
def test_delivery_gives_up_after_the_retries(livekit_server, webhook_receiver):
    livekit_server.control.webhooks(max_retries=1)
    webhook_receiver.fail_next = 100

    livekit_server.control.join(join_token(livekit_server, "down-receiver", "alice"))
    status = livekit_server.control.wait_webhooks()

    assert webhook_receiver.failures == 4  # two events, two attempts each
    assert status["failed"] == 2 and status["sent"] == 0


@pytest.mark.emulator_only(EMULATOR_SWITCH)
def test_drop_switch(livekit_server, webhook_receiver):
    livekit_server.control.webhooks(drop=1)

    livekit_server.control.join(join_token(livekit_server, "dropped", "alice"))
    status = livekit_server.control.wait_webhooks()

    assert webhook_receiver.received == [] and status["dropped"] == 2


@pytest.mark.emulator_only(EMULATOR_SWITCH)
def test_duplicate_switch(livekit_server, webhook_receiver):
    livekit_server.control.webhooks(duplicate=1)

    livekit_server.control.join(join_token(livekit_server, "twice", "alice"))
    livekit_server.control.wait_webhooks()

    ids = [r.json["id"] for r in webhook_receiver.received]
    assert len(ids) == 4 and len(set(ids)) == 2  # same event id twice: deduplicate by id


@pytest.mark.emulator_only(EMULATOR_SWITCH)
def test_delay_switch(livekit_server, webhook_receiver):
    livekit_server.control.webhooks(delay_ms=300)
    sent = time.monotonic()

    livekit_server.control.join(join_token(livekit_server, "late", "alice"))
    eventually(lambda: webhook_receiver.received)

    assert webhook_receiver.received[0].at - sent >= 0.3


def test_agent_participants_produce_webhooks_too(livekit_server, webhook_receiver, add_worker):
    add_worker("triage")
    dispatch = call(
        livekit_server,
        lambda lk: lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(room="r", agent_name="triage")
        ),
    )
    eventually(lambda: "participant_joined" in webhook_receiver.events("r"), timeout=20)

    call(livekit_server, lambda lk: lk.agent_dispatch.delete_dispatch(dispatch.id, "r"))

    eventually(lambda: "participant_left" in webhook_receiver.events("r"), timeout=15)
    [left] = _of(webhook_receiver, "r", "participant_left")
    event = _verify(livekit_server, left)
    assert event.participant.kind == api.ParticipantInfo.Kind.AGENT
    assert event.participant.identity.startswith("agent-AJ_")
