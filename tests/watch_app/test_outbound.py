"""Outbound calls against peers that misbehave (tests/watch_app/faults.py): every alert delivery
and worker poll ends by its deadline in a recorded state with a readable error, and a bad
worker endpoint never spoils the poll of the others."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import AgentFactory
from tests.receiver import Reply
from tests.support import eventually
from watch_app import alerts, checks, presence
from watch_app.models import AlertDelivery, AlertTarget, WorkerEndpoint
from watch_app.net import SendFailed, http_request

from .faults import KINDS, FaultServer

DEADLINE_S = 1.0
# Time allowed past a deadline on this shared 2-core machine (thread start, DB writes).
SLACK_S = 1.0

# How each fault ends: the error an admin reads, and whether another attempt is scheduled.
EXPECTED = {
    "trickle_body": ("timed out after {deadline:g} s reading the body (", True),
    "trickle_headers": ("timed out after {deadline:g} s before a complete status line and headers", True),
    "hang_after_headers": ("timed out after {deadline:g} s reading the body (0 bytes so far)", True),
    "ssh_banner": ("did not answer HTTP: Bad status line", True),
    "close_early": ("closed the connection without answering", True),
    "huge_body": ("answered more than the 65536-byte cap", False),
    "huge_declared": ("answered 52428800 bytes, over the 65536-byte cap", False),
    "cut_body": ("closed the connection in the middle of the body (3 bytes)", True),
}


def expected(kind: str, *, deadline: float = DEADLINE_S) -> tuple[str, bool]:
    """The error (a part of it) and whether it is retried, for a fault under `deadline`."""
    error, transient = EXPECTED[kind]
    return error.format(deadline=deadline), transient


@pytest.fixture
def fault() -> Iterator[Callable[[str], FaultServer]]:
    servers: list[FaultServer] = []

    def start(kind: str) -> FaultServer:
        servers.append(FaultServer(kind))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _delivery(url: str, *, kind: str = "webhook", name: str = "pager") -> AlertDelivery:
    AlertTarget.objects.create(
        name=name,
        kind=kind,
        url=url,
        allow_private=True,
        secret="s" * 40,
        timeout_s=DEADLINE_S,
        max_attempts=2,
    )
    alerts.incident_raise(key="dispatch_gave_up:support", kind="dispatch_gave_up", summary="it broke")
    return AlertDelivery.objects.get(target__name=name)


@pytest.mark.parametrize("kind", KINDS)
def test_a_delivery_to_a_bad_peer_ends_recorded_by_its_deadline(db, fault, kind):
    server = fault(kind)
    delivery = _delivery(f"{server.url}/hook", kind="slack" if kind.startswith("huge") else "webhook")
    error, transient = expected(kind)

    started = time.monotonic()
    if transient:
        with pytest.raises(alerts.DeliveryRetry) as retry:
            alerts.delivery_send(delivery_id=delivery.pk, attempt=1)
        assert retry.value.attempt == 2
    else:
        assert alerts.delivery_send(delivery_id=delivery.pk, attempt=1) == "failed"
    took = time.monotonic() - started

    assert took < DEADLINE_S + SLACK_S, f"{kind}: the attempt took {took:.2f} s"
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and error in delivery.last_error, delivery.last_error
    assert delivery.last_error.startswith(f"{server.url} ")  # the host, never the path
    if transient:  # scheduled for retry: pending, counted, with the error and when it is due
        assert delivery.status == "pending" and delivery.next_attempt_at > timezone.now()
    else:
        assert delivery.status == "failed" and delivery.next_attempt_at is None
    assert [c.path for c in server.calls] == ["/hook"]
    if kind == "ssh_banner":
        assert "SSH-2.0-OpenSSH_9.6" in delivery.last_error


def test_retries_end_failed_with_every_attempt_counted(
    db, fault, eager_tasks, django_capture_on_commit_callbacks
):
    server = fault("trickle_headers")
    with django_capture_on_commit_callbacks(execute=True):
        delivery = _delivery(f"{server.url}/hook")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert "timed out after 1 s before a complete status line" in delivery.last_error
    assert len(server.calls) == 2


def test_a_second_run_of_the_same_attempt_does_nothing(db, receiver):
    delivery = _delivery(f"{receiver.url}/hook")
    assert alerts.delivery_send(delivery_id=delivery.pk, attempt=1) == "sent"
    assert alerts.delivery_send(delivery_id=delivery.pk, attempt=1) == "skipped"
    assert len(receiver.requests) == 1


def test_an_attempt_left_in_flight_is_swept_then_sent_again(db, receiver, eager_tasks):
    """A task killed mid-call leaves `sending` with the attempt counted; past its deadline the
    sweep records it as interrupted and sends the next attempt."""
    delivery = _delivery(f"{receiver.url}/hook")
    now = timezone.now()
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        status="sending", attempts=1, attempt_deadline_at=now + timedelta(seconds=3)
    )
    assert alerts.deliveries_sweep(now=now) == {"interrupted": 0, "resent": 0}  # not overdue yet
    assert alerts.deliveries_sweep(now=now + timedelta(seconds=4)) == {"interrupted": 1, "resent": 1}
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    assert len(receiver.requests) == 1


def test_an_interrupted_last_attempt_ends_failed(db, receiver):
    delivery = _delivery(f"{receiver.url}/hook")
    now = timezone.now()
    AlertDelivery.objects.filter(pk=delivery.pk).update(status="sending", attempts=2, attempt_deadline_at=now)
    alerts.deliveries_sweep(now=now + timedelta(seconds=1))
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 2
    assert delivery.last_error.startswith("attempt 2 was interrupted: no outcome by its deadline")
    assert receiver.requests == []


def test_a_delivery_whose_message_was_lost_is_sent_by_the_sweep(db, receiver, eager_tasks, settings):
    settings.ALERT_DELIVERY_STALE_S = 30
    delivery = _delivery(f"{receiver.url}/hook")  # its message was never sent (no commit here)
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    alerts.deliveries_sweep(now=delivery.created_at + timedelta(seconds=10))
    assert receiver.requests == []  # not stale yet: the task may still come
    # What beat runs every ALERTS_EVALUATE_INTERVAL_S sweeps too.
    assert "deliveries" in checks.alerts_evaluate(
        only=["deliveries"], now=delivery.created_at + timedelta(seconds=31)
    )
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("sent", 1) and len(receiver.requests) == 1


def _endpoint(url: str, name: str) -> WorkerEndpoint:
    return WorkerEndpoint.objects.create(agent=AgentFactory(agent_name=name), url=url, allow_private=True)


def _healthy(receiver, name: str) -> None:
    receiver.routes["/"] = Reply(200, b"OK")
    receiver.routes["/worker"] = Reply(
        200, b'{"agent_name": "%s", "active_jobs": 1, "worker_load": 0.1}' % name.encode()
    )


def test_one_poll_records_every_endpoint_bad_or_healthy(db, fault, receiver, other_receiver, settings):
    """20 bad endpoints (every fault) and 2 healthy ones, in one pass: each ends recorded with
    its own error, the healthy ones healthy, and the pass ends by the deadline."""
    settings.WORKER_POLL_TIMEOUT_S = DEADLINE_S
    settings.WORKER_POLL_CONCURRENCY = 32
    servers = {kind: fault(kind) for kind in KINDS}
    bad = [_endpoint(f"{servers[kind].url}/w{n}", f"bad-{n}") for n, kind in enumerate(KINDS * 3) if n < 20]
    _healthy(receiver, "good-1")
    _healthy(other_receiver, "good-2")
    good = [_endpoint(receiver.url, "good-1"), _endpoint(other_receiver.url, "good-2")]

    started = time.monotonic()
    assert presence.workers_poll() == 2
    took = time.monotonic() - started

    assert took < DEADLINE_S + SLACK_S, f"the pass took {took:.2f} s"
    for endpoint in good:
        endpoint.refresh_from_db()
        assert (endpoint.healthy, endpoint.active_jobs, endpoint.last_error) == (True, 1, "")
    ends = {}
    for n, endpoint in enumerate(bad):
        endpoint.refresh_from_db()
        kind = KINDS[n % len(KINDS)]
        assert endpoint.healthy is False and endpoint.polled_at is not None, kind
        assert expected(kind)[0] in endpoint.last_error, (kind, endpoint.last_error)
        ends[kind] = ends.get(kind, 0) + 1
    calls = (
        sum(len(s.calls) for s in servers.values()) + len(receiver.requests) + len(other_receiver.requests)
    )
    print(
        f"\npoll of 22 endpoints (20 bad: {ends}; 2 healthy): {calls} calls, pass {took:.2f} s, "
        f"deadline {DEADLINE_S:g} s"
    )


@pytest.mark.django_db(transaction=True)
def test_each_endpoint_is_recorded_as_soon_as_it_answers(fault, receiver, settings):
    """The healthy endpoint's answer is written while a trickling one still holds the pass."""
    settings.WORKER_POLL_TIMEOUT_S = 2.0
    slow = _endpoint(f"{fault('trickle_body').url}", "slow")
    _healthy(receiver, "fast")
    fast = _endpoint(receiver.url, "fast")
    polling = threading.Thread(target=presence.workers_poll)
    polling.start()
    try:
        eventually(lambda: WorkerEndpoint.objects.get(pk=fast.pk).healthy, timeout=2, what="fast recorded")
        assert polling.is_alive() and WorkerEndpoint.objects.get(pk=slow.pk).polled_at is None
    finally:
        polling.join(5)
    assert "timed out after 2 s" in WorkerEndpoint.objects.get(pk=slow.pk).last_error


def test_a_name_is_checked_on_the_addresses_connected_to(db, receiver):
    """A name (not an IP literal) is resolved at the call and refused when it leads to a
    private address, whatever it pointed to when the URL was saved."""
    port = receiver.server.server_address[1]
    with pytest.raises(SendFailed, match="host localhost is a loopback address: refused unless"):
        http_request(f"http://localhost:{port}/hook", allow_private=False, deadline_s=DEADLINE_S)
    assert receiver.requests == []
    assert (
        http_request(f"http://localhost:{port}/hook", allow_private=True, deadline_s=DEADLINE_S).status == 200
    )


def test_a_pass_starts_no_poll_after_its_budget(db, fault, settings, monkeypatch):
    """However many endpoints are slow, the pass ends in time: polls not started by the budget
    are left for the next pass (their last answer stands and turns stale)."""
    settings.WORKER_POLL_TIMEOUT_S = DEADLINE_S
    settings.WORKER_POLL_CONCURRENCY = 1
    monkeypatch.setattr(presence, "PASS_BUDGET_S", 0.5)
    server = fault("trickle_headers")
    endpoints = [_endpoint(f"{server.url}/e{n}", f"slow-{n}") for n in range(4)]
    started = time.monotonic()
    presence.workers_poll()
    took = time.monotonic() - started
    assert took < 0.5 + DEADLINE_S + SLACK_S, f"the pass took {took:.2f} s"
    polled = [e for e in endpoints if WorkerEndpoint.objects.get(pk=e.pk).polled_at is not None]
    assert len(polled) == 1 and len(server.calls) == 1


def test_a_full_pass_is_skipped_while_the_previous_one_still_runs(db, fault, settings):
    """Beat sends a pass every WORKER_POLL_INTERVAL_S; one held up by slow endpoints must not
    have others pile up behind it on the outbound queue (alert deliveries share it)."""
    from django.core.cache import cache

    settings.WORKER_POLL_TIMEOUT_S = DEADLINE_S
    server = fault("trickle_headers")
    endpoint = _endpoint(f"{server.url}/slow", "slow-agent")
    assert cache.add(presence.POLL_PASS_KEY, "1", timeout=60)  # a pass is running elsewhere
    assert presence.workers_poll() == 0
    assert WorkerEndpoint.objects.get(pk=endpoint.pk).polled_at is None and server.calls == []
    # "Poll now" for given endpoints is not held back.
    presence.workers_poll(endpoint_ids=[endpoint.pk])
    assert WorkerEndpoint.objects.get(pk=endpoint.pk).polled_at is not None
    cache.delete(presence.POLL_PASS_KEY)
    presence.workers_poll()  # the next pass runs, and releases its hold when done
    assert cache.add(presence.POLL_PASS_KEY, "1", timeout=1)
