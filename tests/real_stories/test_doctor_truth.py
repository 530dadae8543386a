"""The doctor tells the truth while things break (issue 16, items 4 and 5), on LiveKit's own
server with real livekit-agents workers: a worker SIGKILLed with its agent in a room, the
portal giving up on it, an entrypoint that raises, and a rule whose agent-name typo was fixed.
At each moment the test asserts what the room API (`GET /api/v1/rooms/{room}`) and the doctor
(`room_diagnose`) say, and what LiveKit lists.

The worker polls run from the test, exactly as beat runs them (`workers.poll`); so each moment
(one poll after the kill, the second) is one the test can stop at and look."""

from __future__ import annotations

import time

import pytest
from livekit import api

from agents_app.models import Agent
from operator_views.doctor import room_diagnose
from rooms_app.models import Dispatch
from rooms_app.services import WORKER_STOPPED
from tests.factories import AgentFactory, RuleFactory, make_client
from tests.support import eventually
from watch_app import presence
from watch_app.checks import dispatches_check
from watch_app.models import Incident, WorkerEndpoint

pytestmark = [pytest.mark.django_db(transaction=True)]
S = Dispatch.Status


def doctor(room: str) -> dict:
    return room_diagnose(room_name=room).as_dict()


def explicit_agent(agent_name: str = "support-agent", rooms: str = "support-*", **fields) -> Agent:
    agent = AgentFactory(agent_name=agent_name, **fields)
    RuleFactory(name=f"{agent_name} explicit", agent=agent, room_match_value=rooms, delivery="explicit")
    return agent


def health_url_register(agent: Agent, *workers) -> None:
    """Admin › Worker health URLs: each worker's own HTTP server (loopback: allowed)."""
    for worker in workers:
        WorkerEndpoint.objects.create(agent=agent, url=worker.health_url, allow_private=True)


def test_a_sigkilled_worker_is_known_dead_in_seconds_and_its_agent_replaced(stack, agent_worker):
    agent = explicit_agent(join_deadline_s=8, max_attempts=3)
    _, key = make_client("web", rooms=["support-*"])
    first = agent_worker(agent_name="support-agent")
    stack.join(stack.token(key, "support-k1", "caller"))
    row = stack.wait_joined("support-k1", "support-agent")
    # The replacement accepts its job 2 s late, so the moment before it joins can be looked at.
    second = agent_worker(agent_name="support-agent", behavior="slow", delay_s=2)
    health_url_register(agent, first, second)
    assert presence.workers_poll() == 2  # beat: both answer, the first with the room's job
    assert WorkerEndpoint.objects.get(url=first.health_url).active_jobs == 1
    before = doctor("support-k1")
    assert before["status"] == "healthy", before["summary"]

    killed_at = time.monotonic()
    first.kill()  # SIGKILL: the worker and its job process
    assert presence.workers_poll() == 1  # the first poll after the kill: silent once

    # LiveKit still lists the dead agent (it does for about 20 s); the doctor is not fooled.
    [ghost] = stack.agents("support-k1", "support-agent")
    assert ghost.identity == row.participant_identity
    once = doctor("support-k1")
    print(f"\n{time.monotonic() - killed_at:.1f} s after SIGKILL, the doctor: {once['summary']}")
    assert once["status"] == "broken" and once["first_broken_link"] == 7, once["summary"]
    assert "is still listed by LiveKit, but the agent's worker stopped answering" in once["summary"]
    assert f" s ago (cannot reach {first.health_url}: ConnectionRefusedError)" in once["summary"]
    # The ledger has not ruled yet: one silent poll is not sure enough to re-dispatch.
    assert stack.room_state(key, "support-k1")["ready"] is True
    assert Dispatch.objects.get(pk=row.pk).status == S.AGENT_JOINED

    presence.workers_poll()  # silent twice in a row, and the other worker has no job: sure
    sure_s = time.monotonic() - killed_at
    failed = Dispatch.objects.get(pk=row.pk)
    assert failed.status == S.FAILED and failed.last_error.startswith(WORKER_STOPPED), failed.last_error
    assert stack.agents("support-k1", "support-agent") == []  # the ghost was removed at once
    replacing = doctor("support-k1")
    state = stack.room_state(key, "support-k1")
    print(f"{sure_s:.1f} s after SIGKILL the portal re-dispatched; the doctor: {replacing['summary']}")
    assert replacing["status"] == "broken" and replacing["first_broken_link"] == 7, replacing["summary"]
    assert "attempt 1 of 'support-agent' failed: the agent's worker stopped answering" in replacing["summary"]
    assert "retrying: attempt 2 of 3" in replacing["summary"]
    assert state["ready"] is False
    [wanted] = state["agents"]
    assert wanted["attempt"] == 2 and wanted["status"] in ("pending", "requested", "job_assigned"), wanted

    def one_agent_joined() -> bool:
        assert len(stack.agents("support-k1", "support-agent")) <= 1  # never two of one name
        return stack.room_state(key, "support-k1")["ready"]

    eventually(one_agent_joined, timeout=30, interval=0.1, what="the replacement joined")
    again = Dispatch.objects.get(room__name="support-k1", status=S.AGENT_JOINED)
    assert (again.attempt, again.previous_id) == (2, row.pk)
    [agent_now] = stack.agents("support-k1", "support-agent")
    assert agent_now.identity == again.participant_identity
    healed = doctor("support-k1")
    print(f"{time.monotonic() - killed_at:.1f} s after SIGKILL, the doctor: {healed['summary']}")
    assert healed["status"] == "healthy", healed["summary"]
    assert second.status()["active_jobs"] == 1


def test_after_giving_up_on_a_dead_agent_the_doctor_says_so_with_the_incident(stack, agent_worker):
    agent = explicit_agent(join_deadline_s=3, max_attempts=1)
    _, key = make_client("web", rooms=["support-*"])
    worker = agent_worker(agent_name="support-agent")
    stack.join(stack.token(key, "support-k2", "caller"))
    row = stack.wait_joined("support-k2", "support-agent")
    health_url_register(agent, worker)
    presence.workers_poll()

    worker.kill()
    presence.workers_poll()
    presence.workers_poll()  # sure: no attempt left, so the portal gives up

    assert Dispatch.objects.get(pk=row.pk).status == S.FAILED
    assert not Dispatch.objects.filter(room__name="support-k2", status__in=("pending", "requested")).exists()
    incident = Incident.objects.get(key="dispatch_gave_up:support-agent", status="open")
    gave_up = doctor("support-k2")
    print(f"\nafter giving up, the doctor: {gave_up['summary']}")
    assert gave_up["status"] == "broken" and gave_up["exit_code"] == 1, gave_up["summary"]
    assert gave_up["first_broken_link"] == 7, gave_up["summary"]
    assert "the agent's worker stopped answering" in gave_up["summary"]
    assert "the portal gave up after 1 attempt(s)" in gave_up["summary"]
    assert f"incident '{incident.key}' opened at" in gave_up["summary"]
    state = stack.room_state(key, "support-k2")
    assert state["ready"] is False and state["agents"][0]["status"] == "failed"


def test_without_health_urls_the_job_livekit_lists_as_running_forever_does_not_hide_a_give_up(
    stack, agent_worker
):
    """The issue's story: no worker health URL, so LiveKit's own timeout tells the portal (about
    20 s); the portal gives up, and LiveKit goes on listing the dead worker's job as running."""
    explicit_agent(join_deadline_s=3, max_attempts=1)
    _, key = make_client("web", rooms=["support-*"])
    worker = agent_worker(agent_name="support-agent")
    stack.join(stack.token(key, "support-k4", "caller"))
    row = stack.wait_joined("support-k4", "support-agent")
    eventually(
        lambda: [j for d in stack.dispatches("support-k4") for j in d.state.jobs], what="the job listed"
    )

    killed_at = time.monotonic()
    worker.kill()
    # No health URL: nothing tells the doctor the worker died while LiveKit lists the agent.
    assert doctor("support-k4")["status"] == "healthy"
    eventually(lambda: Dispatch.objects.filter(pk=row.pk, status=S.FAILED).exists(), timeout=40, interval=0.2)
    print(
        f"\nwithout health URLs, LiveKit said the agent left {time.monotonic() - killed_at:.1f} s after SIGKILL"
    )
    dispatches_check(settled=True)  # what beat's alert check does

    [job] = [j for d in stack.dispatches("support-k4", "support-agent") for j in d.state.jobs]
    assert job.state.status == api.JobStatus.JS_RUNNING  # and it stays so
    gave_up = doctor("support-k4")
    print(f"the doctor: {gave_up['summary']}")
    assert gave_up["status"] == "broken" and gave_up["first_broken_link"] == 7, gave_up["summary"]
    assert "left the room" in gave_up["summary"]
    assert "the portal gave up after 1 attempt(s)" in gave_up["summary"]
    assert "incident 'dispatch_gave_up:support-agent' opened at" in gave_up["summary"]
    assert stack.room_state(key, "support-k4")["ready"] is False


def test_a_raising_entrypoint_is_broken_and_retrying_not_nothing_broken_yet(stack, agent_worker):
    # 6 s: the real server lists a worker's job seconds late; shorter reads "no worker".
    explicit_agent(join_deadline_s=6, max_attempts=2)
    _, key = make_client("web", rooms=["support-*"])
    agent_worker(agent_name="support-agent", behavior="raise")
    stack.join(stack.token(key, "support-k3", "caller"))

    first = eventually(
        lambda: (
            Dispatch.objects.filter(room__name="support-k3", attempt=1)
            .exclude(status__in=("pending",))
            .first()
        ),
        what="attempt 1 sent",
    )
    waiting = doctor("support-k3")  # within attempt 1's deadline: not broken yet
    assert waiting["status"] == "waiting", waiting["summary"]

    second = eventually(
        lambda: Dispatch.objects.filter(room__name="support-k3", attempt=2).first(),
        timeout=20,
        what="attempt 2",
    )
    first.refresh_from_db()
    assert first.status == S.TIMED_OUT, (first.status, first.last_error)
    retrying = doctor("support-k3")
    second.refresh_from_db()
    print(f"\nattempt 2 {second.status}, the doctor: {retrying['summary']}")
    assert second.is_live
    assert retrying["status"] == "broken" and retrying["first_broken_link"] == 7, retrying["summary"]
    assert "attempt 1 of 'support-agent' timed out" in retrying["summary"]
    assert "retrying: attempt 2 of 2" in retrying["summary"]
    state = stack.room_state(key, "support-k3")
    assert state["ready"] is False and state["agents"][0]["attempt"] == 2

    eventually(lambda: Dispatch.objects.filter(pk=second.pk, status=S.TIMED_OUT).exists(), timeout=20)
    dispatches_check(settled=True)  # what beat's alert check does
    gave_up = doctor("support-k3")
    print(f"attempt 2 timed out, the doctor: {gave_up['summary']}")
    assert gave_up["first_broken_link"] == 7, gave_up["summary"]
    assert "attempt 2 of 'support-agent' timed out" in gave_up["summary"]
    assert "the portal gave up after 2 attempt(s)" in gave_up["summary"]
    assert "incident 'dispatch_gave_up:support-agent' opened at" in gave_up["summary"]


def test_a_typo_fixed_in_the_rule_leaves_the_room_ready_with_the_right_agent(stack, agent_worker):
    right = AgentFactory(agent_name="doc-agent")
    AgentFactory(agent_name="doc-agnet", join_deadline_s=2, max_attempts=1)  # the typo
    rule = RuleFactory(
        name="docs by token",
        agent=Agent.objects.get(agent_name="doc-agnet"),
        room_match_value="docs-*",
        delivery="token",
    )
    _, key = make_client("web", rooms=["docs-*"])
    agent_worker(agent_name="doc-agent")
    minted = stack.token(key, "docs-1", "ann")
    assert [a["agent_name"] for a in minted["dispatch"]["agents"]] == ["doc-agnet"]
    stack.join(minted)

    eventually(
        lambda: Dispatch.objects.filter(
            room__name="docs-1", agent_name="doc-agnet", status=S.NO_WORKER
        ).exists(),
        timeout=20,
        what="the typo's dispatch found no worker",
    )
    typo = doctor("docs-1")
    print(f"\nwith the typo, the doctor: {typo['summary']}")
    assert typo["status"] == "broken" and typo["first_broken_link"] == 5, typo["summary"]
    assert "the portal gave up after 1 attempt(s)" in typo["summary"]
    assert stack.room_state(key, "docs-1")["ready"] is False

    rule.agent = right  # the admin fixes the rule
    rule.save()
    minted = stack.token(key, "docs-1", "ann")  # ann's app fetches a fresh token: the room is live
    assert [(a["agent_name"], a["delivery"]) for a in minted["dispatch"]["agents"]] == [
        ("doc-agent", "explicit")
    ]
    stack.wait_joined("docs-1", "doc-agent")

    state = stack.room_state(key, "docs-1")
    assert state["ready"] is True, state
    assert [(a["agent_name"], a["status"]) for a in state["agents"]] == [("doc-agent", "agent_joined")]
    fixed = doctor("docs-1")
    print(f"after the fix, the doctor: {fixed['summary']}")
    assert fixed["status"] == "healthy", fixed["summary"]
    assert fixed["expected_agents"] == ["doc-agent"]
    [rules_link] = [link for link in fixed["links"] if link["key"] == "rules"]
    assert any("'doc-agnet' is no longer expected" in d for d in rules_link["details"]), rules_link
