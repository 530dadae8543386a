"""The portal end to end against LiveKit's own server: `livekit-server` (tests/real_livekit.py),
real livekit-agents workers, the portal under pytest-django's live server receiving the real
server's webhooks (through the session's relay), and a real Celery worker on this package's own
queue, so a worker of the emulator tests (tests/rooms_app) never takes these tasks.

`stack` wires all of it for one test; `Stack.join(token)` is a real participant: the `livekit`
rtc SDK connecting over WebRTC (loopback) with a token, as a browser or phone app would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from livekit import api, rtc

from dispatchportal.celery import app as celery_app
from rooms_app.models import Dispatch
from tests.real_livekit import RealLiveKit, http_get, server_binary
from tests.rooms_app.conftest import (
    Worker,
    _share_worker_cache,
    outbound_queue,
    queue_purge,
    wait_database_quiet,
    wait_database_sessions_end,
    worker_start,
)
from tests.support import eventually, point_portal_at

QUEUE = f"real-stories-{uuid.uuid4().hex[:10]}"
LIVE = ("pending", "requested", "job_assigned", "agent_joined")
AGENT_KIND = api.ParticipantInfo.Kind.AGENT


class LoopThread:
    """An asyncio event loop on a thread of its own: async SDKs (the rtc SDK, Playwright) kept
    off the test's thread, where `asyncio.run` (the LiveKit API calls) must stay possible."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class Participant(LoopThread):
    """A person in a room: the rtc SDK connected with a token."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__()
        self.room: rtc.Room = self.run(self._connect(url, token))

    @staticmethod
    async def _connect(url: str, token: str) -> rtc.Room:
        room = rtc.Room()
        await room.connect(url, token)
        return room

    def agents(self) -> list[str]:
        """Identities of the AGENT participants this participant sees in the room."""

        async def read() -> list[str]:
            return [
                p.identity
                for p in self.room.remote_participants.values()
                if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            ]

        return self.run(read())

    def leave(self) -> None:
        try:
            self.run(self.room.disconnect(), timeout=10)
        finally:
            self.stop()


@dataclass
class Stack:
    server: RealLiveKit
    portal_url: str
    celery: Worker
    participants: list[Participant]

    def lk(self, method: str, *args: Any) -> Any:
        """One call to the real server's API (tests read LiveKit directly, not the portal)."""
        service, name = method.split(".")

        async def call() -> Any:
            async with api.LiveKitAPI(self.server.url, self.server.api_key, self.server.api_secret) as lk:
                return await getattr(getattr(lk, service), name)(*args)

        return asyncio.run(call())

    def agents(self, room: str, agent_name: str | None = None) -> list[api.ParticipantInfo]:
        """AGENT participants in a room (of one agent name if given), as LiveKit lists them."""
        found = self.lk("room.list_participants", api.ListParticipantsRequest(room=room)).participants
        return [
            p
            for p in found
            if p.kind == AGENT_KIND
            and (agent_name is None or p.attributes.get("lk.agent_name") == agent_name)
        ]

    def dispatches(self, room: str, agent_name: str | None = None) -> list[api.AgentDispatch]:
        found = self.lk("agent_dispatch.list_dispatch", room)
        return [d for d in found if agent_name is None or d.agent_name == agent_name]

    def create_room(self, name: str) -> None:
        self.lk("room.create_room", api.CreateRoomRequest(name=name))

    def portal(self, path: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.portal_url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def room_state(self, key: str, room: str) -> dict[str, Any]:
        """GET /api/v1/rooms/{room}, as a frontend asks it."""
        request = urllib.request.Request(
            f"{self.portal_url}/api/v1/rooms/{room}", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def token(self, key: str, room: str, identity: str) -> dict[str, Any]:
        """POST /api/v1/token, as a frontend does."""
        return self.portal("/api/v1/token", key, {"room_name": room, "participant_identity": identity})

    def join(self, minted: dict[str, Any]) -> Participant:
        participant = Participant(minted["server_url"], minted["participant_token"])
        self.participants.append(participant)
        return participant

    def wait_joined(self, room: str, agent_name: str, *, timeout: float = 20.0) -> Dispatch:
        """The agent's live dispatch once the ledger says it joined; on timeout, both views."""

        def joined() -> Dispatch | None:
            return (
                Dispatch.objects.filter(room__name=room, agent_name=agent_name, status="agent_joined")
                .order_by("-id")
                .first()
            )

        try:
            return eventually(joined, timeout=timeout, what=f"'{agent_name}' joined in {room}")
        except AssertionError as exc:
            rows = [
                (d.pk, d.status, d.delivery, d.last_error, [e.detail for e in d.events.all()])
                for d in Dispatch.objects.filter(room__name=room).order_by("id")
            ]
            raise AssertionError(
                f"{exc}\nledger: {rows}\nLiveKit dispatches: {self.dispatches(room)}\n"
                f"agents: {[p.identity for p in self.agents(room)]}\ncelery: {self.celery.log()[-3000:]}"
            ) from None

    def settled(self, room: str) -> bool:
        """No dispatch of the room is still on its way (pending, requested, job assigned)."""
        return not Dispatch.objects.filter(room__name=room, status__in=LIVE[:3]).exists()


def server_down(server: RealLiveKit) -> None:
    """LiveKit crashes: SIGKILL, so its rooms and dispatches (in memory) are gone with it."""
    server.process.kill()
    server.process.wait()


def server_up(server: RealLiveKit) -> float:
    """Start it again with the same config (same ports, keys, webhook relay); seconds to 200."""
    config = server.log_path.parent / "livekit.yaml"
    with server.log_path.open("ab") as log:
        server.process = subprocess.Popen(
            [server_binary() or "livekit-server", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=server.log_path.parent,
        )
    started = time.monotonic()

    def answers() -> bool:
        try:
            return http_get(server.url + "/")[0] == 200
        except OSError:
            return False

    eventually(answers, timeout=30, interval=0.01, what="livekit-server back")
    return time.monotonic() - started


@pytest.fixture(scope="session")
def real_celery(
    django_db_setup, django_db_blocker, real_livekit_session, tmp_path_factory
) -> Iterator[Worker]:
    # Backoff capped at 1 s: a LiveKit outage is ridden out by retries that never give up.
    worker = worker_start(
        real_livekit_session,
        tmp_path_factory,
        queue=QUEUE,
        # Low, as LiveKit being down never counts against it (tests/real_stories/test_faults.py).
        DISPATCH_MAX_RETRIES=os.environ.get("REAL_FAULT_MAX_RETRIES", "3"),
        DISPATCH_ASSIGNMENT_WINDOW_S="10",  # the real server's, as in production
    )
    yield worker
    worker.stop()
    wait_database_sessions_end(django_db_blocker)


@pytest.fixture
def stack(
    real_livekit, live_server, real_celery, settings, monkeypatch, django_db_blocker
) -> Iterator[Stack]:
    """The portal (live server + Celery worker) on the real server, its webhooks relayed."""
    if real_celery.process is None or real_celery.process.poll() is not None:
        real_celery.start()
    # Tasks the test process and the live server enqueue go to this package's worker.
    monkeypatch.setitem(celery_app.conf, "task_default_queue", QUEUE)
    settings.OUTBOUND_QUEUE = outbound_queue(QUEUE)
    queue_purge(QUEUE)
    _share_worker_cache(settings, real_celery)
    point_portal_at(settings, real_livekit, timeout_s=2.0)
    settings.PUBLIC_LIVEKIT_URL = real_livekit.ws_url
    settings.DISPATCH_RETRY_BACKOFF_S = 0.2
    real_livekit.relay.target = f"{live_server.url}/livekit/webhook"
    stack = Stack(server=real_livekit, portal_url=live_server.url, celery=real_celery, participants=[])
    yield stack
    for participant in stack.participants:
        participant.leave()
    real_livekit.relay.target = None
    real_livekit.relay.delay_s = 0.0
    queue_purge(QUEUE)
    wait_database_quiet(django_db_blocker)  # the worker's last tasks end before the flush


@dataclass
class ClusterStack(Stack):
    """A Stack whose LiveKit is a two-node cluster (tests/livekit_cluster.py): the portal, its
    Celery worker and the people it mints tokens for talk to node a's address, as they would
    to one node behind a load balancer; both nodes post their webhooks to the portal."""

    cluster: Any = None


@pytest.fixture
def cluster_stack(
    livekit_cluster, live_server, django_db_setup, settings, monkeypatch, django_db_blocker, tmp_path_factory
) -> Iterator[ClusterStack]:
    from tests.livekit_cluster import LiveKitCluster

    cluster: LiveKitCluster = livekit_cluster
    queue = f"cluster-{uuid.uuid4().hex[:10]}"
    entry = cluster.a.server
    # LIVEKIT_TIMEOUT_S as in production (5 s): longer than the 3 s in which LiveKit answers
    # 503 for a room whose node is gone, so the portal hears LiveKit's own answer.
    celery = worker_start(
        entry,
        tmp_path_factory,
        queue=queue,
        LIVEKIT_TIMEOUT_S="5",
        DISPATCH_MAX_RETRIES="3",
        DISPATCH_ASSIGNMENT_WINDOW_S="10",
    )
    monkeypatch.setitem(celery_app.conf, "task_default_queue", queue)
    settings.OUTBOUND_QUEUE = outbound_queue(queue)
    _share_worker_cache(settings, celery)
    point_portal_at(settings, entry, timeout_s=5.0)
    settings.PUBLIC_LIVEKIT_URL = entry.ws_url
    settings.DISPATCH_RETRY_BACKOFF_S = 0.2
    for node in cluster.nodes.values():
        node.server.relay.target = f"{live_server.url}/livekit/webhook"
    stack = ClusterStack(
        server=entry, portal_url=live_server.url, celery=celery, participants=[], cluster=cluster
    )
    yield stack
    for participant in stack.participants:
        with contextlib.suppress(Exception):
            participant.leave()
    for node in cluster.nodes.values():
        node.server.relay.target = None
    celery.stop()
    queue_purge(queue)
    queue_purge(outbound_queue(queue))
    wait_database_quiet(django_db_blocker)
    wait_database_sessions_end(django_db_blocker)


@dataclass
class Portals:
    """Two portal instances (gunicorn, two workers each) on one database and one Redis, two
    Celery workers on one queue, and one beat: `urls`, `celery`, `beat`."""

    urls: list[str]
    celery: list[Worker]
    beat: subprocess.Popen
    gunicorns: list[subprocess.Popen]


def _beat_start(env: dict[str, str], log_path: Any) -> subprocess.Popen:
    from tests.rooms_app.conftest import ROOT

    log = open(log_path, "wb")  # noqa: SIM115  closed with the process
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dispatchportal",
            "beat",
            "--loglevel",
            "INFO",
            "-s",
            str(log_path.parent / "beat-schedule"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return process


@pytest.fixture
def two_portals(
    real_livekit, django_db_setup, settings, monkeypatch, django_db_blocker, tmp_path_factory, tmp_path
) -> Iterator[Portals]:
    """Start the canary schedules (or other beat entries) before asking for this: the beat
    reads its schedule at start."""
    from tests.support import free_port, gunicorn

    queue = f"portals-{uuid.uuid4().hex[:10]}"
    settings_env = {"DISPATCH_ASSIGNMENT_WINDOW_S": "10", "DISPATCH_MAX_RETRIES": "3"}
    workers = [worker_start(real_livekit, tmp_path_factory, queue=queue, **settings_env)]
    workers.append(Worker(workers[0].env, tmp_path_factory.mktemp("celery-2"), queue=workers[0].queue))
    workers[1].start()
    monkeypatch.setitem(celery_app.conf, "task_default_queue", queue)
    settings.OUTBOUND_QUEUE = outbound_queue(queue)
    _share_worker_cache(settings, workers[0])
    point_portal_at(settings, real_livekit, timeout_s=2.0)
    env = {
        **workers[0].env,
        "PUBLIC_LIVEKIT_URL": real_livekit.ws_url,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }
    (tmp_path / "prometheus").mkdir()
    ports = [free_port(), free_port()]
    logs = [open(tmp_path / f"gunicorn-{port}.log", "wb") for port in ports]  # noqa: SIM115  closed below
    gunicorns = [gunicorn(port=port, env=env, stderr=log) for port, log in zip(ports, logs, strict=True)]
    for log in logs:
        log.close()  # the processes keep their own descriptors
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    for url in urls:

        def answers(url: str = url) -> bool:
            try:
                return http_get(url + "/healthz")[0] == 200
            except OSError:
                return False

        eventually(answers, timeout=60, interval=0.1, what=f"gunicorn at {url}")
    beat = _beat_start(env, tmp_path / "beat.log")
    yield Portals(urls=urls, celery=workers, beat=beat, gunicorns=gunicorns)
    for process in [beat, *gunicorns]:
        process.terminate()
    for process in [beat, *gunicorns]:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
    for worker in workers:
        worker.stop()
    queue_purge(queue)
    queue_purge(outbound_queue(queue))
    wait_database_sessions_end(django_db_blocker)
