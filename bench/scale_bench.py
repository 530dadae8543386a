"""Scale-out benchmarks (issue 21 item 2). Prints figures as plain lines; exits 2 when a service
it needs is missing. Nothing here has a pass/fail target yet: the figures are printed beside
the rate LiveKit would produce, for the closing note.

1. Webhook intake: gunicorn (two workers, as `bin/run-portal`) taking signed LiveKit webhooks
   as fast as wrk posts them on 16 connections, each event once, for the events a room of one
   person and one agent produces (room_started, participant_joined x2, participant_left x2, room_finished):
   the request verifies, dedupes and records. Then their application to the ledger, as the
   Celery task does it (one application per shard at a time, each room's events in recorded
   order, batches of events in one transaction each), by 1, 2 and 4 processes at once (each
   its share of the shards), the same backlog each time. Printed: the sustained rates, how
   many joins per second each keeps up with (LiveKit sends about 3 webhooks per join when each
   room has one person and one agent).
2. Token facts: applied in process (1 and 3 agents per fact, target 1,000 facts/s), then a
   sustained run (`--facts-rate` tokens/s for `--facts-seconds`) with a real Celery worker,
   with the lag from a token to its ledger row at p50 and p99. Leftover facts are deleted first.
3. Reconcile at 10,000 and 100,000 rooms (each with its agent, in the LiveKit emulator), with
   the portal's default settings (RECONCILE_CHUNK_ROOMS, RECONCILE_LIST_ROOMS_TIMEOUT_S): the
   time of a pass; tracemalloc's peak during a second, traced pass, while it reads its one
   ListRooms answer (LiveKit has no paging: that grows with the rooms) and then while it works
   the chunks (flat but for what it keeps of LiveKit's list); and the RSS of a pass in a
   process of its own, before the pass and at its peak.

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
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
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


def webhook_post(base: str, body: bytes) -> None:
    """POST one event to the portal at `base`, signed as LiveKit signs it."""
    request = urllib.request.Request(
        f"{base}/livekit/webhook",
        data=body,
        method="POST",
        headers={"Content-Type": "application/webhook+json", "Authorization": signed(body)},
    )
    _no_proxy.open(request, timeout=30).read()


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


_WRK_WEBHOOKS = """
local events, sent, answered = {}, 0, 0
function init(args)
  for line in io.lines(args[1]) do
    local tab = line:find("\t", 1, true)
    events[#events + 1] = wrk.format("POST", "/livekit/webhook", {
      ["Content-Type"] = "application/webhook+json",
      ["Authorization"] = line:sub(1, tab - 1),
    }, line:sub(tab + 1))
  end
end
-- Each event once; requests already in flight when the last is sent repeat it (a duplicate,
-- answered 200 without a second row). wrk calls request() once before the run to check it,
-- so the first event is returned twice.
function request()
  sent = sent + 1
  return events[math.max(1, math.min(sent - 1, #events))]
end
function response(status)
  answered = answered + 1
  if answered >= #events then wrk.thread:stop() end
end
"""


def webhook_intake(services: lb.Services, *, count: int) -> tuple[float, int, dict[int, tuple[float, int]]]:
    """(recorded per second, events not answered 200 or not recorded, {appliers: (applied per
    second, events applied)}): the same backlog applied by each number of processes in `APPLIERS`. The webhooks are sent by wrk (one thread, `SENDERS` connections), so the sender takes little
    of the two cores the portal runs on; each event once, phase by phase (every room's
    room_started, then every first join, ...), so no room's events overtake each other."""
    from django.db.models import Max, Min

    from rooms_app.models import WebhookEvent

    lb.portal_start(services, threads=4)
    base = f"http://127.0.0.1:{services.web_port}"
    lb.wait_until(
        lambda: _no_proxy.open(f"{base}/healthz", timeout=2).status == 200, timeout=60, what="gunicorn"
    )
    rooms = max(1, count // 6)
    per_room = [room_events(n) for n in range(rooms)]
    phased = [events[phase] for phase in range(6) for events in per_room]
    warm, measured = phased[:60], phased[60:]
    for body in warm:
        webhook_post(base, body)
    recorded_before = WebhookEvent.objects.count()
    events_file = services.workdir / "webhooks.tsv"
    events_file.write_text("".join(f"{signed(body)}\t{body.decode()}\n" for body in measured))
    script = services.workdir / "webhooks.lua"
    script.write_text(_WRK_WEBHOOKS)
    # wrk runs for its whole -d even once its script stops, so it is interrupted (it then
    # prints its figures) when every event is recorded or after a minute; the rate is the
    # recorded events over the span of their `received_at`.
    command = ["wrk", "-t1", f"-c{SENDERS}", "-d120s", "--timeout", "30s", "-s", str(script), base]
    sender = subprocess.Popen(
        [*command, "--", str(events_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sender.poll() is None:
        if WebhookEvent.objects.count() - recorded_before >= len(measured):
            break
        time.sleep(0.2)
    sender.send_signal(signal.SIGINT)
    out, _ = sender.communicate(timeout=30)
    services.stop("gunicorn")
    not_ok = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    rows = WebhookEvent.objects.filter(event_id__in=[json.loads(body)["id"] for body in measured])
    recorded = rows.count()
    if recorded < 2:
        raise SystemExit(f"the webhook intake recorded {recorded} events; wrk said:\n{out}")
    span = rows.aggregate(first=Min("received_at"), last=Max("received_at"))
    seconds = (span["last"] - span["first"]).total_seconds()
    # Not answered 200, or lost on the way (a socket error: LiveKit would send it again).
    bad = (int(not_ok.group(1)) if not_ok else 0) + (len(measured) - recorded)
    if bad:
        errors = re.search(r"(Socket errors:.*|Non-2xx.*)", out)
        print(f"webhook intake: {bad} events not recorded; wrk: {errors.group(1) if errors else 'no errors'}")
    applied_by: dict[int, tuple[float, int]] = {}
    for appliers in APPLIERS:
        if applied_by:  # the same backlog again: its rooms gone, its events pending
            lb.ledger_empty(keep_webhook_events=True)
            WebhookEvent.objects.update(applied_at=None, apply_error="")
        applied, apply_s = shards_apply_in_processes(services, appliers)
        applied_by[appliers] = (applied / apply_s, applied)
    return (recorded - 1) / seconds, bad, applied_by


# One process applying every shard, then two at once (a Celery worker's two processes, or two
# workers), each taking half the shards, then four (more processes than this machine's cores).
APPLIERS = (1, 2, 4)


def shards_apply_in_processes(services: lb.Services, processes: int) -> tuple[int, float]:
    """The pending webhook events applied by `processes` Python processes at once, process i
    taking the shards i, i + processes, ... as the Celery task does (one shard per call,
    again while events are pending: each call stops after its budget); the events applied
    and the seconds it took, from the moment every process was ready."""
    from rooms_app.services.webhook_events import SHARDS

    children = [
        subprocess.Popen(
            [lb.PYTHON, __file__, "--apply-shards", ",".join(map(str, range(i, SHARDS, processes)))],
            env=services.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    for child in children:  # started (Django imported and set up) before the clock starts
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    started = time.monotonic()
    for child in children:  # all at once: each waits for its word
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.close()
    applied = sum(int(child.stdout.read().strip().splitlines()[-1]) for child in children if child.stdout)
    for child in children:
        child.wait(timeout=60)
    return applied, time.monotonic() - started


def shards_apply(shards: list[int]) -> None:
    """The child of `shards_apply_in_processes`: once set up says "ready", waits for "go",
    then prints how many events it applied."""
    lb.django_setup(dict(os.environ))
    from rooms_app.models import WebhookEvent
    from rooms_app.services import webhook_events_apply

    logging.disable(logging.WARNING)  # each agent leaving is a ledger warning: 1,000 lines
    print("ready", flush=True)
    sys.stdin.readline()
    applied = 0
    while WebhookEvent.objects.filter(shard__in=shards, applied_at__isnull=True).exists():
        applied += sum(webhook_events_apply(shard=shard) for shard in shards)
    print(applied)


# --- token facts ---------------------------------------------------------------------------------

FACT_AGENTS = (lb.AGENT, "bench-agent-2", "bench-agent-3")


def _fact_agents(count: int) -> list[dict[str, str]]:
    return [
        {"agent_name": name, "rule": "bench token", "metadata": "{}", "delivery": "token"}
        for name in FACT_AGENTS[:count]
    ]


def token_facts_clean() -> int:
    """Start from a known state: no token facts (leftovers of an earlier run would be applied
    with the measured ones), and the agents the facts name. Returns how many were deleted."""
    from agents_app.models import Agent
    from rooms_app.models import TokenFact

    for name in FACT_AGENTS:
        Agent.objects.update_or_create(agent_name=name, defaults={"join_deadline_s": 600, "enabled": True})
    deleted, _ = TokenFact.objects.all().delete()
    return deleted


def token_facts_throughput(*, facts: int, agents: int, per_room: int = 2) -> float:
    """Facts recorded as the token path writes them (`per_room` tokens per room, each carrying
    `agents` agents, for rooms LiveKit has not reported yet), then applied by
    `token_facts_apply` as the Celery task runs it, timed in this process. Facts per second."""
    from django.utils import timezone

    from rooms_app.models import TokenFact
    from rooms_app.services import token_facts_apply

    lb.ledger_empty()
    token_facts_clean()
    now = timezone.now()
    TokenFact.objects.bulk_create(
        [
            TokenFact(
                minted_at=now,
                room_name=f"facts-{n // per_room}",
                participant_identity=f"user-{n % per_room}",
                client="bench",
                agents=_fact_agents(agents),
            )
            for n in range(facts)
        ],
        batch_size=1000,
    )
    started = time.monotonic()
    applied = token_facts_apply()
    elapsed = time.monotonic() - started
    if applied != facts:
        raise SystemExit(f"token facts: {applied} of {facts} applied")
    return facts / elapsed


def token_facts_sustained(services: lb.Services, *, rate: int, seconds: float) -> dict[str, float]:
    """Tokens recorded by `token_fact_intake` (the token path's call) at `rate` per second for
    `seconds`, from 4 threads, while a real Celery worker applies them as scheduled. Returns
    the rate recorded, the rate applied (first token to last ledger row), and the lag from a
    token's record to its ledger rows (the fact's `applied_at`, written in the transaction
    that writes them) at p50 and p99, in ms."""
    import threading

    from django.db import connection

    from agents_app.rules import AppliedAgent
    from rooms_app.models import TokenFact
    from rooms_app.services import token_fact_intake

    lb.ledger_empty()
    token_facts_clean()
    lb.worker_start(services)
    from dispatchportal.celery import app

    lb.wait_until(
        lambda: app.control.ping(destination=[f"{lb.QUEUE}@{socket.gethostname()}"], timeout=0.5),
        timeout=60,
        what="celery worker",
    )
    agents = [AppliedAgent(agent_name=lb.AGENT, rule="bench token", metadata="{}", delivery="token")]
    threads = 4
    per_thread = int(rate * seconds) // threads
    started = time.monotonic()

    def produce(offset: int) -> None:
        try:
            for i in range(per_thread):
                due = started + (i * threads + offset) / rate
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                n = i * threads + offset
                token_fact_intake(
                    room_name=f"live-{n // 2}",
                    participant_identity=f"user-{n % 2}",
                    agents=agents,
                    client="bench",
                )
        finally:
            connection.close()

    workers = [threading.Thread(target=produce, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    recorded_s = time.monotonic() - started
    total = per_thread * threads
    lb.wait_until(
        lambda: not TokenFact.objects.filter(applied_at__isnull=True).exists(),
        timeout=120,
        what="facts applied",
    )
    services.stop("worker")
    rows = list(TokenFact.objects.values_list("minted_at", "applied_at", "apply_error"))
    if len(rows) != total or any(error for _, _, error in rows):
        raise SystemExit(f"token facts: {len(rows)} of {total} recorded, some with errors")
    lags = [(applied - minted).total_seconds() * 1000 for minted, applied, _ in rows]
    first = min(m for m, _, _ in rows)
    last = max(a for _, a, _ in rows)
    return {
        "recorded_per_s": total / recorded_s,
        "applied_per_s": total / (last - first).total_seconds(),
        "p50_ms": lb.percentile(lags, 0.5),
        "p99_ms": lb.percentile(lags, 0.99),
        "facts": total,
    }


# A pass in a process of its own, reporting its RSS before the pass and its peak. (The peak
# is read inside: a child's ru_maxrss on Linux counts the parent's pages it was forked with.)
FRESH_PASS = """
import json, django
django.setup()
from rooms_app.reconcile import reconcile_run
def rss(field):
    return next(int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith(field + ":"))
before = rss("VmRSS")
report = reconcile_run().as_dict()
print(json.dumps({"report": report, "before": before, "peak": rss("VmHWM")}))
"""


def reconcile_fresh(services: lb.Services) -> tuple[float, int, int, dict]:
    """One pass in a process of its own: (seconds, RSS before the pass and its peak in MiB,
    the report)."""
    started = time.monotonic()
    answer = subprocess.run(
        [lb.PYTHON, "-c", FRESH_PASS], cwd=lb.ROOT, env=services.env, capture_output=True, check=False
    )
    elapsed = time.monotonic() - started
    if answer.returncode:
        raise SystemExit(f"the reconcile pass in its own process failed: {answer.stderr[-2000:]!r}")
    out = json.loads(answer.stdout.splitlines()[-1])
    return elapsed, out["before"], out["peak"], out["report"]


@dataclass
class ReconcileSized:
    rooms: int
    seconds: float  # one pass, in this process
    list_rooms_peak_mib: float  # tracemalloc's peak while the pass reads ListRooms's answer
    chunks_peak_mib: float  # ... while it works the chunks (what it keeps of that answer included)
    list_rooms_held_mib: float  # what it keeps of that answer
    fresh_seconds: float  # one pass in a process of its own (Django's start-up included)
    fresh_rss_before_mib: int
    fresh_rss_peak_mib: int
    livekit_errors: int


def _traced_pass() -> tuple[float, float]:
    """A pass under tracemalloc: (peak up to the end of its ListRooms, peak after it)."""
    from rooms_app.reconcile import ReconcilePass

    peaks: list[int] = []
    read = ReconcilePass._livekit_rooms

    def read_and_mark(self: ReconcilePass) -> dict:
        rooms = read(self)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.reset_peak()
        return rooms

    ReconcilePass._livekit_rooms = read_and_mark  # type: ignore[method-assign]
    tracemalloc.start()
    try:
        lb.reconcile_pass()
        after = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        ReconcilePass._livekit_rooms = read  # type: ignore[method-assign]
    return peaks[0] / 2**20, after / 2**20


def reconcile_sized(services: lb.Services, control: object, sizes: list[int]) -> list[ReconcileSized]:
    """One row per size, growing the seed: a timed pass, a traced pass, its ListRooms alone
    (traced: what the pass keeps of it), and a pass in a process of its own (its RSS)."""
    from rooms_app.reconcile import ReconcilePass, ReconcileReport

    lb.reconcile_pass()  # warm-up on no rooms
    seeded = 0
    results = []
    for size in sizes:
        lb.reconcile_seed(control, first=seeded, count=size - seeded)
        seeded = size
        elapsed, _queries, report = lb.reconcile_pass()
        if report.repaired:
            raise SystemExit(f"reconcile at {size} rooms repaired {report.repaired}: the seed is wrong")
        list_peak, chunks_peak = _traced_pass()
        tracemalloc.start()
        rooms = ReconcilePass(ReconcileReport(), None)._livekit_rooms()
        held = tracemalloc.get_traced_memory()[0]
        del rooms
        tracemalloc.stop()
        fresh_seconds, before, peak, fresh_report = reconcile_fresh(services)
        results.append(
            ReconcileSized(
                rooms=size,
                seconds=elapsed,
                list_rooms_peak_mib=list_peak,
                chunks_peak_mib=chunks_peak,
                list_rooms_held_mib=held / 2**20,
                fresh_seconds=fresh_seconds,
                fresh_rss_before_mib=before,
                fresh_rss_peak_mib=peak,
                livekit_errors=report.livekit_errors + fresh_report["livekit_errors"],
            )
        )
    return results


def reconcile_print(row: ReconcileSized) -> None:
    print(
        f"reconcile {row.rooms} rooms: {row.seconds:.2f} s ({row.seconds / row.rooms * 1e6:.0f} us/room); "
        f"tracemalloc peak {row.list_rooms_peak_mib:.1f} MiB reading ListRooms's answer "
        f"({row.list_rooms_peak_mib * 1024 / row.rooms:.2f} KiB/room), then {row.chunks_peak_mib:.1f} MiB "
        f"working the chunks ({row.list_rooms_held_mib:.1f} MiB of it LiveKit's list, kept through the pass); "
        f"in a process of its own {row.fresh_seconds:.2f} s, RSS {row.fresh_rss_before_mib} MiB before the pass, "
        f"peak {row.fresh_rss_peak_mib} MiB; {row.livekit_errors} LiveKit call(s) failed; load average {_load()}"
    )


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=100_000, help="rooms in the largest reconcile pass")
    parser.add_argument("--webhooks", type=int, default=3000, help="webhooks posted in the intake benchmark")
    parser.add_argument("--facts", type=int, default=6000, help="token facts applied in the throughput run")
    parser.add_argument("--facts-rate", type=int, default=1000, help="tokens per second in the sustained run")
    parser.add_argument("--facts-seconds", type=float, default=10.0, help="length of the sustained run")
    parser.add_argument("--apply-shards", help=argparse.SUPPRESS)  # a child of shards_apply_in_processes
    args = parser.parse_args()
    if args.apply_shards is not None:
        shards_apply([int(shard) for shard in args.apply_shards.split(",")])
        return 0
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
                print(f"token facts: {token_facts_clean()} left over from earlier runs deleted first")
                for agents in (1, 3):
                    per_s = token_facts_throughput(facts=args.facts, agents=agents)
                    print(
                        f"token facts applied ({args.facts} facts, {agents} agent(s) each, 2 tokens per room, "
                        f"one process): {per_s:.0f} facts/s (target >= 1,000); load {_load()}"
                    )
                sustained = token_facts_sustained(services, rate=args.facts_rate, seconds=args.facts_seconds)
                print(
                    f"token facts sustained ({sustained['facts']:.0f} tokens, one agent each, asked at "
                    f"{args.facts_rate}/s by 4 threads, applied by a Celery worker): recorded "
                    f"{sustained['recorded_per_s']:.0f}/s, applied {sustained['applied_per_s']:.0f}/s; "
                    f"token -> ledger row p50 {sustained['p50_ms']:.0f} ms, p99 {sustained['p99_ms']:.0f} ms; "
                    f"load {_load()}"
                )
                lb.ledger_empty()
                rate, bad, applied_by = webhook_intake(services, count=args.webhooks)
                print(
                    f"webhook intake (verify, dedupe, record): {rate:.0f} webhooks/s sustained "
                    f"(wrk, {SENDERS} connections, gunicorn 2x4), {bad} not answered 200 or lost; "
                    f"keeps up with {rate / WEBHOOKS_PER_JOIN:.0f} joins/s; load {_load()}"
                )
                for appliers, (apply_rate, applied) in applied_by.items():
                    print(
                        f"webhook application by {appliers} process(es) at once, each its share of the shards "
                        f"(off the request, each room's events in recorded order, a quarter of a shard's backlog "
                        f"per transaction, at most 50): {apply_rate:.0f} events/s ({applied} events); keeps up "
                        f"with {apply_rate / WEBHOOKS_PER_JOIN:.0f} joins/s; load {_load()}"
                    )
                one = applied_by[1][0]
                against_one = ", ".join(
                    f"{n} processes {rate / one:.2f}x" for n, (rate, _) in applied_by.items() if n > 1
                )
                print(f"webhook application against one process (same backlog, side by side): {against_one}")
                print(
                    f"LiveKit sends about {WEBHOOKS_PER_JOIN} webhooks per join with one agent per person: "
                    f"1,000 joins/s need {1000 * WEBHOOKS_PER_JOIN:,} webhooks/s"
                )
                lb.ledger_empty()
                if args.rooms <= 0:
                    return 0
                sizes = sorted({max(1, args.rooms // 10), args.rooms})
                for row in reconcile_sized(services, control, sizes):
                    reconcile_print(row)
        finally:
            services.stop_all()
    print(f"after: /proc/loadavg {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
