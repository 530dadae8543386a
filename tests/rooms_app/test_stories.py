"""Issue 9's stories, end to end: the real HTTP API (live server), the emulator over HTTP
sending its webhooks to the live server, and a real Celery worker. At each moment a user
would ask, the doctor (over HTTP, as a client would) names what is really going on."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from django.utils import timezone

from operator_views.doctor import room_diagnose
from rooms_app.models import AgentSeen, Dispatch, Room, TokenFact, WorkerHeartbeat
from rooms_app.reconcile import reconcile_run
from tests.factories import AgentFactory, RuleFactory, make_client

from .conftest import agents_in, create_dispatch_calls, eventually
from .test_end_to_end import token

pytestmark = [pytest.mark.django_db(transaction=True)]
S = Dispatch.Status


def http(live_server, key: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{live_server.url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def diagnosis(live_server, key: str, room: str) -> dict:
    code, body = http(live_server, key, "GET", f"/api/v1/rooms/{room}/diagnosis")
    assert code == 200, body
    return body


def link(body: dict, number: int) -> dict:
    return body["links"][number - 1]


def rows(room: str, agent_name: str) -> list[Dispatch]:
    return list(Dispatch.objects.filter(room__name=room, agent_name=agent_name).order_by("id"))


def timeline(room: str) -> list[str]:
    return [e.detail for d in Dispatch.objects.filter(room__name=room) for e in d.events.all()]


# --- story 1: a healthy token room, with the events in every order ----------------------------


@pytest.fixture
def interviewer(e2e, live_server):
    agent = AgentFactory(agent_name="interviewer", join_deadline_s=15)
    RuleFactory(name="interviews", agent=agent, room_match_value="interview-*", delivery="token")
    _, key = make_client("web", rooms=["interview-*"])
    e2e.control.add_worker("interviewer", delay_ms=50)
    return key


def _healthy(body: dict, room: str) -> None:
    assert body["status"] == "healthy" and body["exit_code"] == 0, body["summary"]
    assert link(body, 3)["state"] == "ok"
    assert "'interviewer': carried in the token for 'ann'" in link(body, 3)["summary"]


@pytest.mark.parametrize("order", ["webhook first", "token fact first", "reconcile first"])
def test_healthy_token_room_is_healthy_at_every_moment(e2e, live_server, interviewer, order):
    room = f"interview-{order.split()[0]}"
    if order == "reconcile first":
        e2e.control.webhooks(url=None)  # no webhook reaches the portal: reconcile finds it all
    minted = token(live_server, interviewer, room, "ann")
    assert minted["dispatch"]["agents"][0]["delivery"] == "token"
    # The token's agents were a fact in the database before the answer.
    assert TokenFact.objects.filter(room_name=room, participant_identity="ann").exists()
    if order == "token fact first":
        eventually(lambda: Dispatch.objects.filter(room__name=room).exists(), what="fact applied by the task")
    e2e.control.join(minted["participant_token"])
    eventually(lambda: agents_in(e2e, room, "interviewer"), what="agent in the room")
    if order == "reconcile first":
        assert not Dispatch.objects.filter(room__name=room, status=S.AGENT_JOINED).exists()
        reconcile_run()
    row = eventually(
        lambda: Dispatch.objects.filter(room__name=room, status=S.AGENT_JOINED).first(), what="agent joined"
    )
    assert row.source == "token" and row.participant_identity_trigger == "ann"
    assert len(rows(room, "interviewer")) == 1

    _healthy(diagnosis(live_server, interviewer, room), room)
    for later in (0.5, 2, 6):  # the same answer a little later (the doctor's clock moved)
        answer = room_diagnose(room_name=room, now=timezone.now() + timedelta(seconds=later))
        assert answer.status == "healthy", (later, answer.summary)
    code, state = http(live_server, interviewer, "GET", f"/api/v1/rooms/{room}")
    assert code == 200 and state["ready"] is True


def test_an_agent_adopted_before_its_token_fact_keeps_the_token_in_the_doctor(e2e, live_server, interviewer):
    """The agent's participant_joined adopts it before the token's fact reaches the ledger
    (here the fact's application is held back by hand): the fact is still there, the doctor
    still says the token carried the agent, and applying the fact later notes it."""
    from rooms_app import services

    minted = token(live_server, interviewer, "interview-late", "ann")
    TokenFact.objects.filter(room_name="interview-late").update(applied_at=timezone.now())  # held back
    e2e.control.join(minted["participant_token"])
    row = eventually(
        lambda: Dispatch.objects.filter(room__name="interview-late", status=S.AGENT_JOINED).first(),
        what="agent adopted",
    )
    assert row.source == "reconcile"
    _healthy(diagnosis(live_server, interviewer, "interview-late"), "interview-late")
    TokenFact.objects.filter(room_name="interview-late").update(applied_at=None)
    assert services.token_facts_apply(room_name="interview-late") == 1
    assert any("token minted for 'ann'" in d for d in timeline("interview-late"))


# --- story 2: a typo in the agent name, at every moment ---------------------------------------


def test_agent_name_typo_is_named_before_during_and_after_the_retries_and_after_recovery(e2e, live_server):
    agent = AgentFactory(agent_name="demo-agnet", join_deadline_s=3, max_attempts=2)
    RuleFactory(name="demo", agent=agent, room_match_value="demo-*", delivery="explicit")
    _, key = make_client("web", rooms=["demo-*", "other-*"], agent_names=["demo-agnet"])
    e2e.control.add_worker("demo-agent")  # the worker's real name
    # The worker is seen answering another app's room: the portal learns its name.
    e2e.control.create_rooms([{"name": "other-1", "agents": [{"agent_name": "demo-agent"}]}])
    eventually(lambda: AgentSeen.objects.filter(agent_name="demo-agent").exists(), what="worker name seen")

    e2e.control.create_rooms([{"name": "demo-1", "participants": [{"identity": "ann"}]}])
    first = eventually(
        lambda: Dispatch.objects.filter(room__name="demo-1", status=S.REQUESTED).first(), what="requested"
    )
    before = diagnosis(live_server, key, "demo-1")  # before the deadline
    assert before["status"] == "waiting" and before["exit_code"] == 0, before["summary"]
    assert "waiting" in link(before, 5)["summary"] and "no job yet" in link(before, 5)["summary"]

    retrying = eventually(
        lambda: Dispatch.objects.filter(
            room__name="demo-1", attempt=2, status__in=("pending", "requested")
        ).first(),
        what="the retry",
    )
    during = diagnosis(live_server, key, "demo-1")
    if Dispatch.objects.get(pk=retrying.pk).is_live:  # still during the retry when asked
        assert during["first_broken_link"] == 5, during["summary"]
        assert "Workers seen recently: 'demo-agent'" in during["cause"] and "typo" in during["cause"]
        assert "trying again: attempt 2" in during["cause"]
        assert "Celery worker" not in during["cause"] and "no longer in LiveKit" not in during["cause"]

    eventually(
        lambda: (
            not Dispatch.objects.filter(room__name="demo-1", status__in=("pending", "requested")).exists()
        ),
        timeout=15,
        what="the portal gives up",
    )
    assert Dispatch.objects.get(pk=first.pk).status == S.NO_WORKER
    after = diagnosis(live_server, key, "demo-1")
    assert after["first_broken_link"] == 5 and after["exit_code"] == 1, after["summary"]
    assert (
        "Workers seen recently: 'demo-agent'" in after["cause"]
        and "gave up after 2 attempt(s)" in after["cause"]
    )
    assert "deleted or the room was recreated" not in after["cause"] and "Celery" not in after["cause"]

    # Recovery: a worker under the portal's name comes up, and the client asks again.
    e2e.control.add_worker("demo-agnet")
    code, body = http(
        live_server, key, "POST", "/api/v1/dispatches", {"room_name": "demo-1", "agent_name": "demo-agnet"}
    )
    assert code == 202, body
    eventually(
        lambda: Dispatch.objects.filter(room__name="demo-1", status=S.AGENT_JOINED).exists(), what="joined"
    )
    recovered = diagnosis(live_server, key, "demo-1")
    assert recovered["status"] == "healthy", recovered["summary"]


# --- story 3: the room was created between minting and joining --------------------------------


def test_a_room_created_after_minting_is_detected_at_the_join(e2e, live_server):
    agent = AgentFactory(agent_name="interviewer", join_deadline_s=60)  # the deadline must not be what helps
    RuleFactory(name="interviews", agent=agent, room_match_value="interview-*", delivery="token")
    _, key = make_client("web", rooms=["interview-*"])
    e2e.control.add_worker("interviewer", delay_ms=50)
    minted = token(live_server, key, "interview-3", "ann")
    assert minted["dispatch"]["agents"][0]["delivery"] == "token"  # the room did not exist yet
    e2e.control.create_rooms([{"name": "interview-3", "participants": [{"identity": "other-app"}]}])
    eventually(lambda: Room.objects.filter(name="interview-3", status="active").exists(), what="room seen")

    joined = e2e.control.join(minted["participant_token"])
    assert joined["room_created"] is False  # LiveKit ignores the token's agents
    row = eventually(
        lambda: Dispatch.objects.filter(room__name="interview-3", status=S.AGENT_JOINED).first(),
        timeout=10,
        what="agent joined long before its 60 s deadline",
    )
    assert row.attempt == 1 and row.source == "token" and row.delivery == "explicit"
    assert any("'ann' joined a room that already existed" in d for d in timeline("interview-3"))
    assert len(create_dispatch_calls(e2e, "interview-3")) == 1
    body = diagnosis(live_server, key, "interview-3")
    assert body["status"] == "healthy", body["summary"]
    assert "LiveKit ignored it" in link(body, 3)["summary"] and "explicitly" in link(body, 3)["summary"]


# --- story 4: link 3 never contradicts itself -------------------------------------------------


def test_a_token_for_an_existing_room_is_explained_without_contradiction(e2e, live_server):
    agent = AgentFactory(agent_name="interviewer")
    RuleFactory(name="interviews", agent=agent, room_match_value="interview-*", delivery="token")
    _, key = make_client("web", rooms=["interview-*"])
    e2e.control.add_worker("interviewer")
    e2e.control.create_rooms([{"name": "interview-4", "participants": [{"identity": "first"}]}])
    eventually(lambda: Room.objects.filter(name="interview-4", status="active").exists(), what="room seen")
    minted = token(live_server, key, "interview-4", "ann")
    assert minted["dispatch"]["agents"][0]["delivery"] == "explicit"
    e2e.control.join(minted["participant_token"])
    eventually(lambda: Dispatch.objects.filter(room__name="interview-4", status=S.AGENT_JOINED).exists())
    token_link = link(diagnosis(live_server, key, "interview-4"), 3)
    assert token_link["state"] == "ok"
    assert "did not exist" not in token_link["title"]
    assert "the room already existed when the token for 'ann'" in token_link["summary"]


# --- story 7: the job is on the timeline ------------------------------------------------------


def test_the_job_is_recorded_when_livekit_shows_it(e2e, live_server):
    agent = AgentFactory(agent_name="support-agent")
    RuleFactory(name="support", agent=agent, room_match_value="support-*", delivery="explicit")
    _, key = make_client("web", rooms=["support-*"], agent_names=["support-agent"])
    e2e.control.add_worker("support-agent", delay_ms=300)
    code, body = http(
        live_server,
        key,
        "POST",
        "/api/v1/dispatches",
        {"room_name": "support-71", "agent_name": "support-agent"},
    )
    assert code == 202
    eventually(lambda: Dispatch.objects.filter(pk=body["id"], status=S.AGENT_JOINED).exists(), what="joined")
    code, seen = http(live_server, key, "GET", f"/api/v1/dispatches/{body['id']}")
    assert [e["status"] for e in seen["events"]] == ["pending", "requested", "job_assigned", "agent_joined"]
    assert seen["job_assigned_at"] is not None


# --- the worker's heartbeat -------------------------------------------------------------------


def test_the_real_worker_writes_a_heartbeat_the_doctor_reads(e2e, worker):
    beat = eventually(
        lambda: WorkerHeartbeat.objects.filter(beat_at__gte=timezone.now() - timedelta(seconds=20)).first(),
        what="a recent heartbeat",
    )
    assert beat.hostname


# --- a crashing worker: the job failed, the agent left, then the worker is fixed ---------------


def test_a_crashing_agent_is_named_then_healthy_after_recovery(e2e, live_server):
    agent = AgentFactory(agent_name="support-agent", join_deadline_s=2, max_attempts=8)
    RuleFactory(name="support", agent=agent, room_match_value="support-*", delivery="explicit")
    _, key = make_client("web", rooms=["support-*"], agent_names=["support-agent"])
    e2e.control.add_worker("support-agent", behavior="crash", crash_after_ms=300)
    e2e.control.create_rooms([{"name": "support-81", "participants": [{"identity": "caller"}]}])
    eventually(
        lambda: Dispatch.objects.filter(room__name="support-81", status=S.FAILED).exists(), what="crash seen"
    )
    # No worker while we ask: nothing can hide it. The portal re-dispatches at once, so the
    # crashing worker may already be running the next attempt's job when it is removed; that
    # job, the newest, then ended because its worker went away, and the doctor says so.
    removed = e2e.control.remove_worker("support-agent")["removed"]
    ended_by_removal = any(worker["active_jobs"] for worker in removed)
    during = diagnosis(live_server, key, "support-81")
    assert during["first_broken_link"] == 6 and during["exit_code"] == 1, during["summary"]
    named = "agent worker disconnected" if ended_by_removal else "agent worker crashed"
    assert named in during["cause"], during["cause"]
    assert "The portal is re-dispatching: attempt" in during["cause"]
    assert "Celery" not in during["cause"]

    e2e.control.add_worker("support-agent")  # the fixed worker
    # Both, whichever comes first: the attempt the removal ended may still read agent_joined in
    # the ledger until the portal hears of its failure, and the doctor, judging by LiveKit, may
    # see the new agent before the ledger records its join.
    eventually(
        lambda: (
            Dispatch.objects.filter(room__name="support-81", status=S.AGENT_JOINED).exists()
            and diagnosis(live_server, key, "support-81")["status"] == "healthy"
        ),
        timeout=20,
        what="a re-dispatch joined the fixed worker, and the doctor says healthy",
    )
    assert len(agents_in(e2e, "support-81", "support-agent")) == 1
