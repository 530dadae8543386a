"""Prometheus metrics of the dispatch path and the `/metrics` view that exposes them.

Gunicorn runs several workers and Celery several processes; a scrape reaches one of them, so
every process writes its samples to files in `PROMETHEUS_MULTIPROC_DIR` (prometheus_client's
multiprocess mode, switched on by settings before this module is imported) and the view sums
them all. `bin/run-portal` empties that directory at start, and `gunicorn_conf.py` tells the
library when a worker exits.

The table sizes (`dispatchportal_table_rows`, `dispatchportal_table_oldest_row_timestamp_seconds`)
and the backlogs (`dispatchportal_backlog_rows`, `dispatchportal_backlog_oldest_timestamp_seconds`)
are not counted by any process: each scrape reads them from the database (`TablesCollector`).

The helpers below are what the rest of the code calls: one line at the place where the thing
happens, never a failure of the request or task because a metric could not be written.

Access: with `METRICS_TOKEN` set, only `Authorization: Bearer <METRICS_TOKEN>`; without it,
only requests from a loopback address (behind a reverse proxy, set the token: the proxy's
address is loopback for every client).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from datetime import datetime
from typing import Any, TypeVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from .retention import EXACT_COUNT_UP_TO, table_stats_safe

logger = logging.getLogger(__name__)
E = TypeVar("E", bound=BaseException)

# Seconds from a dispatch to its agent joining: a worker usually answers in well under a
# second; the join deadline defaults to 15 s; beyond a minute the buckets stop mattering.
TIME_TO_JOIN_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300)
RECONCILE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60)

TOKENS_MINTED = Counter(
    "dispatchportal_tokens_minted_total",
    "Token requests by API client and outcome (ok, or the error code answered).",
    ["client", "outcome"],
)
RULE_MATCHES = Counter(
    "dispatchportal_rule_matches_total",
    "Agents applied to minted tokens, by the rule that applied them ('client' for agents a client asked for).",
    ["rule"],
)
DISPATCHES = Counter(
    "dispatchportal_dispatches_total",
    "Dispatch status transitions, by the status reached and the agent.",
    ["status", "agent"],
)
TIME_TO_JOIN = Histogram(
    "dispatchportal_dispatch_time_to_join_seconds",
    "Seconds from a dispatch being requested to its agent joining the room.",
    ["agent"],
    buckets=TIME_TO_JOIN_BUCKETS,
)
# Every metric has labels, so none touches the multiprocess directory before its first
# sample: importing this module never fails, even where that directory is unwritable.
RECONCILE_DURATION = Histogram(
    "dispatchportal_reconcile_duration_seconds",
    "Seconds one reconcile pass took, by outcome (ok, or livekit_error when LiveKit could not be asked).",
    ["outcome"],
    buckets=RECONCILE_BUCKETS,
)
RECONCILE_DRIFT = Counter(
    "dispatchportal_reconcile_drift_total",
    "Differences between the ledger and LiveKit that reconcile repaired, by kind.",
    ["kind"],
)
WEBHOOK_EVENTS = Counter(
    "dispatchportal_webhook_events_total",
    "LiveKit webhook events received and verified, by event type.",
    ["event"],
)
WEBHOOK_VERIFICATION_FAILURES = Counter(
    "dispatchportal_webhook_verification_failures_total",
    "LiveKit webhooks refused because the signature or body hash did not verify.",
    ["reason"],
)
AGENTS_REMOVED = Counter(
    "dispatchportal_agents_removed_total",
    "Agent participants the portal removed from a room: a second agent of one name, or the agent "
    "of a cancelled dispatch.",
    ["agent"],
)
LIVEKIT_API_ERRORS = Counter(
    "dispatchportal_livekit_api_errors_total",
    "Failed calls to LiveKit's server API, by method and error code.",
    ["method", "code"],
)


def _safe(fn):
    """A metric that cannot be written (full disk, unwritable directory) is logged, never
    raised: the token or the dispatch matters more than its count."""

    def wrapper(*args, **kwargs):
        try:
            fn(*args, **kwargs)
        except (OSError, ValueError) as exc:
            logger.warning("metric %s not recorded: %s", fn.__name__, exc)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_safe
def token_outcome_record(*, client: str, outcome: str, rules: tuple[str, ...] | list[str] = ()) -> None:
    """One token request answered; `rules` are the rules (or 'client') that applied agents."""
    TOKENS_MINTED.labels(client=client or "-", outcome=outcome).inc()
    for rule in rules:
        RULE_MATCHES.labels(rule=rule).inc()


def token_response_record(*, client: str, status: int, body: Any) -> None:
    """Count a token endpoint answer: 201 is 'ok' (with the rules that applied agents), any
    other its error code ('forbidden', 'rate_limited', ...)."""
    if status == 201 and isinstance(body, dict):
        agents = (body.get("dispatch") or {}).get("agents") or []
        token_outcome_record(client=client, outcome="ok", rules=[a.get("rule", "") for a in agents])
    else:
        error = body.get("error") if isinstance(body, dict) else None
        token_outcome_record(client=client, outcome=str(error or status))


@_safe
def agent_removed_record(*, agent: str) -> None:
    AGENTS_REMOVED.labels(agent=agent or "(unnamed)").inc()


@_safe
def dispatch_status_record(*, status: str, agent: str) -> None:
    DISPATCHES.labels(status=status, agent=agent or "(unnamed)").inc()


def dispatch_transition_record(*, dispatch: Any, status: str) -> None:
    """A dispatch reached `status`; on `agent_joined` its time to join is observed too, from
    the CreateDispatch request (explicit) or the room's start (token delivery). Reads only
    what is loaded: a metric never costs a query."""
    dispatch_status_record(status=status, agent=dispatch.agent_name)
    if status != "agent_joined":
        return
    started = dispatch.requested_at
    if started is None:
        room = getattr(getattr(dispatch, "_state", None), "fields_cache", {}).get("room")
        room_started = getattr(room, "started_at", None)
        started = max(dispatch.created_at, room_started) if room_started else dispatch.created_at
    time_to_join_observe(agent=dispatch.agent_name, started=started, joined=dispatch.joined_at)


@_safe
def time_to_join_observe(*, agent: str, started: datetime | None, joined: datetime | None) -> None:
    """Observe the seconds from `started` (the dispatch request) to `joined`; skipped when
    either is unknown or the clocks disagree."""
    if started is None or joined is None:
        return
    seconds = (joined - started).total_seconds()
    if seconds >= 0:
        TIME_TO_JOIN.labels(agent=agent or "(unnamed)").observe(seconds)


@_safe
def reconcile_record(*, duration_s: float, outcome: str = "ok", drift: dict[str, int] | None = None) -> None:
    RECONCILE_DURATION.labels(outcome=outcome).observe(duration_s)
    for kind, count in (drift or {}).items():
        if count:
            RECONCILE_DRIFT.labels(kind=kind).inc(count)


# The ReconcileReport counters that are drift the pass repaired.
DRIFT_KINDS = (
    "rooms_recorded",
    "rooms_closed",
    "agents_joined",
    "agents_left",
    "agents_adopted",
    "dispatched",
    "redispatched",
    "requeued",
    "tokens_expired",
)


def reconcile_report_record(*, report: Any) -> None:
    """One reconcile pass (a skipped pass did nothing and is not counted)."""
    if getattr(report, "skipped", False):
        return
    drift = {kind: int(getattr(report, kind, 0) or 0) for kind in DRIFT_KINDS}
    outcome = "livekit_error" if getattr(report, "error", "") else "ok"
    reconcile_record(duration_s=float(report.duration_s), outcome=outcome, drift=drift)


@_safe
def webhook_event_record(*, event: str) -> None:
    WEBHOOK_EVENTS.labels(event=event or "unknown").inc()


@_safe
def webhook_refused_record(*, reason: str) -> None:
    WEBHOOK_VERIFICATION_FAILURES.labels(reason=reason).inc()


@_safe
def livekit_error_record(*, method: str, code: str) -> None:
    LIVEKIT_API_ERRORS.labels(method=method or "unknown", code=code or "unknown").inc()


def livekit_error_counted(error: E) -> E:
    """Count a LiveKit client error (a `livekit_boundary.client.LiveKitError`) and hand it back, so the
    client can `raise livekit_error_counted(...)`. Code: LiveKit's Twirp code, else `http_<status>`,
    else what went wrong on the way (timeout, unreachable)."""
    code = getattr(error, "code", "") or ""
    status = getattr(error, "status", None)
    if code in ("", "unknown") and status:
        code = f"http_{status}"  # e.g. LiveKit's auth middleware answers 401 in plain text
    elif not code:
        code = "timeout" if "timed out" in str(error) else "unreachable"
    livekit_error_record(method=getattr(error, "method", ""), code=code)
    return error


# --- exposition -----------------------------------------------------------------------------


class TablesCollector:
    """Rows and the oldest row of every table that grows with traffic, and the backlogs the
    Celery tasks apply (webhook events, token facts: how many wait, since when), read from
    the database at scrape time (`retention.table_stats`: an estimate or a count, and one
    index lookup per table; `retention.backlog_stats`), not from the multiprocess files."""

    def collect(self) -> Any:
        stats, backlogs = table_stats_safe()
        yield from _counts_and_oldest(
            stats,
            label="table",
            rows=(
                "dispatchportal_table_rows",
                f"Rows per table that grows with traffic (PostgreSQL's estimate above {EXACT_COUNT_UP_TO} rows).",
            ),
            oldest=(
                "dispatchportal_table_oldest_row_timestamp_seconds",
                "Unix time of each table's oldest row (absent when the table is empty).",
            ),
        )
        yield from _counts_and_oldest(
            backlogs,
            label="backlog",
            rows=(
                "dispatchportal_backlog_rows",
                f"Rows recorded and not applied to the ledger yet (counted up to {EXACT_COUNT_UP_TO}).",
            ),
            oldest=(
                "dispatchportal_backlog_oldest_timestamp_seconds",
                "Unix time the oldest row not applied yet was recorded (absent when none waits).",
            ),
        )


def _counts_and_oldest(
    stats: list[tuple[str, int, datetime | None]],
    *,
    label: str,
    rows: tuple[str, str],
    oldest: tuple[str, str],
) -> Any:
    """Two gauges from (label value, rows, oldest row's time) triples: the rows, and the
    oldest times that exist."""
    counts = GaugeMetricFamily(*rows, labels=[label])
    firsts = GaugeMetricFamily(*oldest, labels=[label])
    for value, count, first in stats:
        counts.add_metric([value], count)
        if first is not None:
            firsts.add_metric([value], first.timestamp())
    yield counts
    yield firsts


class _ThisProcess:
    def collect(self) -> Any:
        yield from REGISTRY.collect()


def metrics_collect(*, accept: str = "") -> tuple[bytes, str]:
    """Every process's samples (or this process's alone when multiprocess mode is off, e.g.
    a one-off script) and the table sizes, in the format the scraper asked for: (body,
    content type)."""
    encoder, content_type = choose_encoder(accept)
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(TablesCollector())
    return encoder(registry), content_type


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def metrics_allowed(request: HttpRequest) -> tuple[bool, int, str]:
    """(allowed, status if not, why not)."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True, 200, ""
        return False, 401, "metrics need 'Authorization: Bearer <METRICS_TOKEN>'"
    if _is_loopback(request.META.get("REMOTE_ADDR", "")):
        return True, 200, ""
    return False, 403, "metrics answer only loopback addresses unless METRICS_TOKEN is set"


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    allowed, status, why = metrics_allowed(request)
    if not allowed:
        response = HttpResponse(why + "\n", status=status, content_type="text/plain; charset=utf-8")
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics_collect(accept=request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)
