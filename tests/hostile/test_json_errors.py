"""Every failure under /api/ and /livekit/ is JSON `{error, detail}`: a bug in a view, an
unrouted URL, the database connection killed mid-request; with DEBUG on or off. And `/` leads
to the dashboard, never to Django's debug listing of URL patterns."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection
from rest_framework.test import APIClient

from rooms_app.models import Dispatch, Room
from tests.factories import AgentFactory, make_client
from tests.support import eventually

DEBUG_OFF_AND_ON = pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])


def _json_error(response, status: int, error: str) -> dict:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == error
    return body


@DEBUG_OFF_AND_ON
@pytest.mark.urls("tests.hostile.raising_urls")
@pytest.mark.parametrize("path", ["/api/v1/_raise", "/livekit/_raise"])
def test_a_view_that_raises_answers_json_500_naming_the_request_id(settings, db, debug, path):
    settings.DEBUG = debug
    client = APIClient(raise_request_exception=False)

    response = client.get(path, HTTP_X_REQUEST_ID="req-raise-1")

    body = _json_error(response, 500, "server_error")
    assert "req-raise-1" in body["detail"] and response["X-Request-Id"] == "req-raise-1"
    assert "RuntimeError" not in response.content.decode()  # no traceback handed out


@pytest.mark.urls("tests.hostile.raising_urls")
def test_outside_the_api_a_500_is_django_s_own_page(settings, db):
    settings.DEBUG = False
    response = APIClient(raise_request_exception=False).get("/admin-raise/")

    assert response.status_code == 500 and "json" not in response["Content-Type"]


@DEBUG_OFF_AND_ON
@pytest.mark.parametrize("path", ["/api/v1/no-such-thing", "/api/v2/token", "/livekit/nope"])
def test_an_unknown_url_under_the_api_is_a_json_404(settings, db, debug, path):
    settings.DEBUG = debug

    response = APIClient().get(path)

    body = _json_error(response, 404, "not_found")
    assert body["detail"] == f"no such endpoint: {path}"
    assert "urlpatterns" not in response.content.decode() and "admin/" not in response.content.decode()


@DEBUG_OFF_AND_ON
def test_the_site_root_leads_to_the_dashboard(settings, db, debug):
    settings.DEBUG = debug
    client = APIClient()

    response = client.get("/")

    assert response.status_code == 302 and response["Location"] == "/admin/dispatch-dashboard/"
    login = client.get("/", follow=True)
    assert login.status_code == 200
    assert login.redirect_chain[-1][0].startswith("/admin/login/")
    assert "Using the URLconf" not in login.content.decode()


def _killing_the_connection_at(table: str):
    """An execute wrapper that, when the request's connection is about to write `table`,
    has PostgreSQL terminate that connection's backend (from another connection) and waits
    until the backend is gone, so the write meets a dead connection."""
    params = connection.settings_dict
    pid = connection.connection.info.backend_pid
    killed: list[int] = []

    def wrapper(execute, sql, sql_params, many, context):  # type: ignore[no-untyped-def]
        if not killed and sql.startswith(f'INSERT INTO "{table}"'):
            with psycopg.connect(
                dbname=params["NAME"],
                user=params["USER"],
                password=params["PASSWORD"] or None,
                host=params["HOST"] or None,
                port=params["PORT"] or None,
                autocommit=True,
            ) as other:
                assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
                eventually(
                    lambda: (
                        not other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
                    ),
                    timeout=10,
                    what="the request's backend gone",
                )
            killed.append(pid)
        return execute(sql, sql_params, many, context)

    return wrapper, killed


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
@DEBUG_OFF_AND_ON
def test_postgres_killing_the_connection_mid_dispatch_is_a_json_500_and_records_nothing(settings, debug):
    settings.DEBUG = debug
    AgentFactory(agent_name="support-agent")
    _, key = make_client("web", rooms=["support-*"], agent_names=["support-agent"])
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    connection.ensure_connection()
    wrapper, killed = _killing_the_connection_at("rooms_app_dispatch")

    try:
        with connection.execute_wrapper(wrapper):
            response = client.post(
                "/api/v1/dispatches", {"room_name": "support-9", "agent_name": "support-agent"}, format="json"
            )
    finally:
        connection.close()  # the next query opens a fresh connection

    assert killed, "the request never reached the dispatch insert"
    _json_error(response, 500, "server_error")
    assert not Room.objects.filter(name="support-9").exists()
    assert not Dispatch.objects.exists()
