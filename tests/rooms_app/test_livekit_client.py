"""The LiveKit client against the emulator over HTTP: answers as dataclasses, and every
failure mapped to transient (retry) or rejected (final), never leaking the secret."""

from __future__ import annotations

import time

import pytest

from livekit_boundary.client import (
    LiveKitAuthRejected,
    LiveKitNotFound,
    LiveKitRejected,
    LiveKitUnavailable,
    livekit_call,
)


def test_dispatch_round_trip(lk):
    lk.control.add_worker("helper")
    created = livekit_call("create_dispatch", "room-a", "helper", '{"k": 1}')
    assert created.id.startswith("AD_") and created.agent_name == "helper" and created.jobs == ()
    found = {d.agent_name: d for d in livekit_call("list_dispatches", "room-a")}
    # The implicit "" dispatch LiveKit gives a room created without agents is listed too.
    assert set(found) == {"", "helper"}
    people = livekit_call("list_participants", "room-a")
    agent = next(p for p in people if p.is_agent)
    assert agent.agent_name == "helper" and agent.identity == found["helper"].jobs[0].participant_identity
    assert [r.name for r in livekit_call("list_rooms", ["room-a"])] == ["room-a"]
    livekit_call("delete_dispatch", "room-a", created.id)
    assert not any(p.is_agent for p in livekit_call("list_participants", "room-a"))


def test_not_found_is_a_rejection(lk):
    livekit_call("create_dispatch", "room-b", "x", "")
    with pytest.raises(LiveKitNotFound) as caught:
        livekit_call("delete_dispatch", "room-b", "AD_missing")
    assert isinstance(caught.value, LiveKitRejected)
    assert "dispatch ID not found" in caught.value.message


def test_wrong_secret_is_refused_credentials_without_leaking_them(lk, settings):
    settings.LIVEKIT_API_SECRET = "a-wrong-secret-that-is-long-enough-0123456789"
    with pytest.raises(LiveKitAuthRejected) as caught:
        livekit_call("list_rooms")
    assert caught.value.status == 401
    assert "refused the API key or secret" in caught.value.message
    assert settings.LIVEKIT_API_SECRET not in str(caught.value)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_transient(lk, status):
    lk.control.faults(error_rate=1, error_status=status)
    with pytest.raises(LiveKitUnavailable) as caught:
        livekit_call("list_rooms")
    assert caught.value.status == status


def test_down_is_transient(lk):
    lk.control.faults(down=True)
    with pytest.raises(LiveKitUnavailable) as caught:
        livekit_call("list_dispatches", "room-c")
    assert "cannot reach LiveKit" in caught.value.message


def test_every_call_has_a_timeout(lk):
    lk.control.faults(timeout_rate=1)
    started = time.monotonic()
    with pytest.raises(LiveKitUnavailable) as caught:
        livekit_call("list_rooms", timeout_s=0.3)
    assert time.monotonic() - started < 2
    assert "timed out" in caught.value.message
