"""Which silent worker held which agent (`agent_worker_silence`): the portal re-dispatches only
when it is sure, from what the workers' health URLs last answered and the ledger's joins."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from rooms_app.models import Dispatch, Room
from tests.factories import AgentFactory
from watch_app.models import WorkerEndpoint
from watch_app.selectors import agent_worker_silence, no_answer

pytestmark = pytest.mark.django_db
REFUSED = "cannot reach http://10.0.0.7:8081: ConnectionRefusedError"


@pytest.fixture
def joined():
    """An agent that joined a live room 10 s ago."""
    agent = AgentFactory(agent_name="support-agent")
    room = Room.objects.create(name="support-1", status="active")
    at = timezone.now() - timedelta(seconds=10)
    Dispatch.objects.create(
        room=room,
        agent=agent,
        agent_name=agent.agent_name,
        source="rule",
        status="agent_joined",
        joined_at=at,
    )
    return agent, at


def _endpoint(agent, n: int, *, answered_at, healthy: bool, jobs: int, polled_at=None, error: str = ""):
    return WorkerEndpoint.objects.create(
        agent=agent,
        url=f"http://10.0.0.{n}:8081",
        answered_at=answered_at,
        polled_at=polled_at or timezone.now(),
        healthy=healthy,
        active_jobs=jobs,
        last_error=error,
    )


def test_a_worker_silent_since_it_answered_with_the_job_holds_the_agent(joined):
    agent, at = joined
    _endpoint(agent, 1, answered_at=at + timedelta(seconds=5), healthy=False, jobs=1, error=REFUSED)
    _endpoint(agent, 2, answered_at=timezone.now(), healthy=True, jobs=0)
    silence = agent_worker_silence(agent_name="support-agent", joined_at=at)
    assert silence is not None and silence.holds
    assert silence.url == "http://10.0.0.1:8081" and silence.jobs == 1
    assert silence.described(at + timedelta(seconds=9)) == (
        f"the agent's worker stopped answering 4 s ago ({REFUSED})"
    )


@pytest.mark.parametrize(
    "other",
    [
        {"healthy": True, "jobs": 1},  # another worker runs a job: which one died is not known
        {"healthy": True, "jobs": 0, "polled_ago": 60},  # not polled since the join
        {"healthy": False, "jobs": 0, "error": "http://10.0.0.2:8081 answered 503"},  # alive, not connected
    ],
)
def test_it_is_not_sure_while_another_worker_might_hold_the_agent(joined, other):
    agent, at = joined
    _endpoint(agent, 1, answered_at=at + timedelta(seconds=5), healthy=False, jobs=1, error=REFUSED)
    polled = timezone.now() - timedelta(seconds=other.get("polled_ago", 0))
    _endpoint(
        agent,
        2,
        answered_at=polled,
        polled_at=polled,
        healthy=other["healthy"],
        jobs=other["jobs"],
        error=other.get("error", ""),
    )
    silence = agent_worker_silence(agent_name="support-agent", joined_at=at)
    assert silence is not None and not silence.holds


def test_more_joined_agents_than_the_silent_worker_ran_is_not_sure(joined):
    agent, at = joined
    room = Room.objects.create(name="support-2", status="active")
    Dispatch.objects.create(
        room=room,
        agent=agent,
        agent_name=agent.agent_name,
        source="rule",
        status="agent_joined",
        joined_at=at,
    )
    _endpoint(agent, 1, answered_at=at + timedelta(seconds=5), healthy=False, jobs=1, error=REFUSED)
    silence = agent_worker_silence(agent_name="support-agent", joined_at=at)
    assert silence is not None and not silence.holds


@pytest.mark.parametrize(
    "silent",
    [
        {"answered": -5, "jobs": 1, "error": REFUSED},  # went silent before the agent joined
        {"answered": 5, "jobs": 0, "error": REFUSED},  # had no job at its last answer
        {"answered": 5, "jobs": 1, "error": "http://10.0.0.1:8081 answered 503"},  # answered
    ],
)
def test_no_silence_that_could_concern_the_agent(joined, silent):
    agent, at = joined
    _endpoint(
        agent,
        1,
        answered_at=at + timedelta(seconds=silent["answered"]),
        healthy=False,
        jobs=silent["jobs"],
        error=silent["error"],
    )
    assert agent_worker_silence(agent_name="support-agent", joined_at=at) is None


def test_only_a_missing_answer_is_silence():
    assert no_answer(REFUSED)
    assert no_answer("http://10.0.0.7:8081 timed out after 3 s")
    assert not no_answer("http://10.0.0.7:8081 answered 503")
    assert not no_answer("/worker did not answer LiveKit Agents' JSON")
