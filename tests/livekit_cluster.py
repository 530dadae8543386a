"""A two-node LiveKit cluster for tests: two real livekit-server v1.13.5 processes sharing one
Redis, which is all LiveKit's multi-node routing needs (pkg/routing/redisrouter.go).

- The Redis is a redis-server of the cluster's own on a free port (tests/support.RedisServer):
  LiveKit keeps its rooms, participants and the room -> node map there, and a node killed
  with rooms on it leaves them behind, so no other test may share it.
- Each node has its own ports (HTTP, RTC TCP and UDP) and its own webhook relay, so a test
  can tell which node posted what; both relays forward to the portal under test.
- `room_node(name)` reads the node LiveKit placed a room on (its `room_node_map` hash), and
  `create_room(name, node)` places one (CreateRoom's `node_id`, which the server honours).
- `kill(node)` is a SIGKILL: no webhook, no goodbye, its rooms left in Redis as they were.

What LiveKit does with a dead node (read in v1.13.5's pkg/routing and pkg/service, and seen
against these servers): the node's entry in `nodes` stops being refreshed (every 2 s) and
counts as unavailable after 5 s (selector.AvailableSeconds); its rooms stay in ListRooms (read
from Redis), and by default in ListParticipants with the participants they had, while every
call that goes to the room's node (ListDispatch, DeleteRoom, UpdateRoomMetadata, and
ListParticipants with `enable_psrpc_for_get_list_participants`) answers 503 `unavailable`
"no response from servers" after psrpc's 3 s. A join or CreateDispatch for such a room, once
the node is unavailable, moves it to a live node with the same room sid (roomallocator.go
SelectRoomNode); DeleteRoom never does, so until then the room cannot be deleted.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.real_livekit import AgentWorker, RealLiveKit, require_binary, start_server, start_worker, tail
from tests.support import RedisServer, eventually

NODE_NAMES = ("a", "b")
# What each node adds to tests/real_livekit.py's config. `enable_psrpc_for_get_list_participants`
# sends ListParticipants and GetParticipant to the node hosting the room, as ListDispatch and
# DeleteRoom always go (LiveKit's config says it will become the default): without it they
# read the room store in Redis, where a dead node's participants stay listed, so an agent
# whose job died with the node would still look present after the room moved to a live node.
CLUSTER_CONFIG = """\
redis:
  address: 127.0.0.1:{redis_port}
api:
  enable_psrpc_for_get_list_participants: true
"""


@dataclass
class ClusterNode:
    name: str
    server: RealLiveKit
    node_id: str

    @property
    def alive(self) -> bool:
        return self.server.process.poll() is None


@dataclass
class LiveKitCluster:
    redis: RedisServer
    nodes: dict[str, ClusterNode]
    workdir: Path
    workers: list[AgentWorker] = field(default_factory=list)

    @property
    def a(self) -> ClusterNode:
        return self.nodes["a"]

    @property
    def b(self) -> ClusterNode:
        return self.nodes["b"]

    def _redis(self):  # noqa: ANN202  (redis-py's client)
        import redis

        return redis.Redis(port=self.redis.port, decode_responses=True)

    def room_node(self, room: str) -> str | None:
        """The node ("a" or "b") LiveKit placed `room` on, or None if it has no placement."""
        node_id = self._redis().hget("room_node_map", room)
        return next((n.name for n in self.nodes.values() if n.node_id == node_id), None)

    def registered_nodes(self) -> set[str]:
        """Node ids in LiveKit's `nodes` hash (a killed node stays there until a node starts)."""
        return set(self._redis().hkeys("nodes"))

    def create_room(self, name: str, node: str) -> None:
        """CreateRoom placed on `node` (its node_id), asked of the other node's API."""
        from livekit import api

        asking = next(n for n in self.nodes.values() if n.name != node and n.alive)

        async def create() -> None:
            async with api.LiveKitAPI(
                asking.server.url, asking.server.api_key, asking.server.api_secret
            ) as lk:
                await lk.room.create_room(api.CreateRoomRequest(name=name, node_id=self.nodes[node].node_id))

        asyncio.run(create())

    def worker(self, node: str, *, agent_name: str, behavior: str = "accept") -> AgentWorker:
        """A real livekit-agents worker registered with `node` (its websocket goes there)."""
        server = self.nodes[node].server
        log_path = self.workdir / f"worker-{node}-{agent_name}-{len(self.workers) + 1}.log"
        worker = start_worker(server, agent_name=agent_name, behavior=behavior, log_path=log_path)
        server.workers.remove(worker)
        self.workers.append(worker)
        return worker

    def kill(self, node: str) -> None:
        """SIGKILL one node: its rooms, participants and jobs stay in Redis as they were."""
        process = self.nodes[node].server.process
        process.kill()
        process.wait()

    def logs(self) -> list[tuple[str, str]]:
        sections = [
            (f"livekit node {n.name} ({n.node_id}) log (tail)", n.server.log_tail())
            for n in self.nodes.values()
        ]
        sections += [(f"worker {w.agent_name!r} log (tail)", tail(w.log_path)) for w in self.workers]
        return sections

    def stop(self) -> None:
        """Everything killed at once: the cluster and its Redis are this test's alone."""
        for worker in self.workers:
            worker.kill()
        for node in self.nodes.values():
            node.server.participants.leave_all()
            if node.alive:
                self.kill(node.name)
            node.server.relay.close()
        self.redis.stop(crash=True)


def _node_id(server: RealLiveKit) -> str:
    def found() -> str | None:
        match = re.search(
            r'starting LiveKit server.*?"nodeID": "(ND_\w+)"', server.log_path.read_text(errors="replace")
        )
        return match.group(1) if match else None

    return eventually(found, timeout=10, what="the node id in the server's log")


def cluster_start(workdir: Path) -> LiveKitCluster:
    """Redis, then both nodes; returns once both answer GET / and are in LiveKit's node list."""
    binary = require_binary()
    RedisServer.available()
    redis_server = RedisServer()
    redis_server.start()
    nodes: dict[str, ClusterNode] = {}
    try:
        for name in NODE_NAMES:
            node_dir = workdir / f"node-{name}"
            node_dir.mkdir(parents=True, exist_ok=True)
            config = CLUSTER_CONFIG.format(redis_port=redis_server.port)
            server = start_server(binary, node_dir, extra_config=config)
            nodes[name] = ClusterNode(name=name, server=server, node_id=_node_id(server))
        cluster = LiveKitCluster(redis=redis_server, nodes=nodes, workdir=workdir)
        wanted = {n.node_id for n in nodes.values()}
        eventually(lambda: wanted <= cluster.registered_nodes(), timeout=10, what="both nodes registered")
        return cluster
    except BaseException:
        for node in nodes.values():
            node.server.stop()
        redis_server.stop()
        raise


_cluster_key = pytest.StashKey[LiveKitCluster]()


@pytest.fixture
def livekit_cluster(tmp_path, request) -> Iterator[LiveKitCluster]:
    """A fresh two-node cluster for one test (a killed node's rooms stay in its Redis)."""
    started = time.monotonic()
    cluster = cluster_start(tmp_path / "cluster")
    print(f"\ntwo-node LiveKit cluster ready in {time.monotonic() - started:.2f}s")
    request.node.stash[_cluster_key] = cluster
    yield cluster
    cluster.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    cluster = item.stash.get(_cluster_key, None)
    if cluster is not None and report.failed:
        report.sections.extend(cluster.logs())
