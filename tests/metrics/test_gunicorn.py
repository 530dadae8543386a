"""Under gunicorn with two workers (as `bin/run-portal` runs it), one scrape counts what every
worker did, and a worker that dies does not take its counts with it."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import free_port, gunicorn

from .test_metrics import sample

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 40
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, *, data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    request.add_header("Content-Type", "application/json")
    try:
        with _no_proxy.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _eventually(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def portal(tmp_path):
    """gunicorn -c dispatchportal/gunicorn_conf.py with 2 workers, its own var dir and metrics
    dir. The requests below need no database: an unauthenticated token request is refused
    before any query."""
    port = free_port()
    prom = tmp_path / "prometheus"
    env = {
        **os.environ,
        "DISPATCHPORTAL_VAR_DIR": str(tmp_path / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(prom),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": "",
        "METRICS_TOKEN": "",
        "LOG_LEVEL": "WARNING",
    }
    process = gunicorn(port=port, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _eventually(lambda: _get(base + "/metrics")[0] == 200)
        yield base, prom
    finally:
        process.terminate()
        process.wait(timeout=20)


def _refused_token_requests(base: str, count: int) -> None:
    # Concurrent, so both sync workers have to take some of them.
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: _get(base + "/api/v1/token", data=b"{}")[0], range(count)))
    assert statuses == [401] * count


def _unauthenticated(base: str) -> float:
    _, text = _get(base + "/metrics")
    return sample(text, "dispatchportal_tokens_minted_total", client="-", outcome="unauthenticated")


def _workers_that_counted(prom: Path) -> set[str]:
    return {p.name.split("_")[-1].removesuffix(".db") for p in prom.glob("counter_*.db")}


def test_one_scrape_sums_every_worker_and_survives_a_worker_dying(portal):
    base, prom = portal
    sent = 0

    def until_both_workers_counted() -> bool:
        # Which worker accepts a connection is the kernel's choice: send until both have.
        nonlocal sent
        _refused_token_requests(base, REQUESTS)
        sent += REQUESTS
        return len(_workers_that_counted(prom)) == 2

    _eventually(until_both_workers_counted)

    assert _unauthenticated(base) == sent

    os.kill(int(next(iter(_workers_that_counted(prom)))), signal.SIGKILL)  # gunicorn starts another
    _eventually(lambda: _get(base + "/metrics")[0] == 200)
    _refused_token_requests(base, 2)

    assert _unauthenticated(base) == sent + 2
