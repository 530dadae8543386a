"""Outbound work on its own Celery worker, end to end: the LiveKit emulator, its webhooks to the
live server, a Celery worker for dispatch (the default queue) and one for the outbound queue,
as `make run` starts them. Twenty bad alert targets and twenty bad worker endpoints never slow
a dispatch down; a killed outbound worker leaves each delivery's truth behind for the sweep.

Run with `-s` to print the figures (targets, calls, how each ended, the dispatch's time)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from agents_app.models import DispatchRule
from rooms_app.models import Dispatch
from tests.factories import AgentFactory
from tests.receiver import Reply
from tests.rooms_app.conftest import (
    Worker,
    _share_worker_cache,
    outbound_queue,
    queue_purge,
    wait_database_quiet,
    wait_database_sessions_end,
    worker_start,
)
from tests.support import eventually
from watch_app import alerts, tasks
from watch_app.models import AlertDelivery, AlertTarget, WorkerEndpoint

from .faults import KINDS, FaultServer
from .test_outbound import expected

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = f"watch-test-{uuid.uuid4().hex[:10]}"
DELIVERY_DEADLINE_S = 2.0
POLL_DEADLINE_S = 1.0
FINAL = ("sent", "failed", "rate_limited")


@pytest.fixture(scope="module")
def split_workers(
    django_db_setup, django_db_blocker, livekit_emulator_session, tmp_path_factory
) -> Iterator[dict[str, Worker]]:
    """A dispatch worker and an outbound worker, as `bin/run-portal` starts them."""
    env = {
        "WORKER_POLL_TIMEOUT_S": str(POLL_DEADLINE_S),
        "WORKER_POLL_CONCURRENCY": "32",
        "ALERT_RETRY_BACKOFF_S": "0.2",
        "ALERT_RETRY_BACKOFF_MAX_S": "0.5",
    }
    workers = {
        consume: worker_start(livekit_emulator_session, tmp_path_factory, queue=QUEUE, consume=consume, **env)
        for consume in ("dispatch", "outbound")
    }
    yield workers
    for worker in workers.values():
        worker.stop()
    wait_database_sessions_end(django_db_blocker)


@pytest.fixture
def split(lk, live_server, split_workers, settings, monkeypatch, django_db_blocker) -> Iterator[Any]:
    from dispatchportal.celery import app as celery_app

    for worker in split_workers.values():
        if worker.process is None or worker.process.poll() is not None:
            worker.start()
    monkeypatch.setitem(celery_app.conf, "task_default_queue", QUEUE)
    settings.OUTBOUND_QUEUE = outbound_queue(QUEUE)
    queue_purge(QUEUE)
    queue_purge(outbound_queue(QUEUE))
    _share_worker_cache(settings, split_workers["dispatch"])
    lk.control.webhooks(url=f"{live_server.url}/livekit/webhook", retry_backoff_ms=100)
    settings.DISPATCH_RETRY_BACKOFF_S = 0.2
    yield lk
    queue_purge(QUEUE)
    queue_purge(outbound_queue(QUEUE))
    wait_database_quiet(django_db_blocker)


@pytest.fixture
def fault() -> Iterator[Callable[[str], FaultServer]]:
    servers: list[FaultServer] = []

    def start(kind: str) -> FaultServer:
        servers.append(FaultServer(kind))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _dispatch(lk: Any, room: str) -> tuple[float, Dispatch]:
    """Create `room` with a caller (its explicit rule dispatches the agent); seconds until the
    ledger says agent_joined, and the row."""
    started = time.monotonic()
    lk.control.create_rooms([{"name": room, "participants": [{"identity": "caller"}]}])
    row = eventually(
        lambda: Dispatch.objects.filter(room__name=room, status="agent_joined").first(),
        timeout=20,
        what=f"agent joined in {room}",
    )
    return time.monotonic() - started, row


def _healthy_worker(receiver: Any, name: str) -> None:
    receiver.routes["/"] = Reply(200, b"OK")
    receiver.routes["/worker"] = Reply(200, b'{"agent_name": "%s", "worker_load": 0.1}' % name.encode())


def test_twenty_bad_targets_and_endpoints_never_slow_a_dispatch(split, fault, receiver, other_receiver):
    agent = AgentFactory(agent_name="support-agent")
    DispatchRule.objects.create(
        name="support", agent=agent, room_match_value="support-*", delivery="explicit"
    )
    split.control.add_worker("support-agent")
    baseline_s, _ = _dispatch(split, "support-0")

    servers = {kind: fault(kind) for kind in KINDS}
    kinds = [KINDS[n % len(KINDS)] for n in range(20)]
    for n, kind in enumerate(kinds):
        AlertTarget.objects.create(
            name=f"bad-{n}",
            kind="slack" if n % 2 else "webhook",
            url=f"{servers[kind].url}/t{n}",
            allow_private=True,
            timeout_s=DELIVERY_DEADLINE_S,
            max_attempts=2,
        )
        WorkerEndpoint.objects.create(
            agent=AgentFactory(agent_name=f"bad-{n}"), url=f"{servers[kind].url}/e{n}", allow_private=True
        )
    for name, healthy in (("good-1", receiver), ("good-2", other_receiver)):
        _healthy_worker(healthy, name)
        WorkerEndpoint.objects.create(
            agent=AgentFactory(agent_name=name), url=healthy.url, allow_private=True
        )

    # The incident's 20 deliveries and a poll of the 22 endpoints go to the outbound worker.
    alerts.incident_raise(key="dispatch_gave_up:x", kind="dispatch_gave_up", subject="x", summary="it broke")
    tasks.workers_poll.delay()
    faults_started = time.monotonic()
    eventually(lambda: AlertDelivery.objects.filter(status="sending").exists(), timeout=10, what="sending")

    meanwhile_s, row = _dispatch(split, "support-1")
    unfinished = AlertDelivery.objects.exclude(status__in=FINAL).count()
    # It joined while the bad deliveries were still being tried (nothing waited on them), well
    # within one delivery attempt's deadline.
    assert unfinished > 0, "every bad delivery had ended before the dispatch joined"
    assert meanwhile_s < DELIVERY_DEADLINE_S, f"the dispatch took {meanwhile_s:.2f} s"

    eventually(
        lambda: not AlertDelivery.objects.exclude(status__in=FINAL).exists(), timeout=60, what="all ended"
    )
    ended_s = time.monotonic() - faults_started
    polled = WorkerEndpoint.objects.filter(polled_at__isnull=False)
    eventually(lambda: polled.count() == 22, timeout=10, what="every endpoint recorded")

    ends: Counter[tuple[str, str, int]] = Counter()
    for delivery in AlertDelivery.objects.select_related("target"):
        kind = kinds[int(delivery.target.name.split("-")[1])]
        error, transient = expected(kind, deadline=DELIVERY_DEADLINE_S)
        assert delivery.status == "failed" and error in delivery.last_error, (kind, delivery.last_error)
        assert delivery.attempts == (2 if transient else 1), (kind, delivery.attempts)
        ends[(kind, delivery.status, delivery.attempts)] += 1
    for endpoint in WorkerEndpoint.objects.select_related("agent"):
        name = endpoint.agent.agent_name
        if name.startswith("good-"):
            assert endpoint.healthy is True and endpoint.last_error == "", endpoint.last_error
        else:
            assert endpoint.healthy is False
            kind = kinds[int(name.split("-")[1])]
            assert expected(kind, deadline=POLL_DEADLINE_S)[0] in endpoint.last_error, endpoint.last_error
    target_calls = sum(1 for s in servers.values() for c in s.calls if c.path.startswith("/t"))
    poll_calls = sum(1 for s in servers.values() for c in s.calls if c.path.startswith("/e"))
    poll_calls += len(receiver.requests) + len(other_receiver.requests)
    print(
        f"\n20 bad alert targets ({DELIVERY_DEADLINE_S:g} s deadline, 2 attempts): {target_calls} calls; "
        f"ended (kind, status, attempts): {dict(sorted(ends.items()))}; "
        f"all ended {ended_s:.1f} s after the incident"
        f"\n22 worker endpoints (20 bad, 2 healthy; {POLL_DEADLINE_S:g} s deadline): {poll_calls} calls, "
        f"{polled.filter(healthy=True).count()} healthy, {polled.filter(healthy=False).count()} failed "
        f"with their errors"
        f"\ndispatch to agent_joined: {baseline_s:.2f} s without faults, {meanwhile_s:.2f} s meanwhile "
        f"(ledger: {(row.joined_at - row.created_at).total_seconds():.2f} s); "
        f"{unfinished} deliveries still unfinished when it joined"
    )


def test_a_killed_outbound_worker_leaves_the_truth_and_the_sweep_ends_it(
    split, split_workers, fault, receiver
):
    hang = fault("hang_after_headers")
    target = AlertTarget.objects.create(
        name="pager",
        url=f"{hang.url}/hook",
        allow_private=True,
        timeout_s=DELIVERY_DEADLINE_S,
        max_attempts=2,
    )
    alerts.incident_raise(key="dispatch_gave_up:x", kind="dispatch_gave_up", subject="x", summary="it broke")
    sending = AlertDelivery.objects.filter(status="sending")
    eventually(lambda: sending.exists() and hang.calls, timeout=10, what="attempt in flight")
    split_workers["outbound"].kill()  # SIGKILL mid-call: no chance to record an outcome

    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("sending", 1)  # never `pending`, 0 attempts
    assert delivery.attempt_deadline_at is not None

    AlertTarget.objects.filter(pk=target.pk).update(url=f"{receiver.url}/hook")  # the peer mended
    split_workers["outbound"].start()
    swept = alerts.deliveries_sweep(now=delivery.attempt_deadline_at + timedelta(seconds=1))
    assert swept == {"interrupted": 1, "resent": 1}
    eventually(lambda: AlertDelivery.objects.get().status == "sent", timeout=15, what="sent after the sweep")
    delivery.refresh_from_db()
    assert delivery.attempts == 2 and len(receiver.requests) == 1
    assert receiver.requests[0].headers["x-dispatchportal-delivery"] == str(delivery.pk)
    # The killed run's message is redelivered to the restarted worker some time later; stop
    # it, or that task can meet the test database's flush and deadlock it (seen in CI).
    split_workers["outbound"].stop()
