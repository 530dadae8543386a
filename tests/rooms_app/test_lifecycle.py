"""The dispatch lifecycle's services called directly against the emulator (no worker):
CreateDispatch exactly once, join deadlines naming the reason, re-dispatch, fallback, give up."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from livekit_boundary.client import LiveKitUnavailable, livekit_call
from rooms_app import services
from rooms_app.models import Dispatch, DispatchEvent, Room
from tests.factories import AgentFactory, RuleFactory, make_client, token_dispatches_record

from .conftest import agents_in, create_dispatch_calls, eventually

pytestmark = pytest.mark.django_db
S = Dispatch.Status


def _room(name: str = "support-1") -> Room:
    return services.room_observe(name=name, sid="RM_test", started_at=timezone.now())


def _pending(room: Room, agent_name: str = "support-agent", **agent_fields) -> Dispatch:
    agent = AgentFactory(agent_name=agent_name, **agent_fields)
    dispatch, created = services.dispatch_create(room=room, agent=agent, source=Dispatch.Source.API)
    assert created
    return dispatch


def made_job(server, dispatch_id: str) -> str:
    [found] = [d for d in server.control.state()["dispatches"] if d["id"] == dispatch_id]
    return found["jobs"][0]["id"]


def _expire_deadline(dispatch: Dispatch) -> None:
    Dispatch.objects.filter(pk=dispatch.pk).update(deadline_at=timezone.now())


def test_request_creates_one_livekit_dispatch_and_arms_the_deadline(lk, django_capture_on_commit_callbacks):
    lk.control.add_worker("support-agent")
    dispatch = _pending(_room())
    with django_capture_on_commit_callbacks() as sent:
        assert services.dispatch_request(dispatch_id=dispatch.pk) == "created"
    dispatch.refresh_from_db()
    assert dispatch.status == S.REQUESTED and dispatch.livekit_dispatch_id.startswith("AD_")
    assert dispatch.deadline_at is not None and dispatch.requested_at is not None
    assert len(sent) == 1  # the join-deadline check
    # A duplicated or retried task: the status guard makes it a no-op.
    assert services.dispatch_request(dispatch_id=dispatch.pk) == "skipped"
    assert len(create_dispatch_calls(lk, "support-1")) == 1


def test_a_task_that_died_after_create_dispatch_adopts_it(lk):
    """The first run took the lease and reached LiveKit but died before recording the id
    (worker killed): once the lease ends, the rerun finds the dispatch with ListDispatch and
    adopts it instead of making a second agent."""
    lk.control.add_worker("support-agent")
    dispatch = _pending(_room())
    made = livekit_call("create_dispatch", "support-1", "support-agent", dispatch.metadata)
    Dispatch.objects.filter(pk=dispatch.pk).update(request_tries=1, request_lease_until=timezone.now())
    assert services.dispatch_request(dispatch_id=dispatch.pk) == "adopted"
    dispatch.refresh_from_db()
    assert dispatch.livekit_dispatch_id == made.id and dispatch.request_tries == 2
    # Its job was already running: seen in ListDispatch, so recorded.
    assert dispatch.status == "job_assigned" and dispatch.livekit_job_id == made_job(lk, made.id)
    assert len(create_dispatch_calls(lk, "support-1")) == 1
    assert len(agents_in(lk, "support-1", "support-agent")) == 1


def test_a_duplicate_run_waits_for_the_lease_instead_of_creating(lk):
    lk.control.add_worker("support-agent")
    dispatch = _pending(_room())
    Dispatch.objects.filter(pk=dispatch.pk).update(
        request_tries=1, request_lease_until=timezone.now() + timezone.timedelta(seconds=3)
    )
    with pytest.raises(services.DispatchInFlight) as caught:
        services.dispatch_request(dispatch_id=dispatch.pk)
    assert 2 < caught.value.retry_in_s <= 3
    assert create_dispatch_calls(lk, "support-1") == []


def test_a_retry_after_livekit_failed_looks_up_first(lk):
    lk.control.add_worker("support-agent")
    dispatch = _pending(_room())
    lk.control.faults(error_rate=1, error_status=503)
    with pytest.raises(LiveKitUnavailable):
        services.dispatch_request(dispatch_id=dispatch.pk)
    lk.control.faults()
    dispatch.refresh_from_db()
    assert (dispatch.request_tries, dispatch.request_lease_until) == (1, None)  # no wait for the retry
    assert services.dispatch_request(dispatch_id=dispatch.pk) == "created"
    # It looks the room up: none (the failed CreateDispatch made nothing), so there is no
    # dispatch to adopt and no ListDispatch (on the real server, ListDispatch on a room it
    # does not have hangs about 3 s and answers 503).
    requests = lk.control.state()["counters"]["requests"]
    assert requests["livekit.RoomService/ListRooms"] == 1
    assert "livekit.AgentDispatchService/ListDispatch" not in requests


def test_a_dispatch_of_an_earlier_attempt_is_not_adopted(lk):
    room = _room()
    first = _pending(room, max_attempts=3)
    services.dispatch_request(dispatch_id=first.pk)
    first.refresh_from_db()
    Dispatch.objects.filter(pk=first.pk).update(status=S.NO_WORKER)
    second, _ = services.dispatch_create(
        room=room, agent=first.agent, source=first.source, attempt=2, previous=first
    )
    assert services.dispatch_request(dispatch_id=second.pk) == "created"
    second.refresh_from_db()
    assert second.livekit_dispatch_id != first.livekit_dispatch_id


def test_livekit_refusing_the_dispatch_fails_it_with_livekits_message(lk, settings):
    dispatch = _pending(_room())
    settings.LIVEKIT_API_SECRET = "not-the-secret-livekit-knows-0123456789abcdef"
    assert services.dispatch_request(dispatch_id=dispatch.pk) == "failed"
    dispatch.refresh_from_db()
    assert dispatch.status == S.FAILED
    assert "refused the API key or secret" in dispatch.last_error
    assert settings.LIVEKIT_API_SECRET not in dispatch.last_error


def test_no_worker_is_named_and_retried_then_given_up(lk):
    dispatch = _pending(_room(), max_attempts=2, join_deadline_s=1)
    services.dispatch_request(dispatch_id=dispatch.pk)
    _expire_deadline(dispatch)
    assert services.dispatch_deadline_check(dispatch_id=dispatch.pk) == S.NO_WORKER
    dispatch.refresh_from_db()
    assert dispatch.last_error == "no worker registered as 'support-agent' took the job within 1 s"
    # The dead LiveKit dispatch is deleted before the next attempt.
    assert not any(
        d.agent_name == "support-agent" and d.id == dispatch.livekit_dispatch_id
        for d in livekit_call("list_dispatches", "support-1")
    )
    retry = Dispatch.objects.get(previous=dispatch)
    assert (retry.attempt, retry.status, retry.source) == (2, S.PENDING, Dispatch.Source.API)
    services.dispatch_request(dispatch_id=retry.pk)
    _expire_deadline(retry)
    assert services.dispatch_deadline_check(dispatch_id=retry.pk) == S.NO_WORKER
    assert not Dispatch.objects.filter(previous=retry).exists()
    assert DispatchEvent.objects.filter(
        dispatch=retry, detail__startswith="gave up on 'support-agent'"
    ).exists()


def test_after_the_last_attempt_the_fallback_agent_is_dispatched(lk):
    lk.control.add_worker("generic-agent")
    fallback = AgentFactory(agent_name="generic-agent")
    dispatch = _pending(_room(), max_attempts=1, fallback=fallback)
    services.dispatch_request(dispatch_id=dispatch.pk)
    _expire_deadline(dispatch)
    services.dispatch_deadline_check(dispatch_id=dispatch.pk)
    replacement = Dispatch.objects.get(previous=dispatch)
    assert (replacement.agent_name, replacement.source, replacement.attempt) == (
        "generic-agent",
        "fallback",
        1,
    )
    services.dispatch_request(dispatch_id=replacement.pk)
    eventually(lambda: agents_in(lk, "support-1", "generic-agent"))


def test_a_crashed_job_is_failed_with_its_error(lk):
    lk.control.add_worker("support-agent", behavior="crash", crash_after_ms=0)
    dispatch = _pending(_room(), max_attempts=1)
    services.dispatch_request(dispatch_id=dispatch.pk)
    eventually(
        lambda: any(j["status"] == "JS_FAILED" for d in lk.control.state()["dispatches"] for j in d["jobs"])
    )
    _expire_deadline(dispatch)
    assert services.dispatch_deadline_check(dispatch_id=dispatch.pk) == S.FAILED
    dispatch.refresh_from_db()
    assert "failed: agent worker crashed" in dispatch.last_error


def test_an_agent_found_at_the_deadline_is_joined(lk):
    """The participant_joined webhook was lost: the deadline check sees the agent itself."""
    lk.control.add_worker("support-agent")
    dispatch = _pending(_room())
    services.dispatch_request(dispatch_id=dispatch.pk)
    eventually(lambda: agents_in(lk, "support-1", "support-agent"))
    _expire_deadline(dispatch)
    assert services.dispatch_deadline_check(dispatch_id=dispatch.pk) == S.AGENT_JOINED
    dispatch.refresh_from_db()
    assert dispatch.participant_identity == agents_in(lk, "support-1")[0]["identity"]
    assert dispatch.livekit_job_id.startswith("AJ_")


def test_token_agents_ignored_because_the_room_existed_are_dispatched_explicitly(lk):
    """LiveKit applies a token's agents only when the join creates the room: at the deadline
    the portal finds no dispatch and sends one itself (not counted as a new attempt)."""
    lk.control.add_worker("support-agent")
    AgentFactory(agent_name="support-agent")
    lk.control.create_rooms([{"name": "support-2"}])
    [dispatch] = token_dispatches_record(
        room_name="support-2",
        participant_identity="alice",
        agents=[{"agent_name": "support-agent", "rule": "r", "metadata": "", "delivery": "token"}],
        client="web",
        minted_at=timezone.now().timestamp(),
    )
    assert dispatch.status == S.PENDING and dispatch.delivery == "token"
    services.room_observe(name="support-2", sid="RM_x", started_at=timezone.now())
    dispatch.refresh_from_db()
    assert dispatch.deadline_at is not None
    _expire_deadline(dispatch)
    assert services.dispatch_deadline_check(dispatch_id=dispatch.pk) == "converted to explicit"
    assert services.dispatch_request(dispatch_id=dispatch.pk) == "created"
    dispatch.refresh_from_db()
    assert (dispatch.delivery, dispatch.attempt, dispatch.status) == ("explicit", 1, S.REQUESTED)


def test_room_gone_before_a_redispatch_closes_it_without_recreating_the_room(lk):
    room = _room("support-3")
    first = _pending(room, max_attempts=2)
    Dispatch.objects.filter(pk=first.pk).update(status=S.FAILED)
    retry, _ = services.dispatch_create(room=room, agent=first.agent, source="api", attempt=2, previous=first)
    assert services.dispatch_request(dispatch_id=retry.pk) == "room_gone"
    retry.refresh_from_db()
    assert retry.status == S.ROOM_CLOSED
    assert lk.control.state("support-3")["rooms"] == []


def test_cancel_while_create_dispatch_was_in_flight_takes_it_back(lk):
    lk.control.add_worker("support-agent")
    dispatch = _pending(_room())
    services.dispatch_cancel(dispatch=dispatch, by="test")
    # The task had already passed its guard when the cancel landed; simulate by forcing it on.
    Dispatch.objects.filter(pk=dispatch.pk).update(status=S.PENDING)
    moved = Dispatch.objects.filter(pk=dispatch.pk)
    services.dispatch_request(dispatch_id=dispatch.pk)
    assert moved.get().status == S.REQUESTED
    services.dispatch_cancel(dispatch=moved.get(), by="test")
    assert services.dispatch_remove(dispatch_id=dispatch.pk).startswith("AD_")
    assert not agents_in(lk, "support-1", "support-agent")


def test_one_live_dispatch_per_room_and_agent(lk):
    room = _room()
    agent = AgentFactory(agent_name="support-agent")
    first, created = services.dispatch_create(room=room, agent=agent, source="rule")
    again, created_again = services.dispatch_create(room=room, agent=agent, source="api")
    assert created and not created_again and again.pk == first.pk
    Dispatch.objects.filter(pk=first.pk).update(status=S.NO_WORKER)
    third, created_third = services.dispatch_create(room=room, agent=agent, source="api")
    assert created_third and third.pk != first.pk


def test_room_rules_apply_dispatches_only_explicit_rules(lk):
    RuleFactory(
        agent=AgentFactory(agent_name="explicit-agent"), room_match_value="support-*", delivery="explicit"
    )
    RuleFactory(agent=AgentFactory(agent_name="token-agent"), room_match_value="support-*", delivery="token")
    made = services.room_rules_apply(room=_room())
    assert [d.agent_name for d in made] == ["explicit-agent"]
    assert made[0].rule_name and made[0].source == "rule"


def test_no_job_yet_inside_the_assignment_window_moves_the_deadline_instead_of_judging(lk, settings):
    """The real server lists no job for seconds after a worker accepted it (availability
    window 10 s): judging then and dispatching again would bring a second agent."""
    settings.DISPATCH_ASSIGNMENT_WINDOW_S = 10
    dispatch = _pending(_room(), max_attempts=2, join_deadline_s=1)
    services.dispatch_request(dispatch_id=dispatch.pk)
    _expire_deadline(dispatch)
    assert services.dispatch_deadline_check(dispatch_id=dispatch.pk) == "deadline moved"
    dispatch.refresh_from_db()
    assert dispatch.status == S.REQUESTED
    assert 8 < (dispatch.deadline_at - timezone.now()).total_seconds() <= 10
    assert "LiveKit may still be offering it to a worker" in dispatch.events.order_by("-id").first().detail
    # Past the window with still no job: no worker, as before (no further extension).
    Dispatch.objects.filter(pk=dispatch.pk).update(
        requested_at=timezone.now() - timezone.timedelta(seconds=11)
    )
    _expire_deadline(dispatch)
    assert services.dispatch_deadline_check(dispatch_id=dispatch.pk) == S.NO_WORKER


def test_an_assigned_job_gets_the_join_deadline_counted_from_its_assignment():
    from agents_app.models import Agent
    from livekit_boundary.client import LkJob
    from rooms_app.services.lifecycle import _deadline_later

    now = timezone.now()
    running = (LkJob(id="AJ_1", status="running", error="", participant_identity="agent-AJ_1"),)
    dispatch = Dispatch(
        agent=Agent(agent_name="support-agent", join_deadline_s=5),
        deadline_at=now,
        requested_at=now - timezone.timedelta(seconds=5),
        job_assigned_at=now - timezone.timedelta(seconds=1),
    )
    room = Room(name="support-1")
    when, why = _deadline_later(dispatch, running, room=room, now=now)
    assert when == dispatch.job_assigned_at + timezone.timedelta(seconds=5)
    assert "from the job's assignment" in why
    # At that later deadline it is judged: no second extension.
    dispatch.deadline_at = when
    assert _deadline_later(dispatch, running, room=room, now=when) is None
    # A job that ended is judged at once.
    ended = (LkJob(id="AJ_1", status="failed", error="boom", participant_identity="agent-AJ_1"),)
    assert _deadline_later(dispatch, ended, room=room, now=now) is None


def _post_dispatch(api, room: str = "support-1") -> dict:
    _, key = make_client("web", rooms=["support-*"], agent_names=["support-agent"])
    answer = api.post(
        "/api/v1/dispatches",
        {"room_name": room, "agent_name": "support-agent"},
        format="json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert answer.status_code == 202, answer.content
    return answer.json()


def test_the_dispatch_api_sends_the_first_try_with_nothing_between_the_record_and_livekit(lk, api):
    """The row is recorded already claimed (one try, the lease held), so the request goes from
    its INSERTs straight to CreateDispatch: no read back, no claim UPDATE on the hot path."""
    lk.control.add_worker("support-agent")
    AgentFactory(agent_name="support-agent")
    with CaptureQueriesContext(connection) as queries:
        body = _post_dispatch(api)
    assert body["status"] == S.REQUESTED  # LiveKit answered within the request
    dispatch = Dispatch.objects.get(pk=body["id"])
    assert (dispatch.request_tries, dispatch.livekit_dispatch_id) == (1, body["livekit_dispatch_id"])
    assert len(create_dispatch_calls(lk, "support-1")) == 1
    sql = [q["sql"] for q in queries.captured_queries]
    recorded = next(i for i, s in enumerate(sql) if s.startswith('INSERT INTO "rooms_app_dispatch"'))
    answered = next(i for i, s in enumerate(sql) if s.startswith('UPDATE "rooms_app_dispatch" SET "status"'))
    between = [s.split(" (")[0] for s in sql[recorded + 1 : answered] if "SAVEPOINT" not in s]
    assert between == ['INSERT INTO "rooms_app_dispatchevent"']
    # The queued task (the retry path) finds the work done.
    assert services.dispatch_request(dispatch_id=dispatch.pk) == "skipped"
    assert len(create_dispatch_calls(lk, "support-1")) == 1


def test_the_dispatch_apis_first_try_failing_leaves_the_retry_to_look_up_at_once(lk, api):
    lk.control.add_worker("support-agent")
    AgentFactory(agent_name="support-agent")
    lk.control.faults(error_rate=1, error_status=503)
    body = _post_dispatch(api)
    lk.control.faults()
    assert body["status"] == S.PENDING
    dispatch = Dispatch.objects.get(pk=body["id"])
    # The lease is given back: the retry need not wait for it, and, a try having been made,
    # it asks LiveKit what that try may have created before creating.
    assert (dispatch.request_tries, dispatch.request_lease_until) == (1, None)
    assert services.dispatch_request(dispatch_id=dispatch.pk) == "created"
    assert lk.control.state()["counters"]["requests"]["livekit.RoomService/ListRooms"] == 1
    assert len(agents_in(lk, "support-1", "support-agent")) == 1
