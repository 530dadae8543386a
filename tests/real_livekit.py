"""pytest plugin: LiveKit's own server (livekit-server v1.13.5) and real livekit-agents workers.

- `real_livekit` (session): starts the binary found at LIVEKIT_SERVER_BIN, `.bin/livekit-server`
  or on PATH, with a config file of its own: one API key, everything bound to 127.0.0.1, free
  ports, no public STUN server (see `_config`), webhooks sent to a relay. It waits for `GET /`
  to answer 200 and prints how long the start took. Its log stays under the session's tmp dir;
  a failing test that used it gets the log's tail in its report. Each test gets it without
  rooms (`RealLiveKit.reset`).
- Webhooks: one server serves the whole session, but each test's portal (`live_server`) has its
  own port, so the server posts to a relay on a fixed port which forwards the exact body and
  headers to `real_livekit.relay.target` (a test sets it) and answers with the target's status,
  so LiveKit's retries stay real. Without a target the relay answers 200 and drops the event.
- `agent_worker(agent_name=..., behavior=...)` (function scope): starts `tests/agent_worker.py`
  as a subprocess and returns once the worker has registered with the server.

Without the binary, tests marked `needs_livekit_server` (added automatically to every test using
`real_livekit`) skip, or fail under REQUIRE_SERVICES=1 (see tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
API_KEY = "real-test-key"
# 32+ bytes so PyJWT does not warn about the key length.
API_SECRET = "real-test-secret-for-livekit-server-0123456789"
HOW_TO_GET = (
    "the real LiveKit server is not built: run `make livekit-server` (builds v1.13.5 into "
    ".bin/livekit-server), or set LIVEKIT_SERVER_BIN to a livekit-server binary"
)
MARKER = "needs_livekit_server"
LOG_TAIL_LINES = 60

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def server_binary() -> str | None:
    """The livekit-server to run: LIVEKIT_SERVER_BIN, then .bin/livekit-server, then PATH."""
    explicit = os.environ.get("LIVEKIT_SERVER_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    built = REPO / ".bin" / "livekit-server"
    if os.access(built, os.X_OK):
        return str(built)
    return shutil.which("livekit-server")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    try:
        with _no_proxy.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class WebhookRelay:
    """Forwards LiveKit's webhook POSTs, byte for byte, to `target`; keeps what it relayed."""

    def __init__(self) -> None:
        self.target: str | None = None
        # > 0: answer LiveKit at once and deliver each event this many seconds later, as a
        # lagging webhook pipeline does (the portal then hears of a join after what followed it).
        self.delay_s = 0.0
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self._lock = threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items() if k in ("Authorization", "Content-Type")}
                status = relay.forward(body, headers)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/livekit/webhook"
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def forward(self, body: bytes, headers: dict[str, str]) -> int:
        with self._lock:
            self.received.append((body, headers))
            target = self.target
        if target is None:
            return 200
        if self.delay_s > 0:
            timer = threading.Timer(self.delay_s, self._deliver, (target, body, headers))
            timer.daemon = True
            timer.start()
            return 200
        return self._deliver(target, body, headers)

    @staticmethod
    def _deliver(target: str, body: bytes, headers: dict[str, str]) -> int:
        request = urllib.request.Request(target, data=body, method="POST", headers=headers)
        try:
            with _no_proxy.open(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 502  # the target is down: LiveKit retries as it would

    def reset(self) -> None:
        with self._lock:
            self.target = None
            self.delay_s = 0.0
            self.received.clear()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _config(*, http_port: int, tcp_port: int, udp_port: int, stun_port: int, webhook_url: str) -> str:
    # - node_ip + use_external_ip false: no external IP discovery, and (mediatransportutil
    #   rtcconfig) no STUN servers in the server's own ICE config.
    # - stun_servers: the server tells clients Google's STUN servers unless this list is set
    #   (roommanager.go, iceServersForParticipant); a loopback port nothing answers keeps them
    #   on this machine.
    # - enable_loopback_candidate + ips.includes: the UDP mux listens on 127.0.0.1 only and
    #   offers it as a candidate. The RTC TCP port is bound on all interfaces by the server
    #   (net.ListenTCP without an address) but only 127.0.0.1 is ever advertised.
    return f"""\
port: {http_port}
bind_addresses: [127.0.0.1]
rtc:
  tcp_port: {tcp_port}
  udp_port: {udp_port}
  node_ip: 127.0.0.1
  use_external_ip: false
  enable_loopback_candidate: true
  ips:
    includes: [127.0.0.1/32]
  stun_servers: ["127.0.0.1:{stun_port}"]
keys:
  {API_KEY}: {API_SECRET}
webhook:
  api_key: {API_KEY}
  urls: ["{webhook_url}"]
logging:
  level: debug
  pion_level: error
"""


class JoinRefused(Exception):
    """The server refused a participant's join; `.status` and `.message` as its /rtc/validate says."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"join refused ({status}): {message}")
        self.status = status
        self.message = message


class Participants:
    """Participants connected with LiveKit's rtc SDK (WebRTC over loopback), as a browser would.

    The SDK needs a running event loop for as long as a participant stays connected, so they
    all live on one loop in a background thread."""

    def __init__(self, server: RealLiveKit) -> None:
        self._server = server
        self._rooms: dict[tuple[str, str], Any] = {}
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def _run(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def join(self, token: str) -> dict[str, Any]:
        """Connect with `token`; returns the participant as the server sees it once connected."""
        from livekit import rtc

        async def connect() -> Any:
            room = rtc.Room(loop=self._loop)
            await room.connect(self._server.ws_url, token, rtc.RoomOptions(auto_subscribe=False))
            return room

        mark = self._server.log_mark()
        try:
            room = self._run(connect())
        except rtc.ConnectError as exc:
            raise self._refusal(exc.message, self._server.log_since(mark)) from None
        me = room.local_participant
        self._rooms[(room.name, me.identity)] = room
        return {
            "sid": me.sid,
            "identity": me.identity,
            "name": me.name,
            "metadata": me.metadata,
            "attributes": dict(me.attributes),
            "room": room.name,
        }

    @staticmethod
    def _refusal(error: str, server_log: str) -> JoinRefused:
        """The status and message of the refused handshake, from the SDK's error, e.g.
        "signal failure: client error: 401 Unauthorized - invalid token: ..." or
        "handshake error: 500 Internal Server Error" (no body: the server's log has the reason)."""
        found = re.search(r"\b([45]\d\d) [A-Za-z ]+?(?: - (.*))?$", error)
        if found is None:
            return JoinRefused(0, error)
        message = found.group(2) or ""
        if not message:
            reasons = re.findall(r'could not join room.*"error": "([^"]+)"', server_log)
            message = reasons[-1] if reasons else ""
        return JoinRefused(int(found.group(1)), message)

    def leave(self, room: str, identity: str) -> None:
        connected = self._rooms.pop((room, identity))
        self._run(connected.disconnect())

    def leave_all(self) -> None:
        for room, identity in list(self._rooms):
            with contextlib.suppress(Exception):
                self.leave(room, identity)


@dataclass
class RealLiveKit:
    """A running livekit-server: `.url`, `.ws_url`, `.api_key`, `.api_secret`, `.relay`, `.log_path`."""

    url: str
    api_key: str
    api_secret: str
    relay: WebhookRelay
    log_path: Path
    process: subprocess.Popen
    started_in_s: float
    kind: str = "real"
    workers: list[AgentWorker] = field(default_factory=list)
    # Named workers kept for the whole session (see `shared_worker`); never unnamed ones.
    shared_workers: dict[tuple[str, str], AgentWorker] = field(default_factory=dict)
    participants: Participants = field(init=False)

    def __post_init__(self) -> None:
        self.participants = Participants(self)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def log_mark(self) -> int:
        """A position in the log; `log_since(mark)` returns what was written after it."""
        return self.log_path.stat().st_size

    def log_since(self, mark: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(mark)
            return log.read().decode(errors="replace")

    def reset(self) -> None:
        """Disconnect our participants, delete every room (with its dispatches), detach the relay."""
        from livekit import api

        self.participants.leave_all()

        async def delete_all() -> None:
            # Until none is left: an agent whose job was accepted just before its room was
            # deleted still joins, and its join creates the room again.
            async with api.LiveKitAPI(self.url, self.api_key, self.api_secret) as lk:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    rooms = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
                    if not rooms:
                        return
                    for room in rooms:
                        with contextlib.suppress(api.TwirpError):
                            await lk.room.delete_room(api.DeleteRoomRequest(room=room.name))
                    await asyncio.sleep(0.5)  # then look again: a late agent's join recreates it

        asyncio.run(delete_all())
        self.relay.reset()

    def shared_worker(self, agent_name: str, behavior: str = "accept") -> AgentWorker:
        """A registered worker of that name kept for the session: a worker takes 3 to 15 s to
        register here, and a named worker gets only the dispatches naming it, so tests that
        just need one running can share it. An unnamed worker would join every later room."""
        if not agent_name:
            raise ValueError("an unnamed worker is sent to every new room: never share one")
        worker = self.shared_workers.get((agent_name, behavior))
        if worker is None or worker.process.poll() is not None:
            log_path = self.log_path.parent / f"shared-worker-{agent_name}-{behavior}.log"
            self.shared_workers.pop((agent_name, behavior), None)
            worker = start_worker(self, agent_name=agent_name, behavior=behavior, log_path=log_path)
            self.workers.remove(worker)  # not killed with the test that started it
            self.shared_workers[(agent_name, behavior)] = worker
        return worker

    def stop(self) -> None:
        for worker in self.shared_workers.values():
            worker.kill()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.relay.close()


def start_server(binary: str, workdir: Path, *, extra_config: str = "") -> RealLiveKit:
    """A livekit-server on free ports in `workdir`; `extra_config` is appended to its YAML
    (e.g. a `redis:` section for a multi-node cluster, see tests/livekit_cluster.py)."""
    relay = WebhookRelay()
    http_port = free_port()
    config = _config(
        http_port=http_port,
        tcp_port=free_port(),
        udp_port=free_port(socket.SOCK_DGRAM),
        stun_port=free_port(socket.SOCK_DGRAM),
        webhook_url=relay.url,
    )
    config += extra_config
    config_path = workdir / "livekit.yaml"
    config_path.write_text(config)
    log_path = workdir / "livekit-server.log"
    url = f"http://127.0.0.1:{http_port}"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
        )
    deadline = started + 30
    while True:
        if process.poll() is not None:
            relay.close()
            raise RuntimeError(f"livekit-server exited with {process.returncode}:\n{tail(log_path)}")
        with contextlib.suppress(OSError):
            if http_get(url + "/")[0] == 200:
                break
        if time.monotonic() > deadline:
            process.kill()
            relay.close()
            raise RuntimeError(f"livekit-server did not answer GET / within 30 s:\n{tail(log_path)}")
        time.sleep(0.01)
    return RealLiveKit(
        url=url,
        api_key=API_KEY,
        api_secret=API_SECRET,
        relay=relay,
        log_path=log_path,
        process=process,
        started_in_s=time.monotonic() - started,
    )


# --- real agent workers --------------------------------------------------------------------

BEHAVIORS = ("accept", "publish", "speak", "raise", "exit", "slow", "coldstart")
WORKER_PROGRAM = REPO / "tests" / "agent_worker.py"
REGISTERED = "AGENT_WORKER_REGISTERED"


@dataclass
class AgentWorker:
    """A `tests/agent_worker.py` subprocess: `.worker_id`, `.health_url`, `.log()`, stop/kill."""

    agent_name: str
    behavior: str
    process: subprocess.Popen
    log_path: Path
    worker_id: str = ""
    health_url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_registered(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log().splitlines():
                if line.startswith(REGISTERED):
                    _, self.worker_id, port = line.split()
                    self.health_url = f"http://127.0.0.1:{port}"
                    return
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"agent worker exited with {self.process.returncode}:\n{self.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent worker did not register within {timeout}s:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def status(self) -> dict[str, Any]:
        """The worker's own view (`/worker`): agent_name, active_jobs, worker_load."""
        import json

        return json.loads(http_get(self.health_url + "/worker")[1])

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (the worker drains and unregisters), then SIGKILL after `timeout`."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.wait()

    def kill(self) -> None:
        """SIGKILL the worker and every job process it started (its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start_worker(
    server: RealLiveKit, *, agent_name: str, behavior: str, log_path: Path, delay_s: float = 3.0
) -> AgentWorker:
    if behavior not in BEHAVIORS:
        raise ValueError(f"behavior must be one of {BEHAVIORS}, not {behavior!r}")
    env = {
        **os.environ,
        "LIVEKIT_URL": server.ws_url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "AGENT_NAME": agent_name,
        "AGENT_BEHAVIOR": behavior,
        "AGENT_DELAY_S": str(delay_s),
    }
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(proxy, None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(WORKER_PROGRAM)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
            start_new_session=True,  # its own process group, so kill() takes its job processes too
        )
    worker = AgentWorker(agent_name=agent_name, behavior=behavior, process=process, log_path=log_path)
    server.workers.append(worker)
    try:
        worker.wait_registered()
    except RuntimeError:
        worker.kill()
        raise
    return worker


# --- fixtures and hooks --------------------------------------------------------------------


def require_binary() -> str:
    binary = server_binary()
    if binary is None:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"REQUIRE_SERVICES=1 but {HOW_TO_GET}")
        pytest.skip(HOW_TO_GET)
    return binary


@pytest.fixture(scope="session")
def real_livekit_session(tmp_path_factory, pytestconfig) -> Iterator[RealLiveKit]:
    server = start_server(require_binary(), tmp_path_factory.mktemp("livekit-server"))
    pytestconfig.stash[_started_key] = server.started_in_s
    print(f"\nlivekit-server ready in {server.started_in_s:.2f}s at {server.url} (log: {server.log_path})")
    yield server
    server.stop()


@pytest.fixture
def real_livekit(real_livekit_session: RealLiveKit, request) -> Iterator[RealLiveKit]:
    """The real LiveKit server, without rooms; its log tail goes into a failing test's report."""
    real_livekit_session.reset()
    request.node.stash[_server_key] = real_livekit_session
    real_livekit_session.workers = []
    yield real_livekit_session
    for worker in real_livekit_session.workers:
        worker.kill()
    real_livekit_session.reset()


@pytest.fixture
def agent_worker(real_livekit: RealLiveKit, tmp_path) -> Callable[..., AgentWorker]:
    """`agent_worker(agent_name="x", behavior="accept")`: a registered real worker; killed after."""
    count = 0

    def start(*, agent_name: str, behavior: str = "accept", delay_s: float = 3.0) -> AgentWorker:
        nonlocal count
        count += 1
        log_path = tmp_path / f"agent-worker-{count}-{agent_name or 'unnamed'}.log"
        return start_worker(
            real_livekit, agent_name=agent_name, behavior=behavior, log_path=log_path, delay_s=delay_s
        )

    return start


_server_key = pytest.StashKey[RealLiveKit]()
_started_key = pytest.StashKey[float]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        server_param = callspec.params.get("livekit_server") if callspec is not None else None
        only = item.get_closest_marker("emulator_only")
        if server_param == "real" and only is not None:
            item.add_marker(pytest.mark.skip(reason=f"emulator only: {only.args[0] if only.args else ''}"))
        elif server_param == "real" or (
            server_param is None and "real_livekit_session" in getattr(item, "fixturenames", ())
        ):
            item.add_marker(MARKER)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    server = item.stash.get(_server_key, None)
    if server is None or not report.failed:
        return
    report.sections.append(("livekit-server log (tail)", server.log_tail()))
    for worker in [*server.workers, *server.shared_workers.values()]:
        report.sections.append((f"agent worker {worker.agent_name!r} log (tail)", tail(worker.log_path)))


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    started = config.stash.get(_started_key, None)
    if started is not None:
        terminalreporter.write_line(f"livekit-server start (exec to GET / 200): {started:.2f}s")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Shut the rtc SDK's native runtime down while Python is still whole, once every test and
    fixture is done. Left to the SDK's own atexit hook, its runtime's threads can call back into
    an interpreter that is finalizing, and the process then aborts ("panic in a function that
    cannot unwind", exit 250) after every test passed; this was seen once in a benchmark run."""
    ffi = sys.modules.get("livekit.rtc._ffi_client")
    if ffi is not None and ffi.FfiClient._instance is not None:
        ffi.FfiClient._instance._dispose()  # idempotent: the atexit hook then does nothing
