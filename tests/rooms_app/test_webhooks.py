"""POST /livekit/webhook: only LiveKit's signed events are accepted, each event id once, and
each event moves the ledger once applied (no worker here: `post` applies the recorded events
as the queued task would, and the LiveKit work they cause is only enqueued)."""

from __future__ import annotations

import base64
import hashlib
import time

import jwt
import pytest
from google.protobuf import json_format
from livekit.protocol import models, webhook

from rooms_app.models import Dispatch, Room, WebhookEvent
from rooms_app.services import webhook_events_apply
from rooms_app.services.webhook_events import webhook_shard
from tests.factories import AgentFactory, RuleFactory

pytestmark = pytest.mark.django_db
URL = "/livekit/webhook"
KEY = "webhook-test-key"
SECRET = "webhook-test-secret-long-enough-for-hs256-0123456789"


@pytest.fixture(autouse=True)
def _keys(settings):
    settings.LIVEKIT_API_KEY = KEY
    settings.LIVEKIT_API_SECRET = SECRET


def event_body(
    event: str, room: str = "support-1", *, event_id: str = "", sid: str = "RM_one", participant=None
) -> bytes:
    message = webhook.WebhookEvent(
        event=event,
        id=event_id or f"EV_{event}_{room}",
        created_at=int(time.time()),
        room=models.Room(name=room, sid=sid, creation_time=int(time.time()), num_participants=1),
    )
    if participant is not None:
        message.participant.CopyFrom(participant)
    return json_format.MessageToJson(message, indent=None).encode()


def agent_participant(identity: str = "agent-AJ_one", agent_name: str = "support-agent", reason: int = 0):
    return models.ParticipantInfo(
        identity=identity,
        sid="PA_x",
        kind=4,
        attributes={"lk.agent_name": agent_name},
        joined_at=int(time.time()),
        disconnect_reason=reason,
    )


def sign(body: bytes, *, key: str = KEY, secret: str = SECRET) -> str:
    now = int(time.time())
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return jwt.encode({"iss": key, "nbf": now, "exp": now + 300, "sha256": digest}, secret, algorithm="HS256")


def same_shard_rooms(count: int) -> list[str]:
    """`count` room names (matching the explicit rule) whose events share one shard, so one
    application takes them all, in recorded order."""
    names = (f"support-{n}" for n in range(1, 10_000))
    return [name for name in names if webhook_shard(name) == webhook_shard("support-1")][:count]


def other_shard_room(room: str) -> str:
    """A room name (matching the explicit rule) whose events go to another shard than `room`'s."""
    return next(
        f"support-{n}" for n in range(2, 10_000) if webhook_shard(f"support-{n}") != webhook_shard(room)
    )


def post(client, body: bytes, authorization: str | None = None, *, apply: bool = True):
    """POST the event; with `apply`, then apply what was recorded (what the queued task does)."""
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    answer = client.post(URL, data=body, content_type="application/webhook+json", **headers)
    if apply:
        webhook_events_apply()
    return answer


@pytest.fixture
def explicit_rule():
    agent = AgentFactory(agent_name="support-agent", join_deadline_s=5)
    return RuleFactory(agent=agent, room_match_value="support-*", delivery="explicit")


def test_room_started_applies_explicit_rules(client, explicit_rule, django_capture_on_commit_callbacks):
    body = event_body("room_started")
    with django_capture_on_commit_callbacks() as sent:
        answer = post(client, body, sign(body))
    assert answer.status_code == 200
    assert answer.json() == {
        "ok": True,
        "event": "room_started",
        "id": "EV_room_started_support-1",
        "duplicate": False,
    }
    room = Room.objects.get(name="support-1")
    assert (room.status, room.sid) == ("active", "RM_one")
    [dispatch] = Dispatch.objects.all()
    assert (dispatch.agent_name, dispatch.source, dispatch.status) == ("support-agent", "rule", "pending")
    assert len(sent) >= 1  # CreateDispatch is a task, sent after commit


def test_a_redelivered_event_is_handled_once(client, explicit_rule):
    body = event_body("room_started")
    assert post(client, body, sign(body)).json()["duplicate"] is False
    again = post(client, body, sign(body))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert Dispatch.objects.count() == 1 and WebhookEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_redelivery_racing_the_first_delivery_is_recorded_once(monkeypatch):
    """As the portal really runs (autocommit, no test transaction around the request): LiveKit's
    retry, or the same event through a second portal, arrives while the first is being
    recorded. Both are answered 200, one says duplicate, one row is kept, and the portal's
    connection is not left in a failed transaction (its next webhook is recorded)."""
    import threading

    from django.db import connection
    from django.test import Client

    from rooms_app.services import webhook_events

    monkeypatch.setattr(webhook_events, "_apply_queue", lambda shard: None)  # no worker here
    body = event_body("room_started")
    start = threading.Barrier(4)
    answers: list[dict] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            start.wait(timeout=10)
            answer = post(Client(), body, sign(body), apply=False)
            answers.append({"status": answer.status_code, **answer.json()})
        except BaseException as exc:  # noqa: BLE001  reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert sorted((a["status"], a["duplicate"]) for a in answers) == [(200, False)] + [(200, True)] * 3
    assert WebhookEvent.objects.filter(event_id="EV_room_started_support-1").count() == 1
    # The same thread, after a duplicate: the connection took the next event.
    client = Client()
    assert post(client, body, sign(body), apply=False).json()["duplicate"]
    later = event_body("room_finished")
    answer = post(client, later, sign(later), apply=False)
    assert (answer.status_code, answer.json()["duplicate"]) == (200, False)
    assert not connection.in_atomic_block
    assert WebhookEvent.objects.count() == 2


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "not-a-jwt",
        "forged",  # signed with another secret
        "other-body",  # a valid signature for a different body
        "bearer-forged",
    ],
)
def test_forged_webhooks_are_refused_and_nothing_is_recorded(client, explicit_rule, authorization):
    body = event_body("room_started")
    header = {
        "forged": sign(body, secret="an-attacker-secret-long-enough-0123456789abcdef"),
        "other-body": sign(event_body("room_started", "support-2")),
        "bearer-forged": "Bearer " + sign(body, key="another-key"),
    }.get(authorization or "", authorization)
    answer = post(client, body, header)
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthenticated"
    assert not Room.objects.exists() and not WebhookEvent.objects.exists() and not Dispatch.objects.exists()


def test_a_tampered_body_is_refused(client, explicit_rule):
    body = event_body("room_started")
    header = sign(body)
    answer = post(client, body.replace(b"support-1", b"support-9"), header)
    assert answer.status_code == 401 and "hash mismatch" in answer.json()["detail"]
    assert not Dispatch.objects.exists()


def test_agent_joined_by_its_agent_name_then_left_is_redispatched(client, explicit_rule):
    body = event_body("room_started")
    post(client, body, sign(body))
    joined = event_body("participant_joined", participant=agent_participant())
    assert post(client, joined, sign(joined)).status_code == 200
    dispatch = Dispatch.objects.get()
    assert (dispatch.status, dispatch.participant_identity, dispatch.livekit_job_id) == (
        "agent_joined",
        "agent-AJ_one",
        "AJ_one",
    )
    left = event_body("participant_left", participant=agent_participant(reason=16))
    post(client, left, sign(left))
    dispatch.refresh_from_db()
    assert dispatch.status == "failed" and "left the room" in dispatch.last_error and dispatch.left_at
    retry = Dispatch.objects.get(previous=dispatch)
    assert (retry.status, retry.attempt) == ("pending", 2)


def test_agents_leaving_because_the_room_closed_are_not_redispatched(client, explicit_rule):
    body = event_body("room_started")
    post(client, body, sign(body))
    joined = event_body("participant_joined", participant=agent_participant())
    post(client, joined, sign(joined))
    left = event_body("participant_left", participant=agent_participant(reason=10))  # ROOM_CLOSED
    post(client, left, sign(left))
    finished = event_body("room_finished")
    post(client, finished, sign(finished))
    assert list(Dispatch.objects.values_list("status", flat=True)) == ["room_closed"]
    assert Room.objects.get().status == "finished"


def test_room_finished_closes_waiting_dispatches(client, explicit_rule):
    body = event_body("room_started")
    post(client, body, sign(body))
    finished = event_body("room_finished")
    post(client, finished, sign(finished))
    dispatch = Dispatch.objects.get()
    assert dispatch.status == "room_closed" and dispatch.ended_at is not None
    assert [e.status for e in dispatch.events.all()] == ["pending", "room_closed"]


def test_unmanaged_and_unnamed_agents_are_ignored(client, explicit_rule):
    body = event_body("room_started")
    post(client, body, sign(body))
    for identity, name in (("agent-AJ_other", "someone-elses-agent"), ("agent-AJ_auto", "")):
        joined = event_body(
            "participant_joined", event_id=f"EV_{identity}", participant=agent_participant(identity, name)
        )
        post(client, joined, sign(joined))
    assert list(Dispatch.objects.values_list("agent_name", "status")) == [("support-agent", "pending")]


def test_a_managed_agent_joining_without_a_dispatch_is_recorded(client):
    AgentFactory(agent_name="support-agent")
    joined = event_body("participant_joined", participant=agent_participant())
    post(client, joined, sign(joined))
    dispatch = Dispatch.objects.get()
    assert (dispatch.status, dispatch.source, dispatch.participant_identity) == (
        "agent_joined",
        "reconcile",
        "agent-AJ_one",
    )
    assert Room.objects.get().status == "active"


def test_a_late_event_does_not_reopen_a_finished_room(client, explicit_rule):
    for kind in ("room_started", "room_finished"):
        body = event_body(kind)
        post(client, body, sign(body))
    late = event_body("participant_joined", participant=agent_participant())
    post(client, late, sign(late))
    assert Room.objects.get().status == "finished"
    assert not Dispatch.objects.filter(status__in=("pending", "requested", "agent_joined")).exists()


def test_the_request_records_the_event_and_queues_its_application(
    client, explicit_rule, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    warm = event_body("room_started", "support-0")
    post(client, warm, sign(warm))  # compiles the rules once per process
    body = event_body("room_started")
    # The event's row inside a savepoint, plus the savepoint pair of the test's own transaction.
    with django_capture_on_commit_callbacks() as sent, django_assert_max_num_queries(3):
        assert post(client, body, sign(body), apply=False).status_code == 200
    assert len(sent) == 1  # the application's task, once the row is committed
    row = WebhookEvent.objects.get(event_id="EV_room_started_support-1")
    assert row.applied_at is None and row.payload["event"] == "room_started"
    assert not Room.objects.filter(name="support-1").exists()  # nothing applied on the request

    assert webhook_events_apply() == 1
    row.refresh_from_db()
    assert row.applied_at is not None and row.apply_error == ""
    assert Room.objects.get(name="support-1").status == "active"
    assert Dispatch.objects.filter(room__name="support-1", status="pending").count() == 1
    assert webhook_events_apply() == 0  # applied once


def test_events_are_applied_in_the_order_they_were_recorded(client, explicit_rule):
    for kind in ("room_started", "participant_joined", "participant_left"):
        participant = agent_participant(reason=16) if kind != "room_started" else None
        body = event_body(kind, participant=participant)
        post(client, body, sign(body), apply=False)
    assert webhook_events_apply() == 3
    first = Dispatch.objects.get(attempt=1)
    assert first.status == "failed" and first.participant_identity == "agent-AJ_one"


def test_an_event_that_cannot_be_applied_is_kept_with_its_error_and_holds_up_no_other(
    client, explicit_rule, monkeypatch
):
    from rooms_app.services import webhook_events

    real_apply = webhook_events.webhook_event_apply

    def broken_for_one_room(*, event, **kwargs):
        if event.room.name == "support-bad":
            raise ValueError("a ledger bug")
        real_apply(event=event, **kwargs)

    monkeypatch.setattr(webhook_events, "webhook_event_apply", broken_for_one_room)
    for room in ("support-bad", "support-good"):
        body = event_body("room_started", room)
        post(client, body, sign(body), apply=False)
    assert webhook_events_apply() == 2
    bad = WebhookEvent.objects.get(room_name="support-bad")
    assert bad.applied_at is not None and bad.apply_error == "ValueError: a ledger bug"
    assert not Room.objects.filter(name="support-bad").exists()
    assert Room.objects.get(name="support-good").status == "active"


def test_a_database_outage_mid_batch_leaves_the_whole_batch_pending(client, explicit_rule, monkeypatch):
    """A backlog is applied in batches, one transaction each: with eight events waiting a
    batch is two, and the database failing on the batch's second event leaves the first
    unapplied too (never half a batch); the next application takes them all, in order."""
    from django.db import OperationalError

    from rooms_app.services import webhook_events

    real_apply = webhook_events.webhook_event_apply

    rooms = same_shard_rooms(8)

    def outage_on_the_second(*, event, **kwargs):
        if event.room.name == rooms[1]:
            raise OperationalError("the connection was lost")
        real_apply(event=event, **kwargs)

    for room in rooms:
        body = event_body("room_started", room)
        post(client, body, sign(body), apply=False)
    monkeypatch.setattr(webhook_events, "webhook_event_apply", outage_on_the_second)
    with pytest.raises(OperationalError):
        webhook_events_apply()
    assert WebhookEvent.objects.filter(applied_at__isnull=True).count() == 8
    assert not Room.objects.exists() and not Dispatch.objects.exists()
    monkeypatch.setattr(webhook_events, "webhook_event_apply", real_apply)
    assert webhook_events_apply() == 8
    assert set(Room.objects.values_list("name", flat=True)) == set(rooms)
    assert Dispatch.objects.count() == 8  # the explicit rule's agent, once per room


def test_a_quiet_portal_commits_each_event_so_its_dispatch_leaves_at_once(
    client, explicit_rule, monkeypatch, django_capture_on_commit_callbacks
):
    """With only a few events waiting each is its own transaction: the first room's dispatch
    is committed (and its CreateDispatch task sent) before the next event is applied, even
    when the database fails on that next one."""
    from django.db import OperationalError

    from rooms_app.services import webhook_events

    real_apply = webhook_events.webhook_event_apply

    first, second = same_shard_rooms(2)

    def outage_on_the_second(*, event, **kwargs):
        if event.room.name == second:
            raise OperationalError("the connection was lost")
        real_apply(event=event, **kwargs)

    for room in (first, second):
        body = event_body("room_started", room)
        post(client, body, sign(body), apply=False)
    monkeypatch.setattr(webhook_events, "webhook_event_apply", outage_on_the_second)
    with django_capture_on_commit_callbacks() as sent, pytest.raises(OperationalError):
        webhook_events_apply()
    assert list(Room.objects.values_list("name", flat=True)) == [first]
    assert Dispatch.objects.filter(room__name=first).count() == 1
    assert sent, "the first room's dispatch was committed with its own event"
    assert list(WebhookEvent.objects.filter(applied_at__isnull=True).values_list("room_name", flat=True)) == [
        second
    ]


def test_an_application_out_of_time_leaves_the_rest_pending_for_the_next(client, explicit_rule):
    for room in ("support-1", "support-2"):
        body = event_body("room_started", room)
        post(client, body, sign(body), apply=False)
    assert webhook_events_apply(budget_s=0) == 0
    assert WebhookEvent.objects.filter(applied_at__isnull=True).count() == 2
    assert webhook_events_apply() == 2
    assert set(Room.objects.values_list("name", flat=True)) == {"support-1", "support-2"}


def test_each_room_s_events_go_to_its_shard_and_queue_that_shard_s_application(
    client, explicit_rule, monkeypatch, django_capture_on_commit_callbacks
):
    """Every event of a room lands in the room's shard, and recording it queues that shard's
    application only; applying one shard leaves the others' events pending."""
    from rooms_app.services import webhook_events

    queued: list[int] = []
    monkeypatch.setattr(webhook_events, "webhook_events_apply_enqueue", lambda *, shard: queued.append(shard))
    a, b = "support-1", other_shard_room("support-1")
    for room in (a, b):
        started = event_body("room_started", room)
        joined = event_body("participant_joined", room, participant=agent_participant())
        with django_capture_on_commit_callbacks(execute=True):
            post(client, started, sign(started), apply=False)
            post(client, joined, sign(joined), apply=False)
    shards = dict(WebhookEvent.objects.values_list("room_name", "shard").distinct())
    assert shards == {a: webhook_shard(a), b: webhook_shard(b)}
    assert sorted(set(queued)) == sorted({webhook_shard(a), webhook_shard(b)})

    assert webhook_events_apply(shard=webhook_shard(a)) == 2
    assert Dispatch.objects.get(room__name=a).status == "agent_joined"
    assert not Room.objects.filter(name=b).exists()
    assert webhook_events_apply() == 2  # no shard named: every shard (the reconcile pass)
    assert Dispatch.objects.get(room__name=b).status == "agent_joined"


def test_a_shard_another_process_applies_is_skipped_and_holds_up_no_other(client, explicit_rule):
    from dispatchportal.locks import lock_try

    busy, free = "support-1", other_shard_room("support-1")
    for room in (busy, free):
        body = event_body("room_started", room)
        post(client, body, sign(body), apply=False)
    with lock_try(f"rooms:webhook-events-apply:{webhook_shard(busy)}", timeout_s=30) as held:
        assert held
        assert webhook_events_apply() == 1
        assert list(Room.objects.values_list("name", flat=True)) == [free]
    assert webhook_events_apply() == 1  # the lock's holder would have; now it is free
    assert Room.objects.get(name=busy).status == "active"


def test_a_shard_outside_the_range_is_refused():
    from rooms_app.services.webhook_events import SHARDS

    with pytest.raises(ValueError, match=f"shard {SHARDS} is not in 0..{SHARDS - 1}"):
        webhook_events_apply(shard=SHARDS)
    with pytest.raises(ValueError, match="shard -1"):
        webhook_events_apply(shard=-1)


@pytest.mark.django_db(transaction=True)
def test_two_processes_applying_at_once_keep_each_room_s_events_in_order(client, monkeypatch):
    """Two appliers (two Celery processes) take disjoint shards at the same moment, over rooms
    whose events were recorded interleaved: each room still sees room_started, its agent
    joining, then leaving, in that order (the agent's first attempt failed and a second
    followed), and every event is applied once, with no error."""
    import threading

    from django.db import connection

    from rooms_app.services import webhook_events
    from rooms_app.services.webhook_events import SHARDS

    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (SQLite takes one writer at a time)")
    agent = AgentFactory(agent_name="support-agent", join_deadline_s=5, max_attempts=3)
    RuleFactory(agent=agent, room_match_value="support-*", delivery="explicit")
    monkeypatch.setattr(webhook_events, "_apply_queue", lambda shard: None)  # applied below, not by a worker
    rooms = [f"support-{n}" for n in range(40)]
    for kind in ("room_started", "participant_joined", "participant_left"):
        for room in rooms:
            participant = (
                agent_participant(identity=f"agent-{room}", reason=16) if kind != "room_started" else None
            )
            body = event_body(kind, room, sid=f"RM_{room}", participant=participant)
            post(client, body, sign(body), apply=False)
    start = threading.Barrier(2)
    applied: dict[int, int] = {}
    errors: list[BaseException] = []

    def applier(half: int) -> None:
        try:
            start.wait(timeout=10)
            applied[half] = sum(webhook_events_apply(shard=s) for s in range(half, SHARDS, 2))
        except BaseException as exc:  # noqa: BLE001  reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=applier, args=(half,)) for half in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert applied[0] > 0 and applied[1] > 0 and applied[0] + applied[1] == 3 * len(rooms)
    assert not WebhookEvent.objects.filter(applied_at__isnull=True).exists()
    assert not WebhookEvent.objects.exclude(apply_error="").exists()
    for room in rooms:
        first = Dispatch.objects.get(room__name=room, attempt=1)
        assert (first.status, first.participant_identity) == ("failed", f"agent-{room}"), room
        # The retry (what became of it is up to the session's worker, if one takes its task).
        assert Dispatch.objects.filter(room__name=room, attempt=2).exists(), room


def test_applying_room_started_costs_a_bounded_number_of_queries(
    client, explicit_rule, django_assert_max_num_queries
):
    warm = event_body("room_started", "support-0")
    post(client, warm, sign(warm))  # compiles the rules once per process
    body = event_body("room_started")
    post(client, body, sign(body), apply=False)
    # The lock-free read of pending events, the row locked, room, agent, dispatch and its
    # event with their savepoints, the row marked applied, the final check.
    with django_assert_max_num_queries(20):
        assert webhook_events_apply(shard=webhook_shard("support-1")) == 1


def test_agent_names_seen_joining_are_kept(client):
    """The doctor lists names workers really register with, to spot typos."""
    joined = event_body("participant_joined", participant=agent_participant(agent_name="support-agnet"))
    post(client, joined, sign(joined))
    assert list(WebhookEvent.objects.values_list("agent_name", flat=True)) == ["support-agnet"]
