"""Cold start: gunicorn loads the portal once in its master (`preload_app`) and forks workers
that answer from their first request. Safe only because importing the portal opens no
connection a worker would inherit: held here, then shown end to end under gunicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connection

from tests.factories import AgentFactory, RuleFactory, make_client
from tests.support import free_port, gunicorn

ROOT = Path(__file__).resolve().parents[1]
SECRET = "startup-test-secret-long-enough-for-hs256-0123456789"
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))

PROBE = """
import json, threading
import dispatchportal.wsgi  # what the gunicorn master imports with preload_app
from django.core.cache import caches
from django.db import connections
from dispatchportal import redis as portal_redis
from dispatchportal.celery import app

print(json.dumps({
    "database": [c.alias for c in connections.all(initialized_only=True) if c.connection is not None],
    "caches": [str(alias) for alias in caches.settings if hasattr(caches._connections, alias)],
    "redis_clients": portal_redis._client.cache_info().currsize,
    "celery_pool": app._pool is not None,
    "threads": [t.name for t in threading.enumerate()],
}))
"""


def test_the_gunicorn_config_preloads_the_app():
    from dispatchportal import gunicorn_conf

    assert gunicorn_conf.preload_app is True


def test_importing_the_portal_opens_no_connection_and_starts_no_thread():
    """What the master holds when it forks: no database, cache, Redis or broker connection (a
    worker would share its socket), and no thread (a thread does not survive a fork)."""
    answer = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    held = json.loads(answer.stdout.strip().splitlines()[-1])
    assert held == {
        "database": [],
        "caches": [],
        "redis_clients": 0,
        "celery_pool": False,
        "threads": ["MainThread"],
    }


def _request(url: str, *, body: dict | None = None, key: str = "", host: str = "") -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if host:
        request.add_header("Host", host)
    try:
        with _no_proxy.open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.needs_postgres
@pytest.mark.needs_redis
@pytest.mark.django_db(transaction=True)
def test_preloaded_workers_each_serve_tokens_on_connections_of_their_own(lk, tmp_path, settings):
    """Two workers forked from one loaded master mint tokens at once (each one a database
    write and a Redis call): every answer is right, both workers served, and the master
    itself never did."""
    RuleFactory(agent=AgentFactory(agent_name="support-agent"), room_match_value="support-*")
    _, key = make_client("web", rooms=["support-*"], rate_limit_per_minute=100_000)
    prom = tmp_path / "prometheus"
    database = connection.settings_dict
    env = {
        **os.environ,
        "DISPATCHPORTAL_VAR_DIR": str(tmp_path / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(prom),
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "LIVEKIT_URL": lk.url,
        "LIVEKIT_API_KEY": lk.api_key,
        "LIVEKIT_API_SECRET": lk.api_secret,
        "ALLOWED_HOSTS": "portal.example.com",
        "LOG_LEVEL": "WARNING",
    }
    port = free_port()
    process = gunicorn(port=port, env=env, stderr=open(tmp_path / "gunicorn.log", "wb"))  # noqa: SIM115
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _request(base + "/healthz", host="10.1.2.3:8000")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()[-2000:]
            time.sleep(0.05)

        def mint(i: int) -> tuple[int, bytes]:
            return _request(
                base + "/api/v1/token",
                body={"room_name": f"support-{i}", "participant_identity": f"user-{i}"},
                key=key,
                host="portal.example.com",
            )

        answered: list[tuple[int, bytes]] = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            # Which worker accepts is the kernel's choice: mint until both have.
            for _ in range(20):
                answered += pool.map(mint, range(len(answered), len(answered) + 40))
                if len(set(prom.glob("counter_*.db"))) >= 2:
                    break
        assert [status for status, _ in answered] == [201] * len(answered)
        assert all(
            json.loads(body)["dispatch"]["agents"][0]["agent_name"] == "support-agent" for _, body in answered
        )
        served_by = {int(p.stem.rsplit("_", 1)[1]) for p in prom.glob("counter_*.db")}
        assert len(served_by) == 2 and process.pid not in served_by

        status, body = _request(base + "/readyz", host="10.1.2.3:8000")
        assert status == 200, body
        assert json.loads(body)["failed"] == []
    finally:
        process.terminate()
        process.wait(timeout=20)
