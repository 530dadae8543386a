"""Shared by the token benchmarks: the services they run against (PostgreSQL and Redis, as in
production) and the rule sets they load.

Every benchmark process, and every server it starts, gets the same environment from
`bench_env()`, so the portal under test is configured exactly once, here. The benchmarks own
their database and Redis database: they truncate and flush them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://dispatchportal@127.0.0.1:5432/dispatchportal_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
# Long enough that PyJWT does not warn on every token (it does under 32 bytes).
LIVEKIT_API_KEY = "benchkey"
LIVEKIT_API_SECRET = "bench-secret-long-enough-for-hs256-signing-0123456789"

# The join every benchmark asks a token for: it matches exactly the three HIT_RULES below
# whatever the size of the rule set, so the token always carries three agents.
HIT_ROOM = "tenant-7-support-42"
TOKEN_BODY = {"room_name": HIT_ROOM, "participant_identity": "bench-user", "participant_name": "Bench User"}
HIT_AGENTS = ("greeter", "support-agent", "ticket-agent")
HIT_RULES = (
    # (name, kind, value, agent, metadata template)
    ("hit-tenant-7", "prefix", "tenant-7-", "greeter", {}),
    ("hit-tenant-7-support", "glob", "tenant-7-support-*", "support-agent", {"room": "{{room_name}}"}),
    (
        "hit-support-ticket",
        "regex",
        r"^tenant-(?P<tenant>\d+)-support-(?P<ticket>\d+)$",
        "ticket-agent",
        {"tenant": "{{match.tenant}}", "ticket": "{{match.ticket}}"},
    ),
)
FILLER_AGENTS = tuple(f"agent-{n:02d}" for n in range(20))


def bench_env() -> dict[str, str]:
    """The environment of every benchmark process and server."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.bench_settings",
        DJANGO_ENV="development",
        DEBUG="0",  # DEBUG keeps every query in memory and is not how anyone serves tokens
        LOG_LEVEL="WARNING",
        # `make run` collects static files, a benchmark does not: whitenoise's warning is noise.
        PYTHONWARNINGS="ignore:No directory at:UserWarning",
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
        CACHE_KEY_PREFIX="bench",
        LIVEKIT_URL="http://127.0.0.1:7880",
        LIVEKIT_API_KEY=LIVEKIT_API_KEY,
        LIVEKIT_API_SECRET=LIVEKIT_API_SECRET,
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def django_setup() -> None:
    """Configure Django in this process with the benchmark environment."""
    os.environ.update(bench_env())
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def machine() -> str:
    """Cores and load: this machine is shared, and the figures mean little without them."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load} before the run"


def redis_flush() -> None:
    import redis

    if REDIS_URL:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).flushdb()


def services_prepare() -> None:
    """Create and migrate the benchmark database; empty the benchmark's Redis database. Exits with a clear
    message when either service is missing, since figures without them would mislead. With
    `BENCH_DATABASE_URL=sqlite:///...` and `BENCH_REDIS_URL=` it measures the embedded defaults
    (SQLite, the filesystem broker) instead."""
    import psycopg
    import redis

    if REDIS_URL:
        try:
            # Also drops what an earlier run left: rate-limit counters and the task messages the
            # token path enqueues (no Celery worker consumes them during a benchmark).
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).flushdb()
        except redis.RedisError as exc:
            raise SystemExit(f"Redis at {REDIS_URL} is not reachable ({exc}); set BENCH_REDIS_URL") from None
    if DATABASE_URL.startswith("postgres"):
        target = DATABASE_URL.rsplit("/", 1)
        try:
            with psycopg.connect(f"{target[0]}/postgres", autocommit=True, connect_timeout=5) as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target[1],)).fetchone():
                    conn.execute(f'CREATE DATABASE "{target[1]}"')
        except psycopg.Error as exc:
            raise SystemExit(
                f"PostgreSQL at {DATABASE_URL} is not usable ({exc}); set BENCH_DATABASE_URL"
            ) from None
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=bench_env(), check=True
    )


def backends() -> str:
    """What the portal runs on in this benchmark, for its header."""
    database = "PostgreSQL" if DATABASE_URL.startswith("postgres") else "SQLite"
    return f"{database} + {'Redis' if REDIS_URL else 'the filesystem broker (embedded defaults)'}"


def filler_rule(i: int) -> dict[str, Any]:
    """Rule number `i` of a realistic set: 40% prefix, 40% glob, 15% regex, 5% exact, and
    every 500th a glob that starts with a wildcard (checked against every room). None of them
    matches HIT_ROOM: their tenants start at 1000."""
    tenant = 1000 + i
    kind, value, template = "prefix", f"tenant-{tenant}-", {}
    slot = i % 20
    if i % 500 == 499:
        kind, value = "glob", f"*-recording-{tenant}"
    elif slot < 8:
        kind, value = "prefix", (f"tenant-{tenant}-" if slot % 2 else f"support-{tenant}-")
    elif slot < 16:
        kind, value = "glob", (f"tenant-{tenant}-*" if slot % 2 else f"team-{tenant}-room-*")
    elif slot < 19:
        kind, value = "regex", rf"^interview-{tenant}-(?P<candidate>\d+)$"
        template = {"candidate": "{{match.candidate}}", "room": "{{room_name}}"}
    else:
        kind, value = "exact", f"room-{tenant}"
    return {
        "name": f"rule-{i:05d}",
        "priority": 100 + i % 7,
        "room_match_kind": kind,
        "room_match_value": value,
        "agent": FILLER_AGENTS[i % len(FILLER_AGENTS)],
        "metadata_template": template,
    }


def ruleset_load(rules: int) -> str:
    """Replace agents, rules and clients with a set of `rules` enabled rules (the three hit
    rules among them when `rules` >= 3) and one unthrottled client; returns its key."""
    from django.db import connection, transaction

    from agents_app.models import Agent, ApiClient, DispatchRule
    from agents_app.services import api_client_create, ruleset_bump

    tables = [
        DispatchRule._meta.db_table,
        DispatchRule.history.model._meta.db_table,
        ApiClient.agents.through._meta.db_table,
        ApiClient._meta.db_table,
        ApiClient.history.model._meta.db_table,
        Agent._meta.db_table,
        Agent.history.model._meta.db_table,
    ]
    with transaction.atomic():
        # TRUNCATE, not delete(): per-row signals and history would make 10,000 rules slow.
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
            else:  # SQLite (the embedded defaults)
                for table in reversed(tables):
                    cursor.execute(f"DELETE FROM {table}")
        agents = {
            a.agent_name: a
            for a in Agent.objects.bulk_create(
                [
                    Agent(agent_name=name, display_name=name, default_metadata={"agent": name})
                    for name in HIT_AGENTS + FILLER_AGENTS
                ]
            )
        }
        specs = []
        if rules >= len(HIT_RULES):
            specs = [
                {
                    "name": name,
                    "priority": 10 + n,
                    "room_match_kind": kind,
                    "room_match_value": value,
                    "agent": agent,
                    "metadata_template": template,
                }
                for n, (name, kind, value, agent, template) in enumerate(HIT_RULES)
            ]
        specs += [filler_rule(i) for i in range(rules - len(specs))]
        DispatchRule.objects.bulk_create(
            [DispatchRule(**{**spec, "agent": agents[spec["agent"]]}) for spec in specs], batch_size=2000
        )
        _, key = api_client_create(name="bench", room_patterns=["*"], rate_limit_per_minute=1_000_000_000)
        ruleset_bump()
    return key


def pytest_run(path: str) -> int:
    """Run a measurement written on the test suite's fixtures (the real LiveKit server, agent
    workers, the live server, a Celery worker) and show its printed figures. Its database and
    Redis: DATABASE_URL and REDIS_URL when set (pytest-django makes a test_ database), else the
    benchmarks' own. The portal logs warnings and errors only (LOG_LEVEL=WARNING unless set), so
    its per-dispatch lines do not bury the figures."""
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", DATABASE_URL)
    env.setdefault("REDIS_URL", REDIS_URL)
    env.setdefault("LOG_LEVEL", "WARNING")
    print(machine(), flush=True)
    command = [sys.executable, "-m", "pytest", path, "-q", "-s", "-p", "no:randomly", "--timeout", "1800"]
    return subprocess.call(command, cwd=ROOT, env=env)
