"""The WSGI entry point: the token endpoint through its lean handler answers exactly as
through the full stack (status, body, request id, security headers); other paths get the
full middleware (sessions, CSRF)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from tests.factories import AgentFactory, RuleFactory, make_client

pytestmark = pytest.mark.django_db


def call(
    path: str, body: dict | None = None, *, method: str = "POST", key: str = ""
) -> tuple[str, dict, bytes]:
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

    # As Django's test client does: the test's database connection must outlive the request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        content = b"".join(application(environ, start_response))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return answer["status"], answer["headers"], content


def test_the_token_endpoint_through_the_lean_handler(settings):
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


def test_other_paths_keep_the_full_stack():
    status, headers, _ = call("/admin/login/", method="GET")
    assert status.startswith("200") and "csrftoken" in headers.get("Set-Cookie", "")
