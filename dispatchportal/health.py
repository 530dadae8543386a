"""Health endpoints for load balancers and orchestrators.

- `/healthz` (liveness): the process answers. No I/O at all, so a slow database or LiveKit
  never gets a healthy process restarted.
- `/readyz` (readiness): this process can serve: the database answers, every migration is
  applied, Redis answers (when REDIS_URL is set) and LiveKit answers with these credentials.
  Each check runs in a thread of its own and must answer within READYZ_TIMEOUT_S; the answer
  comes by then whatever a check does (a check still hanging is reported as timed out). 200
  when every check passed, else 503; the body names each check, and what failed in words that
  carry no host, URL or secret.

Both answer without authentication and are never rate-limited: they reveal nothing but the
names of the checks. `ProbeMiddleware`, first in MIDDLEWARE, answers them before any
middleware reads the Host header, so a probe addressing the pod's IP is answered whatever
ALLOWED_HOSTS says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.migrations.loader import MigrationLoader
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from .reserved import CANARY_ROOM_PREFIX

# A check still running this long after its own timeout is reported as timed out.
GRACE_S = 0.25
NO_STORE = "no-store"


class CheckFailed(Exception):
    """A readiness check failed; the message is safe to show (no host, URL or secret)."""


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    response = JsonResponse({"status": "alive"})
    response["Cache-Control"] = NO_STORE
    return response


@cache
def _migrations_on_disk() -> frozenset[tuple[str, str]]:
    """Every migration the code has (read once per process: it imports the migration files)."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return frozenset(loader.graph.nodes)


def _database_and_migrations(results: dict[str, Any]) -> None:
    """SELECT 1, then the applied migrations, on a connection of this thread's own (closed
    after: a probe's thread never comes back)."""
    connection = connections["default"]
    started = time.monotonic()
    try:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        except DatabaseError as exc:
            results["database"] = _failed(started, f"cannot query the database ({type(exc).__name__})")
            results["migrations"] = _failed(started, "not checked: the database does not answer")
            return
        results["database"] = _passed(started)
        started = time.monotonic()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT app, name FROM django_migrations")
                applied = set(cursor.fetchall())
        except DatabaseError:
            applied = set()
        missing = sorted(_migrations_on_disk() - applied)
        if missing:
            names = ", ".join(f"{app}.{name}" for app, name in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            results["migrations"] = _failed(started, f"{len(missing)} not applied: {names}{more}")
        else:
            results["migrations"] = _passed(started)
    finally:
        connection.close()


def _redis(timeout_s: float) -> None:
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise CheckFailed(f"Redis does not answer ({type(exc).__name__})") from None
    finally:
        client.close()


def _livekit(timeout_s: float) -> None:
    """One cheap, authenticated call (ListRooms of a reserved probe name): reachable and
    accepting the credentials."""
    from livekit_boundary.client import LiveKitAuthRejected, LiveKitError, LiveKitUnavailable, livekit_run

    async def probe(client: Any) -> None:
        await client.list_rooms([f"{CANARY_ROOM_PREFIX}probe"])

    try:
        livekit_run(probe, timeout_s=timeout_s)
    except LiveKitAuthRejected:
        raise CheckFailed("LiveKit refuses the API key or secret") from None
    except LiveKitUnavailable as exc:
        if "timed out" in exc.message:
            raise CheckFailed(f"LiveKit did not answer within {timeout_s:g} s") from None
        if exc.status:
            raise CheckFailed(f"LiveKit answered {exc.status} {exc.code}".rstrip()) from None
        raise CheckFailed("LiveKit is unreachable") from None
    except LiveKitError as exc:
        raise CheckFailed(f"LiveKit answered {exc.status or ''} {exc.code}".strip()) from None


def _passed(started: float) -> dict[str, Any]:
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}


def _failed(started: float, error: str) -> dict[str, Any]:
    return {"ok": False, "ms": round((time.monotonic() - started) * 1000, 1), "error": error}


def _guarded(name: str, check: Callable[[], None], results: dict[str, Any]) -> Callable[[], None]:
    def run() -> None:
        started = time.monotonic()
        try:
            check()
        except CheckFailed as exc:
            results[name] = _failed(started, str(exc))
        except Exception as exc:  # noqa: BLE001  (a probe answers; the error's type says what broke)
            results[name] = _failed(started, f"check failed ({type(exc).__name__})")
        else:
            results.setdefault(name, _passed(started))

    return run


def readiness_check(*, timeout_s: float | None = None) -> dict[str, Any]:
    """Run every readiness check at once, each in a daemon thread, and wait at most
    `timeout_s` (READYZ_TIMEOUT_S) plus a grace: {"status": "ready" | "not_ready",
    "checks": {name: {"ok", "ms", "error"?}}, "failed": [names]}."""
    timeout = float(timeout_s if timeout_s is not None else settings.READYZ_TIMEOUT_S)
    results: dict[str, Any] = {}
    names = ["database", "migrations"]
    runs: list[Callable[[], None]] = [
        _guarded("database", lambda: _database_and_migrations(results), results)
    ]
    if settings.REDIS_URL:
        names.append("redis")
        runs.append(_guarded("redis", lambda: _redis(timeout), results))
    names.append("livekit")
    runs.append(_guarded("livekit", lambda: _livekit(timeout), results))

    started = time.monotonic()
    threads = [threading.Thread(target=run, name="readyz", daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    deadline = started + timeout + GRACE_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))

    snapshot = dict(results)  # a check finishing after the deadline changes nothing here
    checks = {
        name: snapshot.get(name) or _failed(started, f"did not answer within {timeout:g} s") for name in names
    }
    failed = [name for name, check in checks.items() if not check["ok"]]
    return {"status": "not_ready" if failed else "ready", "checks": checks, "failed": failed}


@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    report = readiness_check()
    response = JsonResponse(report, status=503 if report["failed"] else 200)
    response["Cache-Control"] = NO_STORE
    return response


class ProbeMiddleware:
    """Answers `/healthz` and `/readyz` itself, ahead of the rest of the stack: probes come
    often, address the pod's IP (which ALLOWED_HOSTS need not list) and need no session."""

    PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {"/healthz": healthz, "/readyz": readyz}

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = self.PROBES.get(request.path_info)
        return probe(request) if probe is not None else self.get_response(request)
