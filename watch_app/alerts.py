"""Alerts: incidents raised and resolved by the checks, and their delivery to admin-edited
targets.

An incident has a key (e.g. 'dispatch_gave_up:support-agent'); raising a key that is already
open only counts another occurrence, so each problem is announced once, and resolving it sends
one recovery message. Each message to each target is an AlertDelivery row, sent by a Celery task
with retries and exponential backoff, counted against the target's hourly rate limit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import AlertDelivery, AlertTarget, Condition, Incident
from .net import SendFailed, http_request, safe_host

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-DispatchPortal-Signature"
DELIVERY_HEADER = "X-DispatchPortal-Delivery"
SECRET_PREFIX = "dpw_"


class DeliveryRetry(Exception):
    """A transient failure with attempts left: the task retries after `countdown` seconds."""

    def __init__(self, message: str, *, countdown: float) -> None:
        super().__init__(message)
        self.countdown = countdown


# Sends one delivery: the `alerts.deliver` task's `delay`, bound by `WatchAppConfig.ready()`.
# The tasks import this module, so it does not import them back.
_deliver_send: Callable[[int], object] | None = None


def deliver_send_bind(*, send: Callable[[int], object]) -> None:
    global _deliver_send
    _deliver_send = send


def target_secret_generate() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(*, secret: str, body: bytes) -> str:
    """The signature header's value: 'sha256=' + hex HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff_s(attempt: int) -> float:
    """Delay before retry `attempt` (1-based): exponential with equal jitter, capped."""
    base = float(settings.ALERT_RETRY_BACKOFF_S)
    step = min(float(settings.ALERT_RETRY_BACKOFF_MAX_S), base * 2 ** (attempt - 1))
    return step / 2 + random.uniform(0, step / 2)


# --- incidents --------------------------------------------------------------------------------


def incident_raise(
    *,
    key: str,
    kind: str,
    summary: str,
    subject: str = "",
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> tuple[Incident, bool]:
    """Open the incident `key`, or count another occurrence of the open one. Returns it and
    whether it was opened now (only then are alerts sent)."""
    now = now or timezone.now()
    with transaction.atomic():
        open_ = Incident.objects.select_for_update().filter(key=key, status=Incident.Status.OPEN).first()
        if open_ is None:
            try:
                with transaction.atomic():
                    incident = Incident.objects.create(
                        key=key,
                        kind=kind,
                        subject=subject,
                        summary=summary,
                        detail=detail or {},
                        opened_at=now,
                        last_seen_at=now,
                    )
            except IntegrityError:  # opened by a concurrent check a moment ago
                open_ = Incident.objects.get(key=key, status=Incident.Status.OPEN)
            else:
                logger.warning("incident opened: %s", summary, extra={"incident": key})
                _deliveries_create(incident=incident, event=AlertDelivery.Event.OPENED, now=now)
                return incident, True
        Incident.objects.filter(pk=open_.pk).update(
            last_seen_at=now,
            occurrences=open_.occurrences + 1,
            summary=summary,
            detail=detail or open_.detail,
        )
        open_.refresh_from_db()
        return open_, False


def incident_resolve(*, key: str, summary: str = "", now: datetime | None = None) -> Incident | None:
    """Resolve the open incident `key` and announce it; None when nothing was open."""
    now = now or timezone.now()
    with transaction.atomic():
        incident = Incident.objects.select_for_update().filter(key=key, status=Incident.Status.OPEN).first()
        if incident is None:
            return None
        incident.status = Incident.Status.RESOLVED
        incident.resolved_at = now
        if summary:
            incident.detail = {**incident.detail, "resolution": summary}
        incident.save(update_fields=["status", "resolved_at", "detail"])
        logger.info("incident resolved: %s", incident.summary, extra={"incident": key})
        _deliveries_create(incident=incident, event=AlertDelivery.Event.RESOLVED, now=now)
        return incident


def incident_set(
    *,
    failing: bool,
    key: str,
    kind: str,
    summary: str,
    resolution: str = "",
    subject: str = "",
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Raise `key` while `failing`, resolve it otherwise: what every check ends with."""
    if failing:
        incident_raise(key=key, kind=kind, summary=summary, subject=subject, detail=detail, now=now)
    else:
        incident_resolve(key=key, summary=resolution, now=now)


def _deliveries_create(*, incident: Incident, event: str, now: datetime) -> list[AlertDelivery]:
    send = _deliver_send
    if send is None:
        raise RuntimeError("alert deliveries are not bound: WatchAppConfig.ready() binds them")
    created = []
    hour_ago = now - timedelta(hours=1)
    for target in AlertTarget.objects.filter(enabled=True):
        used = AlertDelivery.objects.filter(
            target=target,
            created_at__gt=hour_ago,
            status__in=(AlertDelivery.Status.PENDING, AlertDelivery.Status.SENT, AlertDelivery.Status.FAILED),
        ).count()
        limited = used >= target.max_per_hour
        delivery = AlertDelivery.objects.create(
            target=target,
            incident=incident,
            event=event,
            created_at=now,
            status=AlertDelivery.Status.RATE_LIMITED if limited else AlertDelivery.Status.PENDING,
        )
        created.append(delivery)
        if not limited:
            transaction.on_commit(lambda pk=delivery.pk: send(pk))
    return created


# --- conditions watched between checks --------------------------------------------------------


def condition_record(*, key: str, ok: bool, error: str = "", now: datetime | None = None) -> Condition:
    """Record one check of a watched condition: failures in a row and since when."""
    now = now or timezone.now()
    with transaction.atomic():
        condition, _ = Condition.objects.select_for_update().get_or_create(key=key)
        if ok:
            condition.failing_since = None
            condition.consecutive_failures = 0
            condition.last_error = ""
        else:
            condition.failing_since = condition.failing_since or now
            condition.consecutive_failures += 1
            condition.last_error = error[:2000]
        condition.checked_at = now
        condition.save()
    return condition


# --- delivery ---------------------------------------------------------------------------------


def _payload(delivery: AlertDelivery) -> dict[str, Any]:
    incident = delivery.incident
    return {
        "event": delivery.event,
        "incident": {
            "key": incident.key,
            "kind": incident.kind,
            "subject": incident.subject,
            "status": incident.status,
            "summary": incident.summary,
            "detail": incident.detail,
            "opened_at": incident.opened_at.isoformat(),
            "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
            "occurrences": incident.occurrences,
        },
        "delivery_id": delivery.pk,
        "sent_at": timezone.now().isoformat(),
    }


def _slack_text(delivery: AlertDelivery) -> str:
    incident = delivery.incident
    if delivery.event == AlertDelivery.Event.RESOLVED:
        return f":white_check_mark: Resolved: {incident.summary}"
    return f":rotating_light: {incident.summary}"


def delivery_request(delivery: AlertDelivery) -> tuple[bytes, dict[str, str]]:
    """The exact body and headers a delivery sends."""
    target = delivery.target
    headers = {"Content-Type": "application/json", "User-Agent": "DispatchPortal-Alerts/1"}
    if target.kind == AlertTarget.Kind.SLACK:
        return json.dumps({"text": _slack_text(delivery)}).encode(), headers
    body = json.dumps(_payload(delivery), separators=(",", ":")).encode()
    headers[DELIVERY_HEADER] = str(delivery.pk)
    if target.secret:
        headers[SIGNATURE_HEADER] = signature(secret=target.secret, body=body)
    return body, headers


def delivery_send(*, delivery_id: int) -> str:
    """Send one pending delivery once. Raises DeliveryRetry on a transient failure with attempts
    left; a final failure or a success is recorded on the row. A second run of a delivery that
    is no longer pending does nothing."""
    delivery = (
        AlertDelivery.objects.select_related("target", "incident")
        .filter(pk=delivery_id, status=AlertDelivery.Status.PENDING)
        .first()
    )
    if delivery is None:
        return "skipped"
    target = delivery.target
    attempt = delivery.attempts + 1
    body, headers = delivery_request(delivery)
    try:
        answer = http_request(
            target.url,
            allow_private=target.allow_private,
            timeout_s=target.timeout_s,
            body=body,
            headers=headers,
        )
    except SendFailed as exc:
        final = not exc.transient or attempt >= target.max_attempts
        AlertDelivery.objects.filter(pk=delivery.pk, status=AlertDelivery.Status.PENDING).update(
            attempts=attempt,
            response_status=exc.status,
            last_error=exc.message,
            status=AlertDelivery.Status.FAILED if final else AlertDelivery.Status.PENDING,
        )
        logger.warning(
            "alert to %s failed (attempt %d): %s",
            target.name,
            attempt,
            exc.message,
            extra={"target": target.name},
        )
        if final:
            return "failed"
        raise DeliveryRetry(exc.message, countdown=backoff_s(attempt)) from None
    AlertDelivery.objects.filter(pk=delivery.pk, status=AlertDelivery.Status.PENDING).update(
        attempts=attempt,
        response_status=answer.status,
        last_error="",
        status=AlertDelivery.Status.SENT,
        sent_at=timezone.now(),
    )
    logger.info("alert sent to %s (%s)", target.name, safe_host(target.url), extra={"target": target.name})
    return "sent"


def target_save(*, target: AlertTarget, new_secret: str = "") -> str:
    """Save a target; a webhook without a secret gets a generated one. Returns the secret
    when it was set now (to be shown once), else ''."""
    from .net import UrlRefused, url_check

    try:
        url_check(target.url, allow_private=target.allow_private)
    except UrlRefused as exc:
        raise ValueError(str(exc)) from None
    shown = ""
    if new_secret:
        target.secret = shown = new_secret
    elif target.kind == AlertTarget.Kind.WEBHOOK and not target.secret:
        target.secret = shown = target_secret_generate()
    target.save()
    return shown
