"""Retention sweep: how fast it deletes and how long each batch holds its locks.

Fills the benchmark database (PostgreSQL) with what a day of traffic leaves per token (rooms,
dispatches, 4-5 timeline entries each, token facts, webhook events), half of it past its
retention and half live or recent, then runs the sweep (`dispatchportal.retention`, batches of
RETENTION_BATCH_SIZE rows) and prints the rows deleted per second and the duration of each
batch transaction (p50, p99, max): the longest any row lock is held. Target: no batch over
1 s, and every expired row gone while every live and recent one stays.

    .venv/bin/python bench/retention_bench.py [--tokens 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import backends, django_setup, machine, services_prepare  # noqa: E402

MAX_BATCH_S = 1.0


def fill(tokens: int) -> dict[str, int]:
    """`tokens` tokens' worth of rows, set-based; half of them finished 40 days ago."""
    from django.db import connection

    old = tokens // 2
    with connection.cursor() as c:
        c.execute(
            "TRUNCATE rooms_app_dispatchevent, rooms_app_dispatch, rooms_app_room, rooms_app_tokenfact, "
            "rooms_app_webhookevent RESTART IDENTITY CASCADE"
        )
        c.execute(
            """INSERT INTO rooms_app_room (name, sid, status, created_at, finished_at, num_participants,
                   tokens_minted)
               SELECT 'bench-' || i, 'RM_' || i,
                      CASE WHEN i <= %(old)s THEN 'finished' ELSE 'active' END,
                      now() - CASE WHEN i <= %(old)s THEN interval '41 days' ELSE interval '1 hour' END,
                      CASE WHEN i <= %(old)s THEN now() - interval '40 days' END, 0, 1
               FROM generate_series(1, %(n)s) i""",
            {"old": old, "n": tokens},
        )
        c.execute(
            """INSERT INTO rooms_app_dispatch (room_id, agent_name, source, delivery, rule_name, requested_by,
                   participant_identity_trigger, metadata, deployment, attributes, status, attempt,
                   livekit_dispatch_id, request_tries, livekit_job_id, participant_identity, last_error,
                   agents_removed, created_at, ended_at, updated_at)
               SELECT r.id, 'bench-agent', 'token', 'token', 'r', 'web', 'u', '', '', '{}',
                      CASE WHEN r.status = 'finished' THEN 'room_closed' ELSE 'agent_joined' END, 1,
                      '', 0, '', '', '', '[]', r.created_at,
                      CASE WHEN r.status = 'finished' THEN r.finished_at END, r.created_at
               FROM rooms_app_room r"""
        )
        c.execute(
            """INSERT INTO rooms_app_dispatchevent (dispatch_id, at, previous_status, status, detail)
               SELECT d.id, d.created_at, '', 'pending', 'bench' FROM rooms_app_dispatch d,
                      generate_series(1, 5) k WHERE k <= 4 OR d.id % 2 = 0"""
        )
        c.execute(
            """INSERT INTO rooms_app_tokenfact (minted_at, room_name, participant_identity, client, agents,
                   room_live, applied_at, apply_error)
               SELECT now() - CASE WHEN i <= %(old)s THEN interval '8 days' ELSE interval '1 hour' END,
                      'bench-' || i, 'u', 'web', '[]', false, now(), ''
               FROM generate_series(1, %(n)s) i""",
            {"old": old, "n": tokens},
        )
        c.execute(
            """INSERT INTO rooms_app_webhookevent (event_id, event, room_name, participant_identity, agent_name,
                   received_at, applied_at, apply_error)
               SELECT 'EV_' || i, 'participant_joined', 'bench', '', '', t, t, ''
               FROM generate_series(1, %(n)s) i,
                    LATERAL (SELECT now() - CASE WHEN i <= %(old)s THEN interval '3 days'
                                                 ELSE interval '1 hour' END AS t) at""",
            {"old": int(tokens * 3.4) // 2, "n": int(tokens * 3.4)},
        )
        c.execute("ANALYZE")
    return counts()


def counts() -> dict[str, int]:
    from django.db import connection

    tables = ("room", "dispatch", "dispatchevent", "tokenfact", "webhookevent")
    with connection.cursor() as c:
        found = {}
        for table in tables:
            c.execute(f"SELECT count(*) FROM rooms_app_{table}")
            found[table] = c.fetchone()[0]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20000)
    args = parser.parse_args()

    load = machine()
    django_setup()
    services_prepare()
    from django.conf import settings

    from dispatchportal import retention

    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        raise SystemExit("the retention bench measures PostgreSQL (set BENCH_DATABASE_URL)")
    before = fill(args.tokens)

    batches: list[float] = []
    measured = retention.rows_expired_delete

    def timed(**kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return measured(**kwargs)
        finally:
            batches.append(time.perf_counter() - started)

    retention.rows_expired_delete = timed  # type: ignore[assignment]
    started = time.perf_counter()
    deleted = retention.retention_apply(time_budget_s=600)
    took = time.perf_counter() - started
    after = counts()

    removed = sum(before[t] - after[t] for t in before)
    q = statistics.quantiles(batches, n=100, method="inclusive") if len(batches) > 1 else batches * 99
    print(f"retention bench: {backends()}; {args.tokens} tokens' rows, half expired; {load}")
    print("rows before: " + ", ".join(f"{t} {n}" for t, n in before.items()))
    print("rows after:  " + ", ".join(f"{t} {n}" for t, n in after.items()))
    print(f"sweep: {deleted} (rooms with what cascaded) in {took:.2f} s: {removed / took:,.0f} rows/s in all")
    print(
        f"{len(batches)} batches of at most {settings.RETENTION_BATCH_SIZE} rows: "
        f"p50 {statistics.median(batches) * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, max {max(batches) * 1000:.0f} ms"
    )
    expected_after = {
        "room": args.tokens - args.tokens // 2,
        "dispatch": args.tokens - args.tokens // 2,
        "tokenfact": args.tokens - args.tokens // 2,
        "webhookevent": int(args.tokens * 3.4) - int(args.tokens * 3.4) // 2,
    }
    wrong = {t: (after[t], n) for t, n in expected_after.items() if after[t] != n}
    print(f"target: every batch under {MAX_BATCH_S:g} s; expired rows gone, live and recent ones kept")
    if wrong:
        print(f"MISSED rows left (found, expected): {wrong}")
    if max(batches) > MAX_BATCH_S:
        print(f"MISSED the longest batch took {max(batches):.2f} s")
    return 1 if wrong or max(batches) > MAX_BATCH_S else 0


if __name__ == "__main__":
    sys.exit(main())
