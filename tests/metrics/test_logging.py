"""JSON logs on the dispatch path: each line carries the request id, room, agent and dispatch
id, in the web process and in the Celery task the request enqueued."""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from pythonjsonlogger.json import JsonFormatter

from dispatchportal import logging as dp_logging


@pytest.fixture
def json_lines():
    """A logger wired like settings.LOGGING: the context filter and the JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(dp_logging.ContextFilter())
    logger = logging.getLogger("tests.dispatch-path")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield logger, lines
    logger.removeHandler(handler)


def test_a_request_gets_an_id_on_its_log_lines_and_in_the_response(json_lines):
    logger, lines = json_lines

    def view(request):
        with dp_logging.log_context(room="support-1", agent="support-agent", dispatch_id=7):
            logger.info("dispatch requested")
        logger.info("done")
        return HttpResponse("ok")

    response = dp_logging.RequestIdMiddleware(view)(RequestFactory().get("/"))

    request_id = response["X-Request-Id"]
    first, second = lines()
    assert first["request_id"] == request_id and len(request_id) == 32
    assert (first["room"], first["agent"], first["dispatch_id"]) == ("support-1", "support-agent", "7")
    assert second["request_id"] == request_id and "room" not in second
    assert dp_logging.request_id_get() == ""  # nothing leaks past the request


def test_a_sane_caller_request_id_is_kept_and_a_strange_one_replaced():
    middleware = dp_logging.RequestIdMiddleware(lambda request: HttpResponse("ok"))

    kept = middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="lb-1234.abc"))
    replaced = middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="<script>" * 3))

    assert kept["X-Request-Id"] == "lb-1234.abc"
    assert replaced["X-Request-Id"] != "<script>" * 3 and len(replaced["X-Request-Id"]) == 32


def test_explicit_extra_fields_win_over_the_context(json_lines):
    logger, lines = json_lines

    with dp_logging.log_context(room="from-context"):
        logger.info("x", extra={"room": "explicit"})

    assert lines()[0]["room"] == "explicit"


def test_a_task_carries_the_request_context_and_binds_its_dispatch_id(json_lines):
    logger, lines = json_lines
    headers: dict = {}
    token = dp_logging._request_id.set("req-42")
    with dp_logging.log_context(room="support-1", agent="support-agent"):
        dp_logging._on_publish(headers=headers)  # enqueued inside the request
    dp_logging._request_id.reset(token)

    task = SimpleNamespace(request=SimpleNamespace(**headers))
    dp_logging._on_prerun(task_id="t1", task=task, kwargs={"dispatch_id": 9})
    logger.info("in the worker")
    dp_logging._on_postrun(task_id="t1")
    logger.info("after the task")

    in_task, after = lines()
    assert in_task["request_id"] == "req-42"
    assert (in_task["room"], in_task["agent"], in_task["dispatch_id"]) == ("support-1", "support-agent", "9")
    assert "request_id" not in after and "room" not in after


def test_the_settings_log_json_through_the_context_filter(settings):
    handler = settings.LOGGING["handlers"]["console"]
    assert handler["formatter"] == "json" and "context" in handler["filters"]
    assert settings.MIDDLEWARE[0] == "dispatchportal.logging.RequestIdMiddleware"


def test_a_dispatch_id_passed_by_position_is_bound_too(json_lines):
    from rooms_app.tasks import dispatch_request  # takes dispatch_id as its first argument

    logger, lines = json_lines
    dp_logging._on_prerun(task_id="t2", task=dispatch_request, args=(31,), kwargs={})
    logger.info("in the worker")
    dp_logging._on_postrun(task_id="t2")

    assert lines()[0]["dispatch_id"] == "31"
