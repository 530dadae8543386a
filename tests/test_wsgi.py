"""The WSGI entry point gunicorn calls: the token endpoint answers through Django's whole stack
(status, body, security headers, no session cookie) with DRF's own authentication and
permission checks; other paths get sessions and CSRF."""

from __future__ import annotations

import io
import json

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from tests.factories import AgentFactory, RuleFactory, make_client

pytestmark = pytest.mark.django_db


def call(
    path: str, body: dict | None = None, *, method: str = "POST", key: str = "", as_gunicorn: bool = False
) -> tuple[str, dict, bytes]:
    """One request through the WSGI app. `as_gunicorn`: with Django's request signals as in
    production (connections checked at each request's start, closed after errors); otherwise
    as Django's test client (the test's connection, and its transaction, outlive the request)."""
    from dispatchportal.wsgi import application

    raw = json.dumps(body).encode() if body is not None else b""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(raw),
        "CONTENT_LENGTH": str(len(raw)),
        "CONTENT_TYPE": "application/json",
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "REMOTE_ADDR": "127.0.0.1",
    }
    answer: dict = {}

    def start_response(status: str, headers: list) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    def run() -> bytes:
        response = application(environ, start_response)
        try:
            return b"".join(response)
        finally:
            response.close()  # as gunicorn does: Django's request_finished is sent here

    if as_gunicorn:
        content = run()
    else:
        # As Django's test client does: the test's database connection must outlive the request.
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            content = run()
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
    return answer["status"], answer["headers"], content


def test_the_token_endpoint_through_gunicorns_entry_point(settings):
    settings.LIVEKIT_API_SECRET = "wsgi-test-secret-long-enough-for-hs256-0123456789"
    RuleFactory(agent=AgentFactory(agent_name="support-agent"), room_match_value="support-*")
    _, key = make_client("web", rooms=["support-*"])
    status, headers, content = call("/api/v1/token", {"room_name": "support-1"}, key=key)
    assert status.startswith("201")
    assert json.loads(content)["dispatch"]["agents"][0]["agent_name"] == "support-agent"
    assert headers.get("X-Content-Type-Options") == "nosniff"  # SecurityMiddleware
    assert "Set-Cookie" not in headers
    status, _, content = call("/api/v1/token", {"room_name": 5}, key=key)
    assert status.startswith("400") and json.loads(content)["error"]
    # No key: DRF's permission check answers 401 and says how to authenticate.
    status, headers, content = call("/api/v1/token", {"room_name": "support-1"})
    assert status.startswith("401") and headers.get("WWW-Authenticate") == 'Bearer realm="api"'
    assert json.loads(content)["error"]


def test_other_paths_keep_the_full_stack():
    status, headers, _ = call("/admin/login/", method="GET")
    assert status.startswith("200") and "csrftoken" in headers.get("Set-Cookie", "")


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_dead_database_connection_costs_no_token(settings):
    """A database restart between two tokens: the next token's INSERT finds the dropped
    connection, and the token path sends it again on a new one: recorded, not answered 500."""
    import psycopg
    from django.db import connection

    from rooms_app.models import TokenFact

    settings.LIVEKIT_API_SECRET = "wsgi-test-secret-long-enough-for-hs256-0123456789"
    RuleFactory(agent=AgentFactory(agent_name="support-agent"), room_match_value="support-*")
    _, key = make_client("web", rooms=["support-*"])
    body = {"room_name": "support-1", "participant_identity": "ann"}
    assert call("/api/v1/token", body, key=key, as_gunicorn=True)[0].startswith("201")
    connection.ensure_connection()  # the connection the next request will find
    pid = connection.connection.info.backend_pid
    with psycopg.connect(connection.connection.info.dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    body["participant_identity"] = "bob"
    assert call("/api/v1/token", body, key=key, as_gunicorn=True)[0].startswith("201")
    assert sorted(TokenFact.objects.values_list("participant_identity", flat=True)) == ["ann", "bob"]
