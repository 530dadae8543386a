"""Scale-out benchmarks (issue 21 item 2). Prints figures as plain lines; exits 2 when a service
it needs is missing. Nothing here has a pass/fail target yet: the figures are printed beside
the rate LiveKit would produce, for the closing note.

1. Webhook intake: gunicorn (two workers, as `bin/run-portal`) taking signed LiveKit webhooks
   as fast as 16 concurrent senders post them, for the events a room of one person and one
   agent produces (room_started, participant_joined x2, participant_left x2, room_finished):
   the request verifies, dedupes and records. Then their application to the ledger, as the
   Celery task does it (one application at a time, in recorded order), timed here in
   process. Printed: both sustained rates, and how many joins per second each keeps up with
   (LiveKit sends about 3 webhooks per join when each room has one person and one agent).
2. Reconcile at 10,000 and 100,000 rooms (each with its agent, in the LiveKit emulator), with
   the portal's default settings (RECONCILE_CHUNK_ROOMS, RECONCILE_LIST_ROOMS_TIMEOUT_S): the
   time of a pass; tracemalloc's peak during a second, traced pass, split into the pass's one
   ListRooms answer (LiveKit has no paging: it grows with the rooms) and the rest (the chunked
   pass: flat); and the peak RSS of a pass run as `manage.py reconcile` in a process of its own.

Runs on its own PostgreSQL database and Redis database (it empties both):
SCALE_BENCH_DATABASE_URL (default postgres://dispatchportal@127.0.0.1:5432/dispatchportal_scale_bench)
and SCALE_BENCH_REDIS_URL (default redis://127.0.0.1:6379/13).

    .venv/bin/python bench/scale_bench.py [--rooms 100000] [--webhooks 3000]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault(
    "LIFECYCLE_BENCH_DATABASE_URL",
    os.environ.get(
        "SCALE_BENCH_DATABASE_URL", "postgres://dispatchportal@127.0.0.1:5432/dispatchportal_scale_bench"
    ),
)
os.environ.setdefault(
    "LIFECYCLE_BENCH_REDIS_URL", os.environ.get("SCALE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
)

import lifecycle_bench as lb  # noqa: E402  (its settings come from the environment above)

WEBHOOKS_PER_JOIN = 3  # one person + one agent per room: 6 events for 2 joins
SENDERS = 16
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def signed(body: bytes) -> str:
    from livekit import api

    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return api.AccessToken(lb.API_KEY, lb.API_SECRET).with_sha256(digest).to_jwt()


def room_events(n: int) -> list[bytes]:
    """The six webhooks of room `n`'s life, as LiveKit's protojson."""
    now = int(time.time())
    room = {"sid": f"RM_bench{n:08d}", "name": f"intake-{n}", "creationTime": str(now), "numParticipants": 1}
    person = {"sid": f"PA_p{n:08d}", "identity": "caller", "state": "ACTIVE", "kind": "STANDARD"}
    agent = {
        "sid": f"PA_a{n:08d}",
        "identity": f"agent-AJ_{n:08d}",
        "state": "ACTIVE",
        "kind": "AGENT",
        "attributes": {"lk.agent_name": lb.AGENT},
    }
    events = [
        ("room_started", None),
        ("participant_joined", person),
        ("participant_joined", agent),
        ("participant_left", agent),
        ("participant_left", person),
        ("room_finished", None),
    ]
    bodies = []
    for i, (event, participant) in enumerate(events):
        body: dict = {"event": event, "room": room, "id": f"EV_{n:08d}{i}", "createdAt": str(now)}
        if participant is not None:
            body["participant"] = participant
        bodies.append(json.dumps(body).encode())
    return bodies


def webhook_intake(services: lb.Services, *, count: int) -> tuple[float, int, float, int]:
    """(recorded per second, answers not 200, applied per second, events applied)."""
    lb.portal_start(services, threads=4)
    url = f"http://127.0.0.1:{services.web_port}/livekit/webhook"
    lb.wait_until(
        lambda: _no_proxy.open(url.replace("/livekit/webhook", "/healthz"), timeout=2).status == 200,
        timeout=60,
        what="gunicorn",
    )
    rooms = max(1, count // 6)
    # Each room's events in order, rooms interleaved across senders (as many rooms at once).
    per_room = [room_events(n) for n in range(rooms)]
    prepared = [(body, signed(body)) for body in (b for events in per_room for b in events)]

    def post(item: tuple[bytes, str]) -> int:
        body, token = item
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/webhook+json", "Authorization": token},
        )
        try:
            with _no_proxy.open(request, timeout=30) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code

    warm = prepared[:60]
    with ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(post, warm))
        started = time.monotonic()
        statuses = list(pool.map(post, prepared[60:], chunksize=6))
        elapsed = time.monotonic() - started
    services.stop("gunicorn")
    bad = sum(1 for s in statuses if s != 200)
    from rooms_app.services import webhook_events_apply

    logging.disable(logging.WARNING)  # each agent leaving is a ledger warning: 1,000 lines
    try:
        started = time.monotonic()
        applied = webhook_events_apply()
        apply_s = time.monotonic() - started
    finally:
        logging.disable(logging.NOTSET)
    return len(statuses) / elapsed, bad, applied / apply_s if apply_s else 0.0, applied


def reconcile_fresh(services: lb.Services) -> tuple[float, int, dict]:
    """One pass as `manage.py reconcile` in a process of its own: (seconds, its peak RSS in
    MiB, its report). The peak is the pass's alone, not this process's seeding."""
    started = time.monotonic()
    process = subprocess.Popen(
        [lb.PYTHON, "manage.py", "reconcile", "--json"],
        cwd=lb.ROOT,
        env=services.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    elapsed = time.monotonic() - started
    if status:
        raise SystemExit(f"manage.py reconcile failed: {output[-2000:]!r}")
    return elapsed, usage.ru_maxrss // 1024, json.loads(output)


@dataclass
class ReconcileSized:
    rooms: int
    seconds: float  # one pass, in this process
    traced_peak_mib: float  # tracemalloc's peak over a second pass
    list_rooms_peak_mib: float  # ... over the pass's ListRooms alone (its answer, parsed)
    list_rooms_held_mib: float  # what the pass keeps of that answer while it works
    fresh_seconds: float  # one pass in a process of its own (Django's start-up included)
    fresh_rss_mib: int  # that process's peak RSS
    livekit_errors: int


def reconcile_sized(
    services: lb.Services, control: object, sizes: list[int]
) -> tuple[int, list[ReconcileSized]]:
    """(peak RSS of a pass over no rooms in a process of its own, one row per size), growing
    the seed: the timed pass, a traced pass (tracemalloc's peak), its ListRooms alone, traced,
    and a pass in a process of its own (its peak RSS)."""
    from rooms_app.reconcile import ReconcilePass, ReconcileReport

    lb.reconcile_pass()  # warm-up on no rooms
    _seconds, empty_rss, _report = reconcile_fresh(services)
    seeded = 0
    results = []
    for size in sizes:
        lb.reconcile_seed(control, first=seeded, count=size - seeded)
        seeded = size
        elapsed, _queries, report = lb.reconcile_pass()
        if report.repaired:
            raise SystemExit(f"reconcile at {size} rooms repaired {report.repaired}: the seed is wrong")
        tracemalloc.start()
        tracemalloc.reset_peak()
        lb.reconcile_pass()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        rooms = ReconcilePass(ReconcileReport(), None)._livekit_rooms()
        held, list_peak = tracemalloc.get_traced_memory()
        del rooms
        tracemalloc.stop()
        fresh_seconds, fresh_rss, fresh_report = reconcile_fresh(services)
        results.append(
            ReconcileSized(
                rooms=size,
                seconds=elapsed,
                traced_peak_mib=peak / 2**20,
                list_rooms_peak_mib=(list_peak - base) / 2**20,
                list_rooms_held_mib=(held - base) / 2**20,
                fresh_seconds=fresh_seconds,
                fresh_rss_mib=fresh_rss,
                livekit_errors=report.livekit_errors + fresh_report["livekit_errors"],
            )
        )
    return empty_rss, results


def reconcile_print(row: ReconcileSized, *, empty_rss: int) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    rest = row.traced_peak_mib - row.list_rooms_peak_mib
    print(
        f"reconcile {row.rooms} rooms: {row.seconds:.2f} s ({row.seconds / row.rooms * 1e6:.0f} us/room); "
        f"tracemalloc peak {row.traced_peak_mib:.1f} MiB = ListRooms's answer {row.list_rooms_peak_mib:.1f} MiB "
        f"({row.list_rooms_peak_mib * 1024 / row.rooms:.2f} KiB/room, {row.list_rooms_held_mib:.1f} MiB of it "
        f"kept through the pass) + the chunked pass {rest:.1f} MiB; in a process of its own "
        f"{row.fresh_seconds:.2f} s, peak RSS {row.fresh_rss_mib} MiB ({empty_rss} MiB over no rooms); "
        f"{row.livekit_errors} LiveKit call(s) failed; load average {load}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=100_000, help="rooms in the largest reconcile pass")
    parser.add_argument("--webhooks", type=int, default=3000, help="webhooks posted in the intake benchmark")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, /proc/loadavg {Path('/proc/loadavg').read_text().strip()}")
    print(f"services: {lb.DATABASE_URL.rsplit('@', 1)[-1]}, {lb.REDIS_URL.rsplit('@', 1)[-1]}")
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        services = lb.Services(Path(tmp))
        if not lb.django_and_emulator_start(services):
            return 2
        from livekit_emulator.client import ControlClient

        control = ControlClient(f"http://127.0.0.1:{services.control_port}", timeout=120)
        lb.wait_until(lambda: control.state() is not None, timeout=20, what="emulator")
        try:
            with lb.redis_flushed():
                lb.ledger_empty()
                lb.agent_and_rule(join_deadline_s=600)
                rate, bad, apply_rate, applied = webhook_intake(services, count=args.webhooks)
                print(
                    f"webhook intake (verify, dedupe, record): {rate:.0f} webhooks/s sustained "
                    f"({SENDERS} senders, gunicorn 2x4), {bad} not answered 200; "
                    f"keeps up with {rate / WEBHOOKS_PER_JOIN:.0f} joins/s"
                )
                print(
                    f"webhook application (off the request, one at a time): {apply_rate:.0f} events/s "
                    f"({applied} events); keeps up with {apply_rate / WEBHOOKS_PER_JOIN:.0f} joins/s"
                )
                print(
                    f"LiveKit sends about {WEBHOOKS_PER_JOIN} webhooks per join with one agent per person: "
                    f"1,000 joins/s need {1000 * WEBHOOKS_PER_JOIN:,} webhooks/s"
                )
                lb.ledger_empty()
                sizes = sorted({max(1, args.rooms // 10), args.rooms})
                empty_rss, rows = reconcile_sized(services, control, sizes)
                for row in rows:
                    reconcile_print(row, empty_rss=empty_rss)
        finally:
            services.stop_all()
    print(f"after: /proc/loadavg {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
