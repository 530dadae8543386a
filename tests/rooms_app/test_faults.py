"""Infrastructure faults under load, with real processes: a portal under gunicorn and a Celery
worker on a Redis of the test's own, stopped and restarted while tokens are being minted; and
PostgreSQL connections terminated while a dispatch is on its way.

Phases are counted in requests, not timed. Each test prints its figures (requests, statuses,
lost, duplicated)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import urllib.error
import urllib.request
import uuid
from collections import Counter

import pytest
from django.db import connection

from rooms_app.models import Dispatch, TokenFact
from tests.factories import AgentFactory, RuleFactory, make_client
from tests.support import RedisServer, free_port, gunicorn

from .conftest import QUEUE, ROOT, Worker, _database_url, eventually

pytestmark = [pytest.mark.django_db(transaction=True)]
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _call(method: str, url: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    try:
        with _no_proxy.open(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw[:200].decode(errors="replace")}


@pytest.fixture
def own_redis(tmp_path):
    RedisServer.available()
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fault_key() -> str:
    """A token-delivery rule for `fault-*` rooms and a client key; made before the portal
    starts, which reads them at its first request."""
    RuleFactory(
        name="fault rooms",
        agent=AgentFactory(agent_name="helper"),
        room_match_value="fault-*",
        delivery="token",
    )
    _, key = make_client(
        "fault",
        rooms=["fault-*"],
        agent_names=["helper"],
        client_agents=True,
        rate_limit_per_minute=1_000_000,
    )
    return key


@pytest.fixture
def stack(fault_key, own_redis, lk, tmp_path):
    """gunicorn (2 workers, as `bin/run-portal`) and a Celery worker, both on `own_redis`."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.rooms_app.worker_settings",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": own_redis.url,
        "LIVEKIT_URL": lk.url,
        "LIVEKIT_API_KEY": lk.api_key,
        "LIVEKIT_API_SECRET": lk.api_secret,
        "LIVEKIT_TIMEOUT_S": "2",
        "CACHE_KEY_PREFIX": f"fault-{uuid.uuid4().hex[:8]}",
        "ROOMS_TEST_QUEUE": QUEUE,
        "ROOMS_TEST_CACHE_DIR": str(tmp_path / "cache"),
        "DISPATCHPORTAL_VAR_DIR": str(tmp_path / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "LOG_LEVEL": "WARNING",
    }
    port = free_port()
    portal = gunicorn(port=port, env=env, threads=4, stderr=open(tmp_path / "gunicorn.log", "wb"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    worker = Worker(env, tmp_path)
    try:
        eventually(lambda: _up(url), timeout=30, what="gunicorn up")
        worker.start()
        yield url, worker
    finally:
        worker.stop()
        portal.terminate()
        portal.wait(10)


def _up(url: str) -> bool:
    try:
        return _call("POST", f"{url}/api/v1/token", "none", {})[0] == 401
    except OSError:
        return False


class Load:
    """Token requests from a few threads until stopped; every answer recorded."""

    def __init__(self, url: str, key: str, threads: int = 4) -> None:
        self.url, self.key = url, key
        self.answers: list[tuple[int, str, list[str]]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def _run(self, n: int) -> None:
        i = 0
        while not self.stopping.is_set():
            room = f"fault-{n}-{i}"
            i += 1
            try:
                status, body = _call("POST", f"{self.url}/api/v1/token", self.key, {"room_name": room})
            except OSError as exc:  # the portal itself unreachable: as bad as a 5xx
                status, body = 599, {"raw": str(exc)}
            agents = [a["agent_name"] for a in body.get("dispatch", {}).get("agents", [])]
            with self.lock:
                self.answers.append((status, room, agents))

    def count(self) -> int:
        with self.lock:
            return len(self.answers)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)


def _broker_lost(worker: Worker) -> bool:
    return "Connection to broker lost" in worker.log()


def test_a_redis_restart_under_token_load(stack, fault_key, own_redis, capsys):
    url, worker = stack
    key = fault_key
    with Load(url, key) as load:
        eventually(lambda: load.count() >= 100, timeout=60, what="100 tokens before the outage")
        before = load.count()
        own_redis.stop()
        eventually(lambda: _broker_lost(worker), timeout=30, what="the worker sees Redis gone")
        eventually(lambda: load.count() >= before + 200, timeout=60, what="200 answers during the outage")
        during = load.count() - before
        own_redis.start()
        restarted = load.count()
        eventually(lambda: load.count() >= restarted + 100, timeout=60, what="100 tokens after the restart")

    statuses = Counter(status for status, _, _ in load.answers)
    admitted = {room for status, room, agents in load.answers if status == 201 and "helper" in agents}
    assert worker.process is not None and worker.process.poll() is None, f"worker died:\n{worker.log()}"
    # The worker consumes again: an explicit dispatch asked now goes out to LiveKit.
    status, body = _call(
        "POST", f"{url}/api/v1/dispatches", key, {"room_name": "fault-after", "agent_name": "helper"}
    )
    assert status == 202, body
    eventually(
        lambda: Dispatch.objects.get(pk=body["id"]).status != Dispatch.Status.PENDING,
        timeout=30,
        what="the worker dispatching after the restart",
    )

    def recorded() -> set[str]:
        rows = Dispatch.objects.filter(room__name__in=admitted, agent_name="helper")
        return set(rows.values_list("room__name", flat=True))

    # Every admitted token's fact is durable; applying a few hundred of them takes a while on a
    # loaded 2-core machine (issue 21 is about that rate), so wait for them, not for a clock.
    with contextlib.suppress(AssertionError):  # what is missing is counted below
        eventually(
            lambda: recorded() >= admitted or not TokenFact.objects.filter(applied_at__isnull=True).exists(),
            timeout=120,
            what="admitted tokens' facts applied",
        )
        eventually(lambda: recorded() >= admitted, timeout=5, what="admitted tokens' agents in the ledger")
    lost = len(admitted - recorded())
    per_room = Counter(
        Dispatch.objects.filter(room__name__in=admitted, agent_name="helper").values_list(
            "room__name", flat=True
        )
    )
    duplicated = sum(1 for n in per_room.values() if n > 1)
    with capsys.disabled():
        print(
            f"\n[redis restart] requests={len(load.answers)} (during outage >= {during}) "
            f"statuses={dict(statuses)} admitted={len(admitted)} lost={lost} duplicated={duplicated}"
        )
    assert not [s for s in statuses if s >= 500], statuses
    assert duplicated == 0
    assert lost == 0, f"{lost} of {len(admitted)} admitted tokens' agents not in the ledger"


def _terminate_other_backends() -> int:
    """pg_terminate_backend on every other session of the test database: the worker's, the
    live server's, LiveKit webhooks' in flight."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


@pytest.mark.needs_postgres
def test_postgres_backends_terminated_mid_dispatch(e2e, live_server, worker, capsys):
    """Every other database session is cut twice while dispatches are on their way (asked
    over HTTP, as a client would): every agent joins, once."""
    RuleFactory(
        name="pg rooms",
        agent=AgentFactory(agent_name="support-agent"),
        room_match_value="pg-*",
        delivery="explicit",
    )
    _, key = make_client("pg", rooms=["pg-*"], agent_names=["support-agent"], client_agents=True)
    e2e.control.add_worker("support-agent")
    rooms = [f"pg-{i}" for i in range(10)]
    statuses, ids, terminated = Counter(), [], 0
    for n, room in enumerate(rooms):
        status, body = _call(
            "POST",
            f"{live_server.url}/api/v1/dispatches",
            key,
            {"room_name": room, "agent_name": "support-agent"},
        )
        statuses[status] += 1
        if status == 202:
            ids.append(body["id"])
        if n in (2, 6):
            terminated += _terminate_other_backends()

    def joined() -> int:
        return Dispatch.objects.filter(room__name__in=rooms, status=Dispatch.Status.AGENT_JOINED).count()

    eventually(lambda: joined() == len(rooms), timeout=60, what="every agent joined")
    per_room = Counter(Dispatch.objects.filter(room__name__in=rooms).values_list("room__name", flat=True))
    duplicated = sum(n > 1 for n in per_room.values())
    with capsys.disabled():
        print(
            f"\n[pg terminate] dispatches={len(rooms)} statuses={dict(statuses)} sessions terminated={terminated} "
            f"joined={joined()} lost={len(rooms) - joined()} duplicated={duplicated}"
        )
    assert statuses == {202: len(rooms)}
    assert duplicated == 0, per_room
