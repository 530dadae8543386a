"""Scale-out stories (issue 21): the portal against a two-node LiveKit cluster (two real
livekit-server processes sharing one Redis, tests/livekit_cluster.py) with real livekit-agents
workers registered to each node; and two portal instances (gunicorn) with two Celery workers
and one beat on one database.

What LiveKit does with a killed node is written in tests/livekit_cluster.py's docstring."""

from __future__ import annotations

import threading

import pytest

from agents_app.models import Agent
from operator_views.doctor import room_diagnose
from rooms_app.models import Dispatch, Room
from rooms_app.reconcile import reconcile_run
from tests.factories import AgentFactory, RuleFactory, make_client
from tests.support import eventually

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.needs_livekit_server,
    pytest.mark.needs_redis,
    pytest.mark.needs_postgres,
]
S = Dispatch.Status
LIVE = (S.PENDING, S.REQUESTED, S.JOB_ASSIGNED, S.AGENT_JOINED)
AGENT = "cluster-agent"


def workers_on_both_nodes(cluster, agent_name: str = AGENT) -> dict:
    """One worker of `agent_name` registered with each node, started side by side."""
    started: dict = {}

    def start(node: str) -> None:
        started[node] = cluster.worker(node, agent_name=agent_name)

    threads = [threading.Thread(target=start, args=(node,)) for node in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(started) == {"a", "b"}, "a worker failed to register (see the worker logs)"
    return started


def explicit_rule(rooms: str = "cluster-*"):
    agent = AgentFactory(agent_name=AGENT, join_deadline_s=15)
    return RuleFactory(name="cluster rooms", agent=agent, room_match_value=rooms, delivery="explicit")


def webhooks_from(node, room: str) -> set[str]:
    """Events about `room` that this node posted (its own relay)."""
    import json

    return {
        json.loads(body)["event"]
        for body, _headers in node.server.relay.received
        if json.loads(body).get("room", {}).get("name") == room
    }


def test_rooms_on_both_nodes_get_their_agent_and_the_portal_agrees_with_the_cluster(cluster_stack):
    cluster = cluster_stack.cluster
    explicit_rule()
    _, key = make_client("web", rooms=["cluster-*"])
    workers = workers_on_both_nodes(cluster)
    assert workers["a"].worker_id != workers["b"].worker_id

    # One room hosted by each node; people join through node a's address either way.
    cluster.create_room("cluster-on-a", "a")
    cluster.create_room("cluster-on-b", "b")
    assert (cluster.room_node("cluster-on-a"), cluster.room_node("cluster-on-b")) == ("a", "b")
    for room in ("cluster-on-a", "cluster-on-b"):
        cluster_stack.join(cluster_stack.token(key, room, "caller"))

    for room in ("cluster-on-a", "cluster-on-b"):
        row = cluster_stack.wait_joined(room, AGENT, timeout=30)
        [agent] = cluster_stack.agents(room, AGENT)
        assert row.participant_identity == agent.identity
        assert Dispatch.objects.filter(room__name=room, agent_name=AGENT).count() == 1
    # Each room's webhooks come from the node that hosts it, and only from it.
    assert {"room_started", "participant_joined"} <= webhooks_from(cluster.b, "cluster-on-b")
    assert webhooks_from(cluster.a, "cluster-on-b") == set()
    assert {"room_started", "participant_joined"} <= webhooks_from(cluster.a, "cluster-on-a")

    report = reconcile_run()
    assert report.error == "" and report.livekit_errors == 0
    assert report.rooms_in_livekit == 2 and report.rooms_checked == 2
    assert report.repaired == 0, report.as_dict()  # webhooks from both nodes left nothing to repair

    for room in ("cluster-on-a", "cluster-on-b"):
        diagnosis = room_diagnose(room_name=room, agent_name=AGENT).as_dict()
        assert diagnosis["status"] == "healthy", diagnosis

    from watch_app.canary import canary_run
    from watch_app.models import CanaryRun

    # Canary probe rooms land on either node (LiveKit's default selector picks at random).
    agent = Agent.objects.get(agent_name=AGENT)
    runs = [canary_run(agent_id=agent.pk) for _ in range(2)]
    assert [r.status for r in runs] == [CanaryRun.Status.SUCCESS] * 2, [r.error for r in runs]
    assert all(r.join_s is not None for r in runs)
    assert not Room.objects.filter(name__startswith="canary").exists()


def test_a_node_killed_with_rooms_on_it(cluster_stack):
    """SIGKILL node b while it hosts a room and a worker. LiveKit goes on listing that room
    (from its Redis) while calls to the node fail: the doctor names the dead node, not LiveKit
    as a whole, and reconcile leaves the room's dispatches as they are and says why. The
    person's SDK reconnects through node a, which moves the room there (same sid): an agent
    whose job ran on node a's worker comes back by itself, one on node b's worker does not and
    is dispatched again. In node a's room, an agent on node b's worker leaves (node a's webhook
    says so) and is dispatched again. Both people end up with one agent, the one the ledger
    names, and each attempt that ended says why."""
    cluster = cluster_stack.cluster
    explicit_rule()
    _, key = make_client("web", rooms=["cluster-*"])
    workers_on_both_nodes(cluster)
    cluster.create_room("cluster-on-a", "a")
    cluster.create_room("cluster-on-b", "b")
    people = {
        room: cluster_stack.join(cluster_stack.token(key, room, "caller"))
        for room in ("cluster-on-a", "cluster-on-b")
    }
    before = {room: cluster_stack.wait_joined(room, AGENT, timeout=30) for room in people}

    cluster.kill("b")

    # Within LiveKit's 5 s before node b counts as unavailable the room stays placed on it:
    # a reconcile pass and the doctor, side by side (each waits LiveKit's 3 s for node b).
    reports = []
    pass_thread = threading.Thread(target=lambda: reports.append(reconcile_run(room_names=["cluster-on-b"])))
    pass_thread.start()
    diagnosis = room_diagnose(room_name="cluster-on-b", agent_name=AGENT).as_dict()
    pass_thread.join(30)
    assert cluster.room_node("cluster-on-b") == "b"
    [livekit_link] = [link for link in diagnosis["links"] if link["key"] == "livekit"]
    assert diagnosis["first_broken_link"] == livekit_link["number"]
    assert livekit_link["summary"] == (
        f"LiveKit at {cluster.a.server.url} answered, but the LiveKit node hosting room 'cluster-on-b' does not"
    )
    assert "no response from servers" in livekit_link["cause"]
    [report] = reports
    assert report.rooms_in_livekit == 1 and report.rooms_checked == 0 and report.livekit_errors == 1
    assert report.notes == [
        "cluster-on-b: LiveKit ListParticipants answered 503 unavailable: twirp error unknown: no response from servers"
    ]
    before["cluster-on-b"].refresh_from_db()
    assert before["cluster-on-b"].status == S.AGENT_JOINED  # not judged while its node is silent

    # The person's SDK notices node b is gone and reconnects through node a, which moves the
    # room there once node b has been silent for 5 s.
    eventually(lambda: cluster.room_node("cluster-on-b") == "a", timeout=40, interval=0.5, what="room moved")

    def agent_as_the_ledger_says(room: str) -> bool:
        reconcile_run()  # what the schedule does every 30 s
        row = Dispatch.objects.filter(room__name=room, status=S.AGENT_JOINED).order_by("-id").first()
        return row is not None and people[room].agents() == [row.participant_identity]

    for room in people:
        try:
            eventually(
                lambda room=room: agent_as_the_ledger_says(room),
                timeout=45,
                interval=0.5,
                what=f"an agent in {room}, as the ledger says",
            )
        except AssertionError as exc:
            rows = [
                (d.pk, d.status, d.participant_identity, d.last_error)
                for d in Dispatch.objects.filter(room__name=room)
            ]
            seen = [p.identity for p in cluster_stack.agents(room)]
            raise AssertionError(
                f"{exc}\nledger: {rows}\nthe person sees: {people[room].agents()}\nLiveKit lists: {seen}\n"
                f"LiveKit dispatches: {cluster_stack.dispatches(room)}\ncelery: {cluster_stack.celery.log()[-3000:]}"
            ) from None
        ended = Dispatch.objects.filter(room__name=room).exclude(status=S.AGENT_JOINED)
        assert all(d.last_error for d in ended), [(d.status, d.last_error) for d in ended]
        assert Dispatch.objects.filter(room__name=room, status__in=LIVE).count() == 1


def test_two_portals_two_celery_workers_one_beat(real_livekit, request):
    """Tokens for the same rooms asked of both portals at once: one dispatch per room in the
    ledger and in LiveKit, every token's fact kept and applied; one beat and two workers run
    one canary per tick of its schedule."""
    import json
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from rooms_app.models import TokenFact
    from watch_app.canary import canary_schedule_save
    from watch_app.models import CanaryRun, CanarySchedule

    # No worker named 'portals-agent': each dispatch stays in LiveKit's list (nothing joins).
    agent = AgentFactory(agent_name="portals-agent", join_deadline_s=30)
    RuleFactory(name="portal rooms", agent=agent, room_match_value="portals-*", delivery="explicit")
    _, key = make_client("web", rooms=["portals-*"])
    canary_agent = AgentFactory(agent_name="portals-canary")
    real_livekit.shared_worker("portals-canary")
    canary_schedule_save(schedule=CanarySchedule(agent=canary_agent, every_s=2, join_timeout_s=10))
    portals = request.getfixturevalue("two_portals")  # after the schedule: beat reads it at start

    rooms = [f"portals-{n}" for n in range(8)]
    asks = [
        (portals.urls[i % 2], room, f"person-{i}") for room in rooms for i in range(2)
    ]  # each room on both

    def mint(ask: tuple[str, str, str]) -> int:
        url, room, identity = ask
        body = json.dumps({"room_name": room, "participant_identity": identity}).encode()
        req = urllib.request.Request(
            f"{url}/api/v1/token",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(mint, asks)) == [201] * len(asks)

    facts = eventually(
        lambda: (n := TokenFact.objects.filter(applied_at__isnull=False).count()) == len(asks) and n,
        timeout=30,
        what="every token fact applied",
    )
    assert facts == TokenFact.objects.count() and not TokenFact.objects.exclude(apply_error="").exists()

    def one_dispatch_per_room() -> bool:
        per_room = {room: len(stack_dispatches(real_livekit, room)) for room in rooms}
        return all(count == 1 for count in per_room.values()) and per_room

    eventually(one_dispatch_per_room, timeout=30, interval=0.5, what="each room dispatched in LiveKit")
    for room in rooms:
        assert Dispatch.objects.filter(room__name=room, agent_name="portals-agent").count() == 1, room

    # One canary per tick: over four ticks, runs are a tick apart, never two at once.
    eventually(lambda: CanaryRun.objects.count() >= 4, timeout=30, interval=0.2, what="four canary runs")
    started = sorted(CanaryRun.objects.values_list("started_at", flat=True))
    gaps = [(b - a).total_seconds() for a, b in zip(started, started[1:], strict=False)]
    assert min(gaps) > 1.0, gaps
    assert CanaryRun.objects.filter(status=CanaryRun.Status.SUCCESS).count() >= 3


def stack_dispatches(server, room: str) -> list:
    import asyncio

    from livekit import api

    async def ask() -> list:
        async with api.LiveKitAPI(server.url, server.api_key, server.api_secret) as lk:
            try:
                return [
                    d for d in await lk.agent_dispatch.list_dispatch(room) if d.agent_name == "portals-agent"
                ]
            except api.TwirpError:
                return []

    return asyncio.run(ask())
