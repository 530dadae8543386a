"""End to end: the emulator over HTTP, its webhooks to the live server, and a real Celery
worker process. Each test is one thing a user would notice: the agent is in the room, or the
ledger names why not, whatever LiveKit, the webhooks or the worker did meanwhile."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.utils import timezone

from rooms_app.models import Dispatch, DispatchEvent, Room
from rooms_app.reconcile import reconcile_run
from tests.factories import AgentFactory, RuleFactory, make_client

from .conftest import agents_in, create_dispatch_calls, eventually

pytestmark = [pytest.mark.django_db(transaction=True)]
S = Dispatch.Status


def live_row(room: str, agent_name: str = "support-agent") -> Dispatch | None:
    return (
        Dispatch.objects.filter(
            room__name=room,
            agent_name=agent_name,
            status__in=("pending", "requested", "job_assigned", "agent_joined"),
        )
        .order_by("-id")
        .first()
    )


def joined(room: str, agent_name: str = "support-agent") -> Dispatch | None:
    row = live_row(room, agent_name)
    return row if row is not None and row.status == S.AGENT_JOINED else None


def wait_joined(server, room: str, *, timeout: float = 10.0) -> Dispatch:
    """The agent's live dispatch once joined; on timeout, the ledger's and LiveKit's view."""
    try:
        return eventually(lambda: joined(room), timeout=timeout, what=f"agent joined in {room}")
    except AssertionError as exc:
        rows = [
            (d.pk, d.status, d.livekit_dispatch_id, [(e.status, e.detail) for e in d.events.all()])
            for d in Dispatch.objects.filter(room__name=room).order_by("id")
        ]
        state = server.control.state(room)
        raise AssertionError(
            f"{exc}\nledger: {rows}\nLiveKit dispatches: {state['dispatches']}\n"
            f"participants: {state['rooms'][0]['participants'] if state['rooms'] else None}\n"
            f"log: {state['log'][-5:]}\nwebhooks: {server.control.webhook_status()['recent'][-8:]}"
        ) from None


def rule(delivery: str = "explicit", **agent_fields):
    agent = AgentFactory(agent_name="support-agent", **agent_fields)
    return RuleFactory(
        name=f"support {delivery}", agent=agent, room_match_value="support-*", delivery=delivery
    )


def token(live_server, key: str, room: str, identity: str = "alice") -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{live_server.url}/api/v1/token",
        data=json.dumps({"room_name": room, "participant_identity": identity}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 201
        return json.loads(answer.read())


def test_token_join_agent_joined(e2e, live_server):
    rule(delivery="token")
    _, key = make_client("web", rooms=["support-*"])
    minted = token(live_server, key, "support-1")
    assert minted["dispatch"]["agents"][0]["delivery"] == "token"
    e2e.control.add_worker("support-agent")
    # The ledger records the token's agent as pending (off the request path)...
    eventually(lambda: live_row("support-1"), what="pending token dispatch")
    # ...then the browser joins, LiveKit dispatches from the token, the agent joins.
    e2e.control.join(minted["participant_token"])
    row = wait_joined(e2e, "support-1")
    assert row.source == "token" and row.delivery == "token"
    assert row.participant_identity == agents_in(e2e, "support-1")[0]["identity"]
    assert create_dispatch_calls(e2e, "support-1") == []  # LiveKit did it, from the token
    assert Room.objects.get(name="support-1").existed_before_token is False


def test_room_started_webhook_and_explicit_rule_agent_joined(e2e):
    rule()
    e2e.control.add_worker("support-agent")
    e2e.control.create_rooms([{"name": "support-2", "participants": [{"identity": "caller"}]}])
    row = wait_joined(e2e, "support-2")
    assert row.source == "rule" and row.livekit_dispatch_id.startswith("AD_")
    # The job is on the timeline too (story 7 of issue 9: it never was).
    assert [e.status for e in row.events.all()] == ["pending", "requested", "job_assigned", "agent_joined"]
    assert row.livekit_job_id.startswith("AJ_") and row.job_assigned_at is not None
    assert len(agents_in(e2e, "support-2", "support-agent")) == 1


def test_no_worker_is_reported_soon_after_the_deadline(e2e):
    rule(join_deadline_s=1, max_attempts=1)
    e2e.control.create_rooms([{"name": "support-3"}])
    row = eventually(lambda: Dispatch.objects.filter(room__name="support-3").first(), what="dispatch")
    requested = eventually(lambda: Dispatch.objects.filter(pk=row.pk, requested_at__isnull=False).first())
    final = eventually(lambda: Dispatch.objects.filter(pk=row.pk, status=S.NO_WORKER).first(), timeout=6)
    assert final.last_error == "no worker registered as 'support-agent' took the job within 1 s"
    assert (final.ended_at - requested.requested_at).total_seconds() < 3
    eventually(lambda: DispatchEvent.objects.filter(dispatch=final, detail__startswith="gave up").exists())


def test_worker_crash_is_redispatched_and_joined(e2e):
    # A short deadline: the re-dispatch may reach LiveKit before the worker is restarted, and
    # then only the next attempt (after the deadline) finds a worker, as in production.
    rule(max_attempts=6, join_deadline_s=2)
    e2e.control.add_worker("support-agent", behavior="crash", crash_after_ms=300)
    e2e.control.create_rooms([{"name": "support-4", "participants": [{"identity": "caller"}]}])
    eventually(
        lambda: Dispatch.objects.filter(room__name="support-4", status=S.FAILED).exists(), what="crash seen"
    )
    # The agent's worker is restarted: LiveKit (self-hosted) will not re-dispatch; the portal does.
    e2e.control.remove_worker("support-agent")
    e2e.control.add_worker("support-agent")
    row = wait_joined(e2e, "support-4", timeout=15)
    assert row.attempt >= 2
    first = Dispatch.objects.filter(room__name="support-4").order_by("id").first()
    assert first.status == S.FAILED and "left the room" in first.last_error
    eventually(lambda: len(agents_in(e2e, "support-4", "support-agent")) == 1)


def test_livekit_503_for_a_while_then_the_dispatch_completes(e2e):
    rule()
    e2e.control.add_worker("support-agent")
    e2e.control.faults(error_rate=1, error_status=503)
    e2e.control.create_rooms([{"name": "support-5", "participants": [{"identity": "caller"}]}])
    eventually(
        lambda: (
            DispatchEvent.objects.filter(
                dispatch__room__name="support-5", detail__contains="LiveKit unavailable"
            ).count()
            >= 2
        ),
        what="retries under 503",
    )
    e2e.control.faults()
    row = wait_joined(e2e, "support-5", timeout=15)
    assert len(create_dispatch_calls(e2e, "support-5")) == 1
    assert len(agents_in(e2e, "support-5", "support-agent")) == 1
    assert row.last_error == ""


@pytest.mark.needs_redis
def test_worker_killed_mid_task_completes_after_restart(e2e, worker):
    """SIGKILL while CreateDispatch is in flight: the task was never acknowledged, so Redis
    hands it to the restarted worker, which completes it: one CreateDispatch, one agent.
    (The emulator drops a request whose client died during the latency fault; the rerun
    adopting a dispatch the dead run did make is test_lifecycle's adoption test.)"""
    rule()
    e2e.control.add_worker("support-agent")
    e2e.control.faults(latency_ms=1500)
    e2e.control.create_rooms([{"name": "support-6", "participants": [{"identity": "caller"}]}])
    # The task took its request lease: its CreateDispatch is on its way (held 1.5 s).
    eventually(
        lambda: Dispatch.objects.filter(room__name="support-6", request_tries__gte=1).exists(),
        what="task in flight",
    )
    worker.kill()
    e2e.control.faults()
    worker.start()
    row = wait_joined(e2e, "support-6", timeout=20)
    assert len(agents_in(e2e, "support-6", "support-agent")) == 1
    assert len(create_dispatch_calls(e2e, "support-6")) == 1
    assert row.attempt == 1


def test_duplicated_webhooks_make_one_dispatch(e2e):
    rule()
    e2e.control.add_worker("support-agent")
    e2e.control.webhooks(duplicate=1.0)
    e2e.control.create_rooms([{"name": "support-7", "participants": [{"identity": "caller"}]}])
    wait_joined(e2e, "support-7")
    e2e.control.wait_webhooks()
    assert e2e.control.webhook_status()["duplicated"] >= 2
    assert Dispatch.objects.filter(room__name="support-7").count() == 1
    assert len(create_dispatch_calls(e2e, "support-7")) == 1


def test_concurrent_triggers_for_one_room_make_one_agent(e2e, live_server):
    """Webhook, token for the existing room, the Dispatch API and a reconcile pass at once."""
    rule()
    Room.objects.create(name="support-8", status="active", sid="", started_at=timezone.now())  # known live
    _, key = make_client("web", rooms=["support-*"], agent_names=["support-agent"])
    e2e.control.add_worker("support-agent", delay_ms=50)
    import json
    import urllib.error
    import urllib.request

    def api_dispatch() -> None:
        request = urllib.request.Request(
            f"{live_server.url}/api/v1/dispatches",
            data=json.dumps({"room_name": "support-8", "agent_name": "support-agent"}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
            method="POST",
        )
        try:
            urllib.request.urlopen(request, timeout=10).read()
        except urllib.error.HTTPError as exc:  # another trigger got there first: said so
            assert exc.code == 409, exc.code

    triggers = [
        lambda: e2e.control.create_rooms([{"name": "support-8", "participants": [{"identity": "caller"}]}]),
        lambda: token(live_server, key, "support-8", "bob"),
        api_dispatch,
        api_dispatch,
        reconcile_run,
    ]

    def run(trigger) -> None:
        try:
            trigger()
        finally:
            connection.close()  # this thread's own database connection

    threads = [threading.Thread(target=run, args=(t,)) for t in triggers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    wait_joined(e2e, "support-8")
    e2e.control.wait_webhooks()
    reconcile_run()
    assert len(agents_in(e2e, "support-8", "support-agent")) == 1
    assert Dispatch.objects.filter(room__name="support-8", status="agent_joined").count() == 1


def test_token_for_an_existing_room_uses_explicit_dispatch(e2e, live_server):
    rule(delivery="token")
    _, key = make_client("web", rooms=["support-*"])
    e2e.control.add_worker("support-agent")
    e2e.control.create_rooms([{"name": "support-9", "participants": [{"identity": "first"}]}])
    eventually(
        lambda: Room.objects.filter(name="support-9", status="active").exists(), what="room_started seen"
    )
    minted = token(live_server, key, "support-9", "second")
    assert minted["dispatch"]["room_exists"] is True
    assert minted["dispatch"]["agents"][0]["delivery"] == "explicit"
    e2e.control.join(minted["participant_token"])
    row = wait_joined(e2e, "support-9")
    assert row.delivery == "explicit" and row.source == "token"
    assert len(create_dispatch_calls(e2e, "support-9")) == 1
    assert Room.objects.get(name="support-9").existed_before_token is True
