"""The reconcile pass against the emulator: repairs each kind of drift, ignores what is not
the portal's, costs a fixed number of queries whatever the number of rooms, runs alone."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from rooms_app import services
from rooms_app.models import Dispatch, Room
from rooms_app.reconcile import reconcile_lock, reconcile_run
from tests.factories import AgentFactory, RuleFactory

pytestmark = pytest.mark.django_db
S = Dispatch.Status


def agent(identity: str, name: str) -> dict:
    return {"identity": identity, "kind": "AGENT", "attributes": {"lk.agent_name": name}}


@pytest.fixture
def support_agent():
    return AgentFactory(agent_name="support-agent")


def test_rooms_made_elsewhere_get_their_explicit_rule_agents(
    lk, support_agent, django_capture_on_commit_callbacks
):
    RuleFactory(agent=support_agent, room_match_value="sip-*", delivery="explicit")
    lk.control.create_rooms(
        [{"name": "sip-1", "participants": [{"identity": "caller"}]}, {"name": "other-1"}]
    )
    with django_capture_on_commit_callbacks(execute=False) as sent:
        report = reconcile_run()
    assert (report.rooms_in_livekit, report.rooms_recorded, report.dispatched) == (2, 2, 1)
    dispatch = Dispatch.objects.get()
    assert (dispatch.room.name, dispatch.source, dispatch.status) == ("sip-1", "reconcile", "pending")
    assert Room.objects.get(name="sip-1").num_participants == 1
    assert len(sent) >= 1
    # A second pass finds nothing to do, and a cancelled rule agent is not brought back.
    services.dispatch_cancel(dispatch=dispatch, by="test")
    assert reconcile_run().dispatched == 0


def test_agents_seen_joined_and_left(lk, support_agent):
    lk.control.create_rooms([{"name": "support-1", "participants": [agent("agent-AJ_a", "support-agent")]}])
    room = services.room_observe(
        name="support-1", sid=lk.control.state("support-1")["rooms"][0]["sid"], started_at=None
    )
    dispatch, _ = services.dispatch_create(room=room, agent=support_agent, source="rule", status=S.REQUESTED)
    assert reconcile_run().agents_joined == 1
    dispatch.refresh_from_db()
    assert (dispatch.status, dispatch.participant_identity) == (S.AGENT_JOINED, "agent-AJ_a")
    lk.control.leave("support-1", "agent-AJ_a")
    report = reconcile_run()
    assert (report.agents_left, report.redispatched) == (1, 1)
    dispatch.refresh_from_db()
    assert dispatch.status == S.FAILED and "no longer in the room" in dispatch.last_error
    retry = Dispatch.objects.get(previous=dispatch)
    assert (retry.attempt, retry.status, [e.status for e in retry.events.all()]) == (
        2,
        S.PENDING,
        [S.PENDING],
    )


def test_rooms_gone_are_closed(lk, support_agent):
    room = services.room_observe(name="support-2", sid="RM_gone", started_at=timezone.now())
    services.dispatch_create(room=room, agent=support_agent, source="rule", status=S.AGENT_JOINED)
    report = reconcile_run()
    assert report.rooms_closed == 1
    assert Room.objects.get(name="support-2").status == "finished"
    assert Dispatch.objects.get().status == S.ROOM_CLOSED


def test_unrecorded_managed_agents_are_adopted_and_others_ignored(lk, support_agent):
    lk.control.create_rooms(
        [
            {
                "name": "support-3",
                "participants": [
                    agent("agent-AJ_b", "support-agent"),
                    agent("agent-AJ_c", "another-products-agent"),
                    agent("agent-AJ_d", ""),
                ],
            }
        ]
    )
    # The room has a live dispatch, so its participants are looked at.
    room = services.room_observe(
        name="support-3", sid=lk.control.state("support-3")["rooms"][0]["sid"], started_at=None
    )
    services.dispatch_create(
        room=room, agent=AgentFactory(agent_name="notes-agent"), source="api", status=S.REQUESTED
    )
    report = reconcile_run()
    assert report.agents_adopted == 1
    assert sorted(Dispatch.objects.values_list("agent_name", "status")) == [
        ("notes-agent", S.REQUESTED),
        ("support-agent", S.AGENT_JOINED),
    ]


def test_overdue_deadlines_and_stuck_pending_dispatches_are_requeued(
    lk, support_agent, django_capture_on_commit_callbacks
):
    lk.control.create_rooms([{"name": "support-4", "participants": [{"identity": "u"}]}])
    room = services.room_observe(
        name="support-4", sid=lk.control.state("support-4")["rooms"][0]["sid"], started_at=None
    )
    overdue, _ = services.dispatch_create(room=room, agent=support_agent, source="api", status=S.REQUESTED)
    Dispatch.objects.filter(pk=overdue.pk).update(deadline_at=timezone.now() - timezone.timedelta(minutes=1))
    stuck, _ = services.dispatch_create(room=room, agent=AgentFactory(agent_name="b"), source="api")
    # And one for a room LiveKit does not have yet (the API's CreateDispatch will make it).
    elsewhere = services.room_get_or_create(name="support-40")
    stuck_too, _ = services.dispatch_create(room=elsewhere, agent=AgentFactory(agent_name="c"), source="api")
    retrying, _ = services.dispatch_create(room=elsewhere, agent=AgentFactory(agent_name="d"), source="api")
    long_ago = timezone.now() - timezone.timedelta(minutes=5)
    Dispatch.objects.filter(pk__in=[stuck.pk, stuck_too.pk, retrying.pk]).update(updated_at=long_ago)
    # Still retrying (its lease is held): left alone.
    Dispatch.objects.filter(pk=retrying.pk).update(
        request_lease_until=timezone.now() + timezone.timedelta(seconds=5)
    )
    with django_capture_on_commit_callbacks(execute=False):
        report = reconcile_run()
    assert (report.deadline_checks, report.requeued) == (1, 2)


def test_queries_per_pass_do_not_grow_with_rooms(lk, support_agent):
    def seed(first: int, count: int) -> None:
        names = [f"bulk-{i}" for i in range(first, first + count)]
        lk.control.create_rooms(
            [{"name": n, "participants": [agent(f"agent-{n}", "support-agent")]} for n in names]
        )
        sids = {r["name"]: r["sid"] for r in lk.control.state()["rooms"]}
        rooms = Room.objects.bulk_create(
            [Room(name=n, sid=sids[n], status="active", started_at=timezone.now()) for n in names]
        )
        Dispatch.objects.bulk_create(
            [
                Dispatch(
                    room=r,
                    agent=support_agent,
                    agent_name="support-agent",
                    source="rule",
                    status=S.AGENT_JOINED,
                    participant_identity=f"agent-{r.name}",
                )
                for r in rooms
            ]
        )

    def count() -> int:
        reconcile_run()  # warm: compiled rules, first-pass bookkeeping
        with CaptureQueriesContext(connection) as queries:
            report = reconcile_run()
        assert report.repaired == 0 and report.rooms_checked == Room.objects.filter(status="active").count()
        return len(queries)

    seed(0, 10)
    small = count()
    seed(10, 190)
    assert count() == small


def _drift(lk, support_agent) -> None:
    """Every kind of room a pass meets, each needing its own repair."""
    notes_agent = AgentFactory(agent_name="notes-agent")
    RuleFactory(agent=support_agent, room_match_value="sip-*", delivery="explicit")
    caller = {"identity": "caller"}
    lk.control.create_rooms(
        [
            {"name": "sip-new", "participants": [caller]},  # only in LiveKit; a rule wants an agent
            {"name": "other-new", "participants": [caller]},  # only in LiveKit
            {"name": "joined-1", "participants": [caller, agent("agent-AJ_1", "support-agent")]},
            {"name": "left-1", "participants": [caller]},
            {"name": "restarted", "participants": [caller]},
            {"name": "adopt-1", "participants": [agent("agent-AJ_3", "support-agent")]},
        ]
    )
    sids = {r["name"]: r["sid"] for r in lk.control.state()["rooms"]}
    joined = services.room_observe(name="joined-1", sid=sids["joined-1"], started_at=None)
    services.dispatch_create(room=joined, agent=support_agent, source="rule", status=S.REQUESTED)
    left = services.room_observe(name="left-1", sid=sids["left-1"], started_at=None)
    services.dispatch_create(
        room=left,
        agent=support_agent,
        source="rule",
        status=S.AGENT_JOINED,
        participant_identity="agent-AJ_2",
    )
    services.room_observe(name="restarted", sid="RM_old", started_at=None)
    services.room_finished(name="restarted", sid="RM_old")
    adopt = services.room_observe(name="adopt-1", sid=sids["adopt-1"], started_at=None)
    services.dispatch_create(room=adopt, agent=notes_agent, source="api", status=S.REQUESTED)
    # Only in the ledger: a room gone from LiveKit, a token never used, a room LiveKit does
    # not have yet, and a finished room, the last two with a dispatch whose task was lost.
    gone = services.room_observe(name="gone-1", sid="RM_gone", started_at=None)
    services.dispatch_create(room=gone, agent=support_agent, source="rule", status=S.AGENT_JOINED)
    expired = services.room_get_or_create(name="expired-1")
    services.dispatch_create(room=expired, agent=support_agent, source="token", delivery="token")
    Room.objects.filter(pk=expired.pk).update(created_at=timezone.now() - timezone.timedelta(hours=7))
    waiting = services.room_get_or_create(name="waiting-1")
    services.dispatch_create(room=waiting, agent=notes_agent, source="api")
    services.room_observe(name="finished-1", sid="RM_f", started_at=None)
    finished = services.room_finished(name="finished-1", sid="RM_f")
    assert finished is not None
    services.dispatch_create(room=finished, agent=notes_agent, source="api")
    long_ago = timezone.now() - timezone.timedelta(minutes=5)
    Dispatch.objects.filter(status=S.PENDING, delivery="explicit").update(updated_at=long_ago)


def _ledger(lk) -> tuple[list[tuple], list[tuple]]:
    sids = {r["name"]: r["sid"] for r in lk.control.state()["rooms"]}
    rooms = sorted(
        (r.name, r.status, r.sid == sids.get(r.name, r.sid), r.num_participants, r.finished_at is None)
        for r in Room.objects.all()
    )
    dispatches = sorted(
        (d.room.name, d.agent_name, d.status, d.source, d.attempt, d.participant_identity)
        for d in Dispatch.objects.select_related("room")
    )
    return rooms, dispatches


@pytest.mark.parametrize("chunk", [1000, 3, 2, 1])
def test_a_pass_in_chunks_leaves_the_ledger_a_single_chunk_leaves(
    lk, support_agent, settings, chunk, django_capture_on_commit_callbacks
):
    """Rooms only in LiveKit, only in the ledger, in both, at every chunk boundary: the pass
    reaches the same ledger and counts the same repairs whatever the chunk size."""
    settings.RECONCILE_CHUNK_ROOMS = chunk
    _drift(lk, support_agent)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        report = reconcile_run()
    repairs = {k: v for k, v in report.as_dict().items() if isinstance(v, int) and v}
    assert repairs == {
        "rooms_in_livekit": 6,
        "rooms_checked": 4,  # sip-new, joined-1, left-1, adopt-1
        "rooms_recorded": 3,  # sip-new, other-new, restarted
        "rooms_closed": 1,
        "agents_joined": 1,
        "agents_left": 1,
        "agents_adopted": 1,
        "dispatched": 1,
        "redispatched": 1,
        "requeued": 2,  # waiting-1, finished-1
        "tokens_expired": 1,
    }
    rooms, dispatches = _ledger(lk)
    # (name, status, sid as LiveKit shows it, participants, not finished)
    assert rooms == [
        ("adopt-1", "active", True, 1, True),
        ("expired-1", "finished", True, 0, False),
        ("finished-1", "finished", True, 0, False),
        ("gone-1", "finished", True, 0, False),
        ("joined-1", "active", True, 2, True),
        ("left-1", "active", True, 1, True),
        ("other-new", "active", True, 1, True),
        ("restarted", "active", True, 1, True),
        ("sip-new", "active", True, 1, True),
        ("waiting-1", "pending", True, 0, True),
    ]
    assert dispatches == [
        ("adopt-1", "notes-agent", S.REQUESTED, "api", 1, ""),
        ("adopt-1", "support-agent", S.AGENT_JOINED, "reconcile", 1, "agent-AJ_3"),
        ("expired-1", "support-agent", S.CANCELLED, "token", 1, ""),
        ("finished-1", "notes-agent", S.PENDING, "api", 1, ""),
        ("gone-1", "support-agent", S.ROOM_CLOSED, "rule", 1, ""),
        ("joined-1", "support-agent", S.AGENT_JOINED, "rule", 1, "agent-AJ_1"),
        ("left-1", "support-agent", S.FAILED, "rule", 1, "agent-AJ_2"),
        ("left-1", "support-agent", S.PENDING, "rule", 2, ""),
        ("sip-new", "support-agent", S.PENDING, "reconcile", 1, ""),
        ("waiting-1", "notes-agent", S.PENDING, "api", 1, ""),
    ]
    # CreateDispatch for sip-new's rule and left-1's second attempt; the two lost tasks again.
    assert len(sent) == 4


def test_one_pass_at_a_time(lk):
    with reconcile_lock() as held:
        assert held
        assert reconcile_run().skipped is True
    assert reconcile_run().skipped is False


def test_livekit_down_is_reported_not_raised(lk):
    lk.control.faults(down=True)
    report = reconcile_run()
    assert "cannot reach LiveKit" in report.error


def test_list_rooms_has_its_own_deadline_and_a_pass_past_it_is_recorded_failed(lk, support_agent, settings):
    """ListRooms carries every room: it gets RECONCILE_LIST_ROOMS_TIMEOUT_S, not the per-call
    timeout. A pass whose ListRooms overruns it changes nothing and is recorded as failed."""
    from rooms_app.tasks import reconcile_run as reconcile_task
    from watch_app.models import Condition

    room = services.room_observe(name="gone-1", sid="RM_gone", started_at=timezone.now())
    services.dispatch_create(room=room, agent=support_agent, source="rule", status=S.AGENT_JOINED)
    lk.control.faults(latency_ms=600)
    settings.LIVEKIT_TIMEOUT_S = 0.3
    settings.RECONCILE_LIST_ROOMS_TIMEOUT_S = 0.3
    result = reconcile_task.apply().get()
    assert "ListRooms" in result["error"] and "timed out" in result["error"]
    condition = Condition.objects.get(key="reconcile")
    assert condition.consecutive_failures == 1 and "ListRooms" in condition.last_error
    assert (Room.objects.get().status, Dispatch.objects.get().status) == ("active", S.AGENT_JOINED)

    settings.RECONCILE_LIST_ROOMS_TIMEOUT_S = 5
    result = reconcile_task.apply().get()
    assert (result["error"], result["rooms_closed"]) == ("", 1)
    assert Condition.objects.get(key="reconcile").consecutive_failures == 0
    assert (Room.objects.get().status, Dispatch.objects.get().status) == ("finished", S.ROOM_CLOSED)


def test_management_command(lk, support_agent):
    RuleFactory(agent=support_agent, room_match_value="sip-*", delivery="explicit")
    lk.control.create_rooms([{"name": "sip-9"}])
    out = io.StringIO()
    call_command("reconcile", "--room", "sip-9", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["rooms_in_livekit"] == 1 and report["dispatched"] == 1
    out = io.StringIO()
    call_command("reconcile", stdout=out)
    assert "1 room(s) in LiveKit" in out.getvalue()


def test_periodic_task_is_installed():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="rooms.reconcile")
    assert task.enabled and task.interval.every == 30 and task.interval.period == "seconds"
