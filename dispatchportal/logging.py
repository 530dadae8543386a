"""Who and what a log line is about: request id, room, agent and dispatch id on every line.

Debugging "why didn't my agent join?" means following one room across the web process, the
Celery worker and LiveKit's webhooks. Each log record therefore carries, as JSON fields:

- `request_id`: from the caller's `X-Request-Id` header (or a new one), set by
  `RequestIdMiddleware`, echoed in the response, and carried into Celery tasks the request
  enqueues;
- `room`, `agent`, `dispatch_id`: from `log_context(...)`, which the
  dispatch path calls once it knows them (a task that takes a `dispatch_id` gets that much
  bound automatically).

Values passed explicitly with `extra=` win over the context.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.http import HttpRequest, HttpResponse

CONTEXT_FIELDS = ("room", "agent", "dispatch_id")
REQUEST_ID_HEADER = "X-Request-Id"
_HEADER_KEY = "dp_log_context"  # the Celery message header carrying the context
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("dp_request_id", default="")
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "dp_log_context", default=None
)


def request_id_get() -> str:
    return _request_id.get()


def log_context_get() -> dict[str, str]:
    return dict(_context.get() or {})


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Within the block, every log line carries these fields (room=, agent=, dispatch_id=)."""
    token = _context.set({**(_context.get() or {}), **_clean(fields)})
    try:
        yield
    finally:
        _context.reset(token)


def _clean(fields: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in fields.items() if v is not None and v != ""}


class ContextFilter(logging.Filter):
    """Copies the request id and the dispatch context onto each record (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _request_id.get()
        if request_id and not getattr(record, "request_id", None):
            record.request_id = request_id
        for key, value in (_context.get() or {}).items():
            if getattr(record, key, None) in (None, ""):
                setattr(record, key, value)
        return True


class RequestIdMiddleware:
    """Gives each request an id (the caller's `X-Request-Id` when it is sane) for its logs
    and echoes it in the response, so a user's report can be matched to our lines."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        id_token = _request_id.set(request_id)
        context_token = _context.set(None)
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(id_token)
            _context.reset(context_token)
        response[REQUEST_ID_HEADER] = request_id
        return response


# --- Celery: carry the context from the enqueuing request into the task ---------------------


def _on_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    carried = log_context_get()
    if _request_id.get():
        carried["request_id"] = _request_id.get()
    if carried:
        headers[_HEADER_KEY] = carried


_task_tokens: dict[str, tuple[contextvars.Token[str], contextvars.Token[dict[str, str] | None]]] = {}


def _dispatch_id(task: Any, args: tuple[Any, ...] | None, kwargs: dict[str, Any] | None) -> Any:
    """The `dispatch_id` a task was called with, by keyword or by position."""
    if kwargs and kwargs.get("dispatch_id") is not None:
        return kwargs["dispatch_id"]
    try:
        names = list(inspect.signature(task.run).parameters)
    except (AttributeError, TypeError, ValueError):
        return None
    if args and "dispatch_id" in names and names.index("dispatch_id") < len(args):
        return args[names.index("dispatch_id")]
    return None


def _on_prerun(
    task_id: str = "",
    task: Any = None,
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    carried = dict(getattr(getattr(task, "request", None), _HEADER_KEY, None) or {})
    request_id = carried.pop("request_id", "") or _request_id.get()
    context = {**(_context.get() or {}), **_clean({k: v for k, v in carried.items() if k in CONTEXT_FIELDS})}
    dispatch_id = _dispatch_id(task, args, kwargs)
    if dispatch_id is not None:
        context["dispatch_id"] = str(dispatch_id)
    # Reset after the task, so nothing leaks into the next task of this worker process (and
    # an eager task run inside a request gives the request its own context back).
    _task_tokens[task_id] = (_request_id.set(request_id), _context.set(context or None))


def _on_postrun(task_id: str = "", **_: Any) -> None:
    tokens = _task_tokens.pop(task_id, None)
    if tokens is None:
        return
    try:
        _context.reset(tokens[1])
        _request_id.reset(tokens[0])
    except ValueError:  # set in another context (a thread pool): just clear
        _request_id.set("")
        _context.set(None)


def _celery_connect() -> None:
    try:
        from celery import signals
    except ImportError:  # celery is a dependency; stay importable for tools without it
        return
    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid="dp_log_publish")
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="dp_log_prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="dp_log_postrun")


# Imported by the LOGGING settings in every process (web, worker, beat, manage.py), which is
# exactly where the signals must be connected.
_celery_connect()
