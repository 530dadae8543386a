"""`/healthz` (alive, no I/O) and `/readyz` (database, migrations, Redis, LiveKit): what a load
balancer or a Kubernetes probe sees when each dependency is up, down or hanging, how fast it
answers, and that the body names checks, never hosts or secrets."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from django.db import connection

from tests.support import free_port

SECRET = "health-test-secret-long-enough-for-hs256-0123456789"


def get(client, path: str):
    response = client.get(path)
    return response.status_code, json.loads(response.content)


def test_healthz_answers_without_touching_anything(client, settings):
    """No database access is allowed in this test (no django_db mark): any query would fail it.
    LiveKit and Redis pointing nowhere change nothing."""
    settings.LIVEKIT_URL = f"http://127.0.0.1:{free_port()}"
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"

    status, body = get(client, "/healthz")

    assert (status, body) == (200, {"status": "alive"})


@pytest.mark.django_db(transaction=True)
def test_readyz_is_ready_when_everything_answers(client, lk, settings):
    status, body = get(client, "/readyz")

    assert status == 200, body
    assert body["status"] == "ready" and body["failed"] == []
    expected = {"database", "migrations", "livekit"} | ({"redis"} if settings.REDIS_URL else set())
    assert set(body["checks"]) == expected
    assert all(check["ok"] for check in body["checks"].values())


@pytest.mark.django_db(transaction=True)
def test_readyz_names_livekit_down_and_reveals_no_address(client, lk, settings):
    settings.LIVEKIT_API_SECRET = SECRET
    lk.control.faults(down=True)

    status, body = get(client, "/readyz")

    assert status == 503
    assert body["status"] == "not_ready" and body["failed"] == ["livekit"]
    assert body["checks"]["livekit"]["error"] == "LiveKit is unreachable"
    assert body["checks"]["database"]["ok"] and body["checks"]["migrations"]["ok"]
    text = json.dumps(body)
    assert settings.LIVEKIT_URL.split("//")[1] not in text and SECRET not in text


@pytest.mark.django_db(transaction=True)
def test_readyz_with_nothing_listening_for_livekit(client, settings):
    settings.LIVEKIT_URL = f"http://127.0.0.1:{free_port()}"

    status, body = get(client, "/readyz")

    assert (status, body["failed"]) == (503, ["livekit"])
    assert body["checks"]["livekit"]["error"] == "LiveKit is unreachable"


@pytest.mark.django_db(transaction=True)
def test_readyz_names_credentials_livekit_refuses(client, lk, settings):
    settings.LIVEKIT_API_SECRET = "not-the-secret-the-server-knows-0123456789abcdef"

    status, body = get(client, "/readyz")

    assert (status, body["failed"]) == (503, ["livekit"])
    assert body["checks"]["livekit"]["error"] == "LiveKit refuses the API key or secret"


@pytest.fixture
def hanging_server():
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for s in accepted:
        s.close()
    server.close()


@pytest.mark.django_db(transaction=True)
def test_readyz_never_hangs_on_a_livekit_or_redis_that_never_answers(client, settings, hanging_server):
    settings.READYZ_TIMEOUT_S = 0.5
    settings.LIVEKIT_URL = f"http://{hanging_server}"
    settings.REDIS_URL = f"redis://{hanging_server}/0"

    started = time.monotonic()
    status, body = get(client, "/readyz")
    took = time.monotonic() - started

    assert status == 503 and body["failed"] == ["redis", "livekit"]
    assert took < 0.5 + 0.25 + 0.25  # the timeout, the grace, and the request itself
    assert body["checks"]["livekit"]["error"] == "LiveKit did not answer within 0.5 s"
    assert body["checks"]["redis"]["error"].startswith("Redis does not answer")
    assert hanging_server not in json.dumps(body)


@pytest.mark.django_db(transaction=True)
def test_readyz_names_redis_unreachable(client, lk, settings):
    port = free_port()
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"

    status, body = get(client, "/readyz")

    assert (status, body["failed"]) == (503, ["redis"])
    assert body["checks"]["redis"]["error"] == "Redis does not answer (ConnectionError)"
    assert str(port) not in json.dumps(body)


@pytest.mark.django_db(transaction=True)
def test_readyz_names_unapplied_migrations(client, lk):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, app, name, applied FROM django_migrations WHERE app = 'rooms_app' ORDER BY id DESC"
        )
        row = cursor.fetchone()
        cursor.execute("DELETE FROM django_migrations WHERE id = %s", [row[0]])
    try:
        status, body = get(client, "/readyz")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO django_migrations (id, app, name, applied) VALUES (%s, %s, %s, %s)", list(row)
            )

    assert (status, body["failed"]) == (503, ["migrations"])
    assert body["checks"]["migrations"]["error"] == f"1 not applied: rooms_app.{row[2]}"
    assert get(client, "/readyz")[0] == 200  # applied again


def wsgi_get(path: str, *, host: str) -> tuple[str, dict, bytes]:
    """A GET through `dispatchportal.wsgi.application`, as gunicorn calls it."""
    import io

    from dispatchportal.wsgi import application

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SERVER_NAME": "10.1.2.3",
        "SERVER_PORT": "8000",
        "HTTP_HOST": host,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "REMOTE_ADDR": "10.1.2.1",
    }
    answer: dict = {}

    def start_response(status: str, headers: list) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    content = b"".join(application(environ, start_response))
    return answer["status"], answer["headers"], content


@pytest.mark.django_db(transaction=True)
def test_probes_need_no_credentials_and_ignore_the_host_they_address(lk, settings):
    """Through the WSGI entry point gunicorn serves: no Authorization, a Host that is the pod's
    IP and not in ALLOWED_HOSTS, many times in a row (no rate limit)."""
    settings.ALLOWED_HOSTS = ["portal.example.com"]
    assert wsgi_get("/api/schema/", host="10.1.2.3:8000")[0].startswith("400")  # any other page
    for _ in range(30):
        status, _, content = wsgi_get("/healthz", host="10.1.2.3:8000")
        assert status.startswith("200"), content
    status, headers, content = wsgi_get("/readyz", host="10.1.2.3:8000")
    assert status.startswith("200"), content
    assert json.loads(content)["status"] == "ready"
    assert headers["Cache-Control"] == "no-store"
