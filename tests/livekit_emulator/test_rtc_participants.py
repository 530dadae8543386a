"""Participants joining over `/rtc` with LiveKit's own Python rtc SDK (WebRTC on loopback): they
connect, see the others come and go, are told when the server removes them, and leave, with
the webhooks that follow; `/rtc/validate` says why a token cannot join. Run against the
emulator and the real server; what only the emulator does (refusing published tracks) is
marked. The agent of a real livekit-agents worker joining is in test_real_workers.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from livekit import api, rtc

from tests.support import eventually

from .support import Callers, call, http, join_token, participants, token

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def callers(livekit_server) -> Iterator[Callers]:
    joined = Callers(livekit_server)
    yield joined
    joined.close()


def _validate(server: Any, jwt: str) -> tuple[int, str]:
    status, _, body = http("GET", f"{server.url}/rtc/validate", headers={"Authorization": f"Bearer {jwt}"})
    return status, body.decode()


def _joins_and_leaves(receiver, room: str) -> list[tuple[str, str]]:
    with receiver._lock:
        bodies = [json.loads(r.body) for r in receiver.received]
    return [
        (b["event"], b["participant"]["identity"])
        for b in bodies
        if b.get("room", {}).get("name") == room and b["event"].startswith("participant_")
    ]


def test_a_participant_joins_sees_the_others_and_leaves_with_the_webhooks(
    livekit_server, callers, webhook_receiver
):
    alice = callers.join("rtc-call", "alice")

    assert alice.connection_state == rtc.ConnectionState.CONN_CONNECTED
    assert alice.local_participant.sid.startswith("PA_") and alice.name == "rtc-call"
    bob = callers.join("rtc-call", "bob")
    # Bob sees Alice, who was there first, in the room's participants; Alice is told Bob came.
    assert list(callers.remote("bob")) == ["alice"]
    eventually(lambda: ("joined", "bob") in callers.events["alice"], timeout=10)
    assert callers.remote("alice")["bob"].sid == bob.local_participant.sid
    listed = participants(livekit_server, "rtc-call")
    assert sorted(p.identity for p in listed) == ["alice", "bob"]

    callers.leave("bob")

    eventually(lambda: ("left", "bob") in callers.events["alice"], timeout=10)
    assert [p.identity for p in participants(livekit_server, "rtc-call")] == ["alice"]
    eventually(
        lambda: ("participant_left", "bob") in _joins_and_leaves(webhook_receiver, "rtc-call"), timeout=10
    )
    assert _joins_and_leaves(webhook_receiver, "rtc-call") == [
        ("participant_joined", "alice"),
        ("participant_joined", "bob"),
        ("participant_left", "bob"),
    ]


def test_a_participant_removed_by_the_server_is_told_and_the_others_see_it_go(livekit_server, callers):
    callers.join("rtc-removal", "alice")
    callers.join("rtc-removal", "bob")
    # LiveKit announces a participant that publishes nothing on its ~3 s batch tick; one that
    # comes and goes within it is never announced at all.
    eventually(lambda: ("joined", "bob") in callers.events["alice"], timeout=10)

    call(
        livekit_server,
        lambda lk: lk.room.remove_participant(
            api.RoomParticipantIdentity(room="rtc-removal", identity="bob")
        ),
    )

    eventually(lambda: ("disconnected", "PARTICIPANT_REMOVED") in callers.events["bob"], timeout=10)
    eventually(lambda: ("left", "bob") in callers.events["alice"], timeout=10)
    assert callers.rooms["bob"].connection_state == rtc.ConnectionState.CONN_DISCONNECTED
    assert callers.rooms["alice"].connection_state == rtc.ConnectionState.CONN_CONNECTED


def test_validate_says_success_for_a_token_that_may_join_and_401_otherwise(livekit_server):
    good = join_token(livekit_server, "rtc-validate", "alice")
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    no_join = token(livekit_server, identity="alice", grants=api.VideoGrants(room_list=True))

    assert _validate(livekit_server, good) == (200, "success")
    status, message = _validate(livekit_server, forged)
    assert status == 401 and "token signature is invalid" in message
    status, message = _validate(livekit_server, no_join)
    assert status == 401 and "permissions denied" in message


@pytest.mark.emulator_only("the emulator has no media: it refuses every published track")
def test_publishing_a_track_is_refused_in_a_way_the_client_reports(livekit_server, callers):
    callers.join("rtc-publish", "alice")

    with pytest.raises(Exception) as refused:
        callers.publish_silence("alice")

    # The refusal is LiveKit's own for a participant without publish permission (RequestResponse
    # NOT_ALLOWED); the rtc SDK does not read it and gives up after its 10 s wait.
    assert "track publication timed out, no response received from the server" in str(refused.value)
    assert callers.rooms["alice"].connection_state == rtc.ConnectionState.CONN_CONNECTED
    log = "\n".join(livekit_server.control.state()["log"])
    assert "'alice' asked to publish a track in room 'rtc-publish': refused, no media" in log


@pytest.mark.emulator_only("the control API's reset")
def test_a_reset_disconnects_the_participants_as_a_server_shutting_down_would(livekit_server, callers):
    callers.join("rtc-reset", "alice")

    livekit_server.control.reset()

    eventually(lambda: ("disconnected", "SERVER_SHUTDOWN") in callers.events["alice"], timeout=10)
    assert callers.rooms["alice"].connection_state == rtc.ConnectionState.CONN_DISCONNECTED
