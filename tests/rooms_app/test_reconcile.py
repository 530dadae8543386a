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


def test_one_pass_at_a_time(lk):
    with reconcile_lock() as held:
        assert held
        assert reconcile_run().skipped is True
    assert reconcile_run().skipped is False


def test_livekit_down_is_reported_not_raised(lk):
    lk.control.faults(down=True)
    report = reconcile_run()
    assert "cannot reach LiveKit" in report.error


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
