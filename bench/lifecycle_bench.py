"""Dispatch-lifecycle benchmarks (issue 4). Prints figures as plain lines; exits 1 on a missed
target, 2 when a service it needs is missing.

1. room_started webhook -> CreateDispatch received by LiveKit (the emulator records when each
   CreateDispatch arrives), with gunicorn serving the webhook and a real Celery worker on
   Redis. Measured from the room's creation, so the webhook's own delivery is included.
   Target: p50 <= 50 ms, p99 <= 250 ms.
2. One reconcile pass over 10,000 active rooms, each with its agent, in the portal's chunks:
   <= 15 s; and the number of database queries of a pass over one chunk the same at 500 and
   5,000 rooms (ROOM_CHUNK, the most rooms the ledger writes per statement).

Runs against PostgreSQL and Redis as in production, in its own database and Redis database
(it empties both): LIFECYCLE_BENCH_DATABASE_URL (default
postgres://dispatchportal@127.0.0.1:5432/dispatchportal_lifecycle_bench, dropped and created) and
LIFECYCLE_BENCH_REDIS_URL (default redis://127.0.0.1:6379/12). The emulator, gunicorn and the
worker are started here and stopped at the end.

    .venv/bin/python bench/lifecycle_bench.py [--rooms 10000] [--webhook-rooms 300]

LIFECYCLE_BENCH_DEBUG=1 also prints the webhook sender's status and the servers' logs.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
DATABASE_URL = os.environ.get(
    "LIFECYCLE_BENCH_DATABASE_URL", "postgres://dispatchportal@127.0.0.1:5432/dispatchportal_lifecycle_bench"
)
REDIS_URL = os.environ.get("LIFECYCLE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
API_KEY = "lifecycle-bench-key"
API_SECRET = "lifecycle-bench-secret-long-enough-for-hs256-0123456789"
AGENT = "bench-agent"
TARGET_P50_MS, TARGET_P99_MS = 50.0, 250.0
TARGET_RECONCILE_S = 15.0
QUEUE = f"lifecycle-bench-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


class Services:
    """The processes of one run, sharing one environment."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.emulator_port = free_port()
        self.control_port = free_port()
        self.web_port = free_port()
        settings_dir = workdir / "settings"
        settings_dir.mkdir()
        # Every process of the run sends and consumes on a queue of its own: no other worker
        # on this Redis takes these tasks, and this worker takes no one else's.
        (settings_dir / "lifecycle_bench_settings.py").write_text(
            f"from dispatchportal.settings import *  # noqa\nCELERY_TASK_DEFAULT_QUEUE = {QUEUE!r}\n"
        )
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(settings_dir), str(ROOT)]),
            "DJANGO_SETTINGS_MODULE": "lifecycle_bench_settings",
            "DJANGO_ENV": "development",
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
            "PYTHONWARNINGS": "ignore:No directory at:UserWarning",
            "DATABASE_URL": DATABASE_URL,
            "REDIS_URL": REDIS_URL,
            "CACHE_KEY_PREFIX": QUEUE,
            "DISPATCHPORTAL_VAR_DIR": str(workdir / "var"),
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
            "LIVEKIT_URL": f"http://127.0.0.1:{self.emulator_port}",
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
        }
        (workdir / "prometheus").mkdir()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115  owned by the process
        self.processes[name] = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def log_tail(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def database_prepare(env: dict[str, str]) -> None:
    """A fresh benchmark database (it is this benchmark's own), migrated."""
    if DATABASE_URL.startswith("postgres"):
        import psycopg

        base, _, name = DATABASE_URL.rpartition("/")
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)


def django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    for path in reversed(env["PYTHONPATH"].split(os.pathsep)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import django

    django.setup()


def django_and_emulator_start(services: Services) -> bool:
    """The benchmark database migrated, Django set up in this process and the emulator started
    (with `services.env`); False, said on stderr, when the database cannot be prepared."""
    try:
        database_prepare(services.env)
    except Exception as exc:  # noqa: BLE001  report a missing service plainly
        print(f"cannot prepare the benchmark database {DATABASE_URL}: {exc}", file=sys.stderr)
        return False
    django_setup(services.env)
    services.start(
        "emulator",
        [
            PYTHON,
            "-m",
            "livekit_emulator",
            "--port",
            str(services.emulator_port),
            "--control-port",
            str(services.control_port),
            "--keys",
            f"{API_KEY}:{API_SECRET}",
            "--log-level",
            "WARNING",
        ],
    )
    return True


def portal_start(services: Services, *, threads: int = 1) -> None:
    """The portal under gunicorn (2 sync workers, `threads` each) on `services.web_port`."""
    argv = [
        str(BIN / "gunicorn"),
        "-c",
        "dispatchportal/gunicorn_conf.py",
        "dispatchportal.wsgi",
        "--bind",
        f"127.0.0.1:{services.web_port}",
        "--workers",
        "2",
        "--log-level",
        "warning",
    ]
    if threads > 1:
        argv += ["--threads", str(threads)]
    services.start("gunicorn", argv)


def worker_start(services: Services) -> None:
    """One Celery worker on the benchmark's queue, as `bin/run-portal` runs the dispatch worker:
    prefork, two processes (a threads pool measured webhook->CreateDispatch about 10 ms slower
    at p50 once webhook events are applied by shards: two shards applied at once in one
    process share its interpreter lock)."""
    services.start(
        "worker",
        [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "dispatchportal",
            "worker",
            "-Q",
            QUEUE,
            "-n",
            f"{QUEUE}@%h",
            "--pool",
            "prefork",
            "--concurrency",
            "2",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ],
    )


def ledger_empty(*, keep_webhook_events: bool = False) -> None:
    from django.db import connection

    from rooms_app.models import Dispatch, DispatchEvent, Room, WebhookEvent

    models = (DispatchEvent, Dispatch, Room) + (() if keep_webhook_events else (WebhookEvent,))
    tables = [m._meta.db_table for m in models]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")


def agent_and_rule(*, join_deadline_s: int) -> None:
    from agents_app.models import Agent, DispatchRule

    DispatchRule.objects.filter(name__startswith="bench ").delete()
    agent, _ = Agent.objects.update_or_create(
        agent_name=AGENT, defaults={"join_deadline_s": join_deadline_s, "enabled": True, "max_attempts": 3}
    )
    DispatchRule.objects.create(
        name="bench explicit",
        agent=agent,
        room_match_kind="glob",
        room_match_value="bench-*",
        delivery="explicit",
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def redis_flushed() -> Iterator[None]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield
    finally:
        client.flushdb()
        client.close()


# --- 1. webhook -> CreateDispatch -----------------------------------------------------------


def webhook_latency(
    services: Services, control: Any, *, rooms: int, warmup: int
) -> tuple[float, float, int, tuple[float, float, float]]:
    portal_start(services)
    worker_start(services)
    web = f"http://127.0.0.1:{services.web_port}"
    wait_until(
        lambda: urllib.request.urlopen(f"{web}/api/schema/", timeout=2).status == 200,
        timeout=60,
        what="gunicorn",
    )
    # A worker consuming the queue: it answers a ping on the broadcast channel.
    from dispatchportal.celery import app

    wait_until(
        lambda: app.control.ping(destination=[f"{QUEUE}@{socket.gethostname()}"], timeout=0.5),
        timeout=60,
        what="celery worker",
    )
    control.webhooks(url=f"{web}/livekit/webhook", retry_backoff_ms=200)
    control.add_worker(AGENT)
    names = [f"bench-webhook-{i}" for i in range(warmup + rooms)]
    for name in names:
        control.create_rooms([{"name": name, "participants": [{"identity": "caller"}]}])
        # Paced like real traffic (10 rooms/s, each with a caller and its agent joining:
        # three webhooks), so the figure is latency, not queueing.
        time.sleep(0.1)
    expected = set(names)

    def arrived() -> dict[str, float] | None:
        calls = {c["room"]: c["received_at"] for c in control.state()["counters"]["create_dispatch_calls"]}
        return calls if expected <= set(calls) else None

    try:
        calls = wait_until(arrived, timeout=60, what="every CreateDispatch")
    except SystemExit:
        calls = {c["room"] for c in control.state()["counters"]["create_dispatch_calls"]}
        print(f"{len(expected - calls)} of {len(expected)} rooms got no CreateDispatch", file=sys.stderr)
        print(control.webhook_status(), file=sys.stderr)
        print(services.log_tail("worker"), services.log_tail("gunicorn"), sep="\n", file=sys.stderr)
        raise
    created = {r["name"]: r["created_at"] for r in control.state()["rooms"]}
    latencies = [(calls[n] - created[n]) * 1000 for n in names[warmup:]]
    from rooms_app.models import WebhookEvent

    received = dict(
        WebhookEvent.objects.filter(event="room_started", room_name__in=names[warmup:]).values_list(
            "room_name", "received_at"
        )
    )
    applied = dict(
        WebhookEvent.objects.filter(event="room_started", room_name__in=names[warmup:]).values_list(
            "room_name", "applied_at"
        )
    )
    timed = [n for n in names[warmup:] if n in received and applied.get(n)]
    delivery = [(received[n].timestamp() - created[n]) * 1000 for n in timed]
    application = [(applied[n].timestamp() - received[n].timestamp()) * 1000 for n in timed]
    sending = [(calls[n] - applied[n].timestamp()) * 1000 for n in timed]
    split = (statistics.median(delivery), statistics.median(application), statistics.median(sending))
    duplicates = sum(
        1 for c in control.state()["counters"]["create_dispatch_calls"] if c["room"] in expected
    ) - len(names)
    if os.environ.get("LIFECYCLE_BENCH_DEBUG"):
        status = control.webhook_status()
        print({k: v for k, v in status.items() if k != "recent"}, status["recent"][-10:], file=sys.stderr)
        print(services.log_tail("gunicorn"), services.log_tail("worker"), sep="\n", file=sys.stderr)
    services.stop("gunicorn")
    services.stop("worker")
    control.webhooks(url=None)
    return statistics.median(latencies), percentile(latencies, 0.99), duplicates, split


# --- 2. reconcile -------------------------------------------------------------------------------


def reconcile_seed(control: Any, *, first: int, count: int) -> None:
    from django.utils import timezone

    from agents_app.models import Agent
    from rooms_app.models import Dispatch, Room

    names = [f"bench-room-{i}" for i in range(first, first + count)]
    for start in range(0, count, 1000):
        control.create_rooms(
            [
                {
                    "name": name,
                    "participants": [
                        {"identity": "caller"},
                        {
                            "identity": f"agent-{name}",
                            "kind": "AGENT",
                            "attributes": {"lk.agent_name": AGENT},
                        },
                    ],
                }
                for name in names[start : start + 1000]
            ]
        )
    sids = {r["name"]: r["sid"] for r in control.state()["rooms"]}
    agent = Agent.objects.get(agent_name=AGENT)
    now = timezone.now()
    rooms = Room.objects.bulk_create(
        [
            Room(name=n, sid=sids[n], status="active", started_at=now, last_seen_at=now, num_participants=2)
            for n in names
        ],
        batch_size=1000,
    )
    Dispatch.objects.bulk_create(
        [
            Dispatch(
                room=room,
                agent=agent,
                agent_name=AGENT,
                source="rule",
                status="agent_joined",
                participant_identity=f"agent-{room.name}",
                requested_at=now,
                joined_at=now,
            )
            for room in rooms
        ],
        batch_size=1000,
    )


def reconcile_pass() -> tuple[float, int, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from rooms_app.reconcile import reconcile_run

    with CaptureQueriesContext(connection) as queries:
        started = time.monotonic()
        report = reconcile_run()
        elapsed = time.monotonic() - started
    if report.skipped or report.error:
        raise SystemExit(f"reconcile did not run: {report.error or 'lock held'}")
    return elapsed, len(queries), report


# --- main ------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=10_000, help="rooms in the large reconcile pass")
    parser.add_argument("--webhook-rooms", type=int, default=300, help="rooms timed in the webhook benchmark")
    args = parser.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load} before the run")
    print(f"services: {DATABASE_URL.rsplit('@', 1)[-1]}, {REDIS_URL.rsplit('@', 1)[-1]}")

    with tempfile.TemporaryDirectory(prefix="lifecycle-bench-") as tmp:
        services = Services(Path(tmp))
        if not django_and_emulator_start(services):
            return 2
        from livekit_emulator.client import ControlClient

        control = ControlClient(f"http://127.0.0.1:{services.control_port}", timeout=60)
        wait_until(lambda: control.state() is not None, timeout=20, what="emulator")
        failed = False
        try:
            with redis_flushed():
                ledger_empty()
                # A long deadline: no join-deadline check runs during the measurement.
                agent_and_rule(join_deadline_s=600)
                p50, p99, duplicates, split = webhook_latency(
                    services, control, rooms=args.webhook_rooms, warmup=20
                )
                print(f"webhook->CreateDispatch rooms: {args.webhook_rooms} (after 20 warm-up)")
                print(f"webhook->CreateDispatch p50: {p50:.1f} ms (target <= {TARGET_P50_MS:.0f} ms)")
                print(f"webhook->CreateDispatch p99: {p99:.1f} ms (target <= {TARGET_P99_MS:.0f} ms)")
                print(
                    f"webhook->CreateDispatch p50 split: webhook delivery {split[0]:.1f} ms, "
                    f"received -> applied to the ledger {split[1]:.1f} ms, applied -> CreateDispatch {split[2]:.1f} ms"
                )
                print(f"webhook->CreateDispatch duplicate CreateDispatch calls: {duplicates}")
                failed |= p50 > TARGET_P50_MS or p99 > TARGET_P99_MS or duplicates != 0

                control.reset()
                ledger_empty()
                from django.conf import settings

                from rooms_app.services.ledger import ROOM_CHUNK

                # Queries: one chunk holding every room (twice ROOM_CHUNK: a page exactly the
                # chunk's size is followed by an empty read), at a tenth of ROOM_CHUNK rooms and at
                # ROOM_CHUNK (the ledger writes at most that many rooms per statement). Same count:
                # a chunk's queries do not grow with its rooms.
                default_chunk = settings.RECONCILE_CHUNK_ROOMS
                settings.RECONCILE_CHUNK_ROOMS = 2 * ROOM_CHUNK
                # Warm-up on no rooms: the per-process rule cache loads once (a few queries).
                reconcile_pass()
                small = ROOM_CHUNK // 10
                reconcile_seed(control, first=0, count=small)
                _, small_queries, _ = reconcile_pass()
                reconcile_seed(control, first=small, count=ROOM_CHUNK - small)
                _, chunk_queries, _ = reconcile_pass()
                # Time: the portal's own chunks, at args.rooms (at least the ROOM_CHUNK seeded).
                settings.RECONCILE_CHUNK_ROOMS = default_chunk
                rooms = max(args.rooms, ROOM_CHUNK)
                reconcile_seed(control, first=ROOM_CHUNK, count=rooms - ROOM_CHUNK)
                large_s, large_queries, report = reconcile_pass()
                again_s, again_queries, _ = reconcile_pass()
                print(
                    f"reconcile in one chunk: {small} rooms {small_queries} queries, "
                    f"{ROOM_CHUNK} rooms {chunk_queries} queries"
                )
                print(
                    f"reconcile {rooms} rooms (chunks of {default_chunk}): {large_s:.2f} s, {large_queries} queries "
                    f"(target <= {TARGET_RECONCILE_S:.0f} s)"
                )
                print(f"reconcile {rooms} rooms, second pass: {again_s:.2f} s, {again_queries} queries")
                print(
                    f"reconcile {rooms} rooms: {report.rooms_checked} rooms' participants listed, "
                    f"{report.repaired} repairs, {report.livekit_errors} LiveKit errors"
                )
                same = small_queries == chunk_queries
                print(f"reconcile queries per chunk independent of its room count: {'yes' if same else 'NO'}")
                failed |= max(large_s, again_s) > TARGET_RECONCILE_S or not same or report.repaired != 0
        finally:
            services.stop_all()
    print("result: " + ("MISSED a target" if failed else "all targets met"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
