"""POST /livekit/webhook with correctly signed but hostile events: a JSON 400 naming the
field and nothing recorded; events without an id still deduplicated (by the body's digest)."""

import json

import pytest

from rooms_app.models import Room, WebhookEvent
from tests.rooms_app.test_webhooks import _keys, agent_participant, event_body, post, sign  # noqa: F401

pytestmark = pytest.mark.django_db


def signed(client, body: bytes):
    return post(client, body, sign(body))


@pytest.mark.parametrize(
    "body,field",
    [
        (lambda: event_body("room_started", "r" * 10_000), "room.name"),
        (lambda: event_body("room_started", "support-1", event_id="EV_" + "x" * 10_000), "id"),
        (lambda: event_body("room_started", "support-1", sid="RM_" + "x" * 10_000), "room.sid"),
        (lambda: event_body("room_started", "support-\n1"), "room.name"),
        (
            lambda: event_body("participant_joined", participant=agent_participant(identity="a" * 10_000)),
            "participant.identity",
        ),
        (
            lambda: event_body("participant_joined", participant=agent_participant(agent_name="a" * 10_000)),
            "participant.attributes.lk.agent_name",
        ),
        (lambda: b'{"event": "room_started", "room": {"name": "\\udc80"}, "id": "EV_s"}', "body"),
        (lambda: b'{"event": "room_started", "room": ' + b"[" * 5000 + b"]" * 5000 + b"}", "body"),
        (lambda: b'{"event": 7}', "body"),
    ],
)
def test_a_signed_but_absurd_event_is_a_400_naming_the_field(client, body, field):
    r = signed(client, body())
    assert r.status_code == 400, r.content
    assert r["Content-Type"] == "application/json"
    assert field in r.json()["detail"]
    assert not WebhookEvent.objects.exists() and not Room.objects.exists()


def test_events_without_an_id_are_deduplicated_by_their_body(client):
    body = event_body("room_started", "support-7")
    message = json.loads(body)
    del message["id"]
    body = json.dumps(message).encode()
    answers = [signed(client, body).json() for _ in range(3)]
    assert [a["duplicate"] for a in answers] == [False, True, True]
    assert len({a["id"] for a in answers}) == 1 and answers[0]["id"].startswith("sha256:")
    assert WebhookEvent.objects.count() == 1 and Room.objects.filter(name="support-7").count() == 1
    # another event without an id is another event
    message["event"] = "room_finished"
    assert signed(client, json.dumps(message).encode()).json()["duplicate"] is False
