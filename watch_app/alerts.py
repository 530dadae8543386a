"""Alerts: incidents raised and resolved by the checks, and their delivery to admin-edited
targets.

An incident has a key (e.g. 'dispatch_gave_up:support-agent'); raising a key that is already
open only counts another occurrence, so each problem is announced once, and resolving it sends
one recovery message. Each message to each target is an AlertDelivery row, sent by a Celery task
with retries and exponential backoff, counted against the target's hourly rate limit.
"""

from __future__ import annotations

import functools
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
from django.db.models import Q
from django.utils import timezone

from .models import AlertDelivery, AlertTarget, Condition, Incident
from .net import SendFailed, http_request, safe_host

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-DispatchPortal-Signature"
DELIVERY_HEADER = "X-DispatchPortal-Delivery"
SECRET_PREFIX = "dpw_"


# Time allowed past an attempt's own deadline before the sweep calls it interrupted.
ATTEMPT_GRACE_S = 10.0


class DeliveryRetry(Exception):
    """A transient failure with attempts left: the task sends attempt `attempt` after
    `countdown` seconds."""

    def __init__(self, message: str, *, countdown: float, attempt: int) -> None:
        super().__init__(message)
        self.countdown = countdown
        self.attempt = attempt


# Sends attempt N of one delivery: the `alerts.deliver` task's `delay`, bound by
# `WatchAppConfig.ready()`. The tasks import this module, so it does not import them back.
_deliver_send: Callable[[int, int], object] | None = None


def deliver_send_bind(*, send: Callable[[int, int], object]) -> None:
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
    step = min(float(settings.ALERT_RETRY_BACKOFF_MAX_S), base * 2.0 ** (attempt - 1))
    return step / 2 + random.uniform(0, step / 2)


# --- incidents --------------------------------------------------------------------------------


def incident_raise(
    *,
    key: str,
    kind: str,
    summary: str,
    subject: str = "",
    detail: dict[str, Any] | None = None,
    occurrences: int = 1,
    now: datetime | None = None,
) -> tuple[Incident, bool]:
    """Open the incident `key`, or update the open one. `occurrences`: how many events of the
    problem the check counts so far (failed dispatches, failed runs, failed probes); checking
    the same events again does not count them again. Returns the incident and whether it was
    opened now (only then are alerts sent)."""
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
                        occurrences=max(1, occurrences),
                        # A key muted by staff stays muted when its problem comes back.
                        muted_until=Incident.objects.filter(key=key, muted_until__gt=now)
                        .order_by("-muted_until")
                        .values_list("muted_until", flat=True)
                        .first(),
                    )
            except IntegrityError:  # opened by a concurrent check a moment ago
                open_ = Incident.objects.get(key=key, status=Incident.Status.OPEN)
            else:
                logger.warning("incident opened: %s", summary, extra={"incident": key})
                _deliveries_create(incident=incident, event=AlertDelivery.Event.OPENED, now=now)
                return incident, True
        Incident.objects.filter(pk=open_.pk).update(
            last_seen_at=now,
            occurrences=max(open_.occurrences, occurrences),
            summary=summary,
            detail=detail or open_.detail,
        )
        open_.refresh_from_db()
        return open_, False


def incident_resolve(*, key: str, summary: str = "", now: datetime | None = None) -> Incident | None:
    """Resolve the open incident `key` (its cause went away, or staff resolved it) and
    announce it; None when nothing was open. `summary` says why, e.g. "agent 'x' was disabled"."""
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
    occurrences: int = 1,
    now: datetime | None = None,
) -> None:
    """Raise `key` while `failing`, resolve it otherwise: what every check ends with."""
    if failing:
        incident_raise(
            key=key,
            kind=kind,
            summary=summary,
            subject=subject,
            detail=detail,
            occurrences=occurrences,
            now=now,
        )
    else:
        incident_resolve(key=key, summary=resolution, now=now)


def incident_acknowledge(*, incident: Incident, by: str, now: datetime | None = None) -> bool:
    """Staff have seen the open incident and are on it; False when it was not open or was
    already acknowledged."""
    return bool(
        Incident.objects.filter(
            pk=incident.pk, status=Incident.Status.OPEN, acknowledged_at__isnull=True
        ).update(acknowledged_at=now or timezone.now(), acknowledged_by=by[:150])
    )


def incident_mute(*, incident: Incident, until: datetime) -> None:
    """No alert about the incident's key is sent until `until` (resolution and reopening
    included); the incident itself stays as it is."""
    Incident.objects.filter(pk=incident.pk).update(muted_until=until)


def _muted(*, key: str, now: datetime) -> bool:
    return Incident.objects.filter(key=key, muted_until__gt=now).exists()


def incident_delivery_state(*, incident: Incident) -> str:
    """Whether the incident's opening was sent anywhere, and if not, why (a person reading an
    incident must not take silence for delivery)."""
    opened = [d for d in incident.deliveries.all() if d.event == AlertDelivery.Event.OPENED]
    if opened:
        parts = [f"{d.target.name}: {d.get_status_display().lower()}" for d in opened]
        return "Opening alert: " + "; ".join(parts) + "."
    if incident.muted_until is not None and incident.muted_until > incident.opened_at:
        return f"Never sent: muted until {incident.muted_until:%Y-%m-%d %H:%M} UTC."
    first = AlertTarget.objects.order_by("created_at").first()
    if first is None:
        return (
            "Never sent: no alert target exists. Add one under Alert targets; later incidents are sent to it."
        )
    if first.created_at > incident.opened_at:
        return (
            f"Never sent: no alert target existed when it opened (the first, '{first.name}', was "
            f"added at {first.created_at:%Y-%m-%d %H:%M} UTC; its resolution will be sent)."
        )
    return "Never sent: no alert target was enabled when it opened."


def _deliveries_create(*, incident: Incident, event: str, now: datetime) -> list[AlertDelivery]:
    send = _deliver_send
    if send is None:
        raise RuntimeError("alert deliveries are not bound: WatchAppConfig.ready() binds them")
    if _muted(key=incident.key, now=now):
        logger.info("incident %s muted: no alert sent", incident.key, extra={"incident": incident.key})
        return []
    created = []
    hour_ago = now - timedelta(hours=1)
    for target in AlertTarget.objects.filter(enabled=True):
        used = AlertDelivery.objects.filter(
            target=target,
            created_at__gt=hour_ago,
            status__in=(
                AlertDelivery.Status.PENDING,
                AlertDelivery.Status.SENDING,
                AlertDelivery.Status.SENT,
                AlertDelivery.Status.FAILED,
            ),
        ).count()
        limited = used >= target.max_per_hour
        delivery = AlertDelivery.objects.create(
            target=target,
            incident=incident,
            event=event,
            created_at=now,
            status=AlertDelivery.Status.RATE_LIMITED if limited else AlertDelivery.Status.PENDING,
            next_attempt_at=None if limited else now,
        )
        created.append(delivery)
        if not limited:
            # robust: a broker that is down must not undo the incident; the sweep sends it later.
            transaction.on_commit(functools.partial(send, delivery.pk, 1), robust=True)
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


def delivery_send(*, delivery_id: int, attempt: int | None = None) -> str:
    """Make attempt number `attempt` (default: the next one) of a pending delivery.

    The row is claimed before the call (status `sending`, the attempt counted, the deadline by
    which it must end), so a task killed mid-call leaves the truth behind and the sweep
    (`deliveries_sweep`) settles it. The outcome is then recorded: `sent`, `failed` with the
    error, or `pending` with the error and the time the retry is due, and DeliveryRetry is
    raised for the task to send it. A second run of the same attempt, or a run for a delivery
    that is no longer pending, does nothing."""
    now = timezone.now()
    pending = AlertDelivery.objects.filter(pk=delivery_id, status=AlertDelivery.Status.PENDING)
    if attempt is not None:
        pending = pending.filter(attempts=attempt - 1)
    delivery = pending.select_related("target", "incident").first()
    if delivery is None:
        return "skipped"
    target = delivery.target
    attempt = delivery.attempts + 1
    claimed = pending.filter(attempts=attempt - 1).update(
        status=AlertDelivery.Status.SENDING,
        attempts=attempt,
        attempt_deadline_at=now + timedelta(seconds=target.timeout_s + ATTEMPT_GRACE_S),
        next_attempt_at=None,
    )
    if not claimed:
        return "skipped"  # another run took this attempt a moment ago
    delivery.attempts = attempt
    body, headers = delivery_request(delivery)
    try:
        answer = http_request(
            target.url,
            allow_private=target.allow_private,
            deadline_s=target.timeout_s,
            body=body,
            headers=headers,
        )
    except SendFailed as exc:
        final = not exc.transient or attempt >= target.max_attempts
        countdown = 0.0 if final else backoff_s(attempt)
        _attempt_end(
            delivery,
            attempt=attempt,
            status=AlertDelivery.Status.FAILED if final else AlertDelivery.Status.PENDING,
            response_status=exc.status,
            error=exc.message,
            next_attempt_at=None if final else timezone.now() + timedelta(seconds=countdown),
        )
        logger.warning(
            "alert to %s failed (attempt %d%s): %s",
            target.name,
            attempt,
            ", final" if final else f", retry in {countdown:.1f} s",
            exc.message,
            extra={"target": target.name},
        )
        if final:
            return "failed"
        raise DeliveryRetry(exc.message, countdown=countdown, attempt=attempt + 1) from None
    _attempt_end(delivery, attempt=attempt, status=AlertDelivery.Status.SENT, response_status=answer.status)
    logger.info("alert sent to %s (%s)", target.name, safe_host(target.url), extra={"target": target.name})
    return "sent"


def _attempt_end(
    delivery: AlertDelivery,
    *,
    attempt: int,
    status: str,
    response_status: int | None,
    error: str = "",
    next_attempt_at: datetime | None = None,
) -> None:
    """Record how attempt `attempt` ended, unless the sweep already judged it interrupted."""
    AlertDelivery.objects.filter(
        pk=delivery.pk, status=AlertDelivery.Status.SENDING, attempts=attempt
    ).update(
        status=status,
        response_status=response_status,
        last_error=error[:2000],
        attempt_deadline_at=None,
        next_attempt_at=next_attempt_at,
        sent_at=timezone.now() if status == AlertDelivery.Status.SENT else None,
    )


def deliveries_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Settle what a lost or killed task left: an attempt still `sending` past its deadline is
    recorded as interrupted (then retried, or failed when it was the last), and a pending
    delivery whose attempt is overdue by ALERT_DELIVERY_STALE_S is sent again. Returns counts."""
    send = _deliver_send
    if send is None:
        raise RuntimeError("alert deliveries are not bound: WatchAppConfig.ready() binds them")
    now = now or timezone.now()
    interrupted = resent = 0
    stuck = AlertDelivery.objects.filter(status=AlertDelivery.Status.SENDING, attempt_deadline_at__lt=now)
    for delivery in stuck.select_related("target"):
        final = delivery.attempts >= delivery.target.max_attempts
        settled = AlertDelivery.objects.filter(
            pk=delivery.pk, status=AlertDelivery.Status.SENDING, attempts=delivery.attempts
        ).update(
            status=AlertDelivery.Status.FAILED if final else AlertDelivery.Status.PENDING,
            last_error=f"attempt {delivery.attempts} was interrupted: no outcome by its deadline "
            "(the task was killed or lost)",
            attempt_deadline_at=None,
            next_attempt_at=None if final else now,
        )
        interrupted += settled
        if settled and not final:
            send(delivery.pk, delivery.attempts + 1)
            resent += 1
    stale = now - timedelta(seconds=float(settings.ALERT_DELIVERY_STALE_S))
    overdue = AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING).filter(
        Q(next_attempt_at__lt=stale) | Q(next_attempt_at__isnull=True, created_at__lt=stale)
    )
    for pk, attempts in overdue.values_list("pk", "attempts"):
        send(pk, attempts + 1)
        resent += 1
    if interrupted or resent:
        logger.warning("alert deliveries swept: %d interrupted, %d re-sent", interrupted, resent)
    return {"interrupted": interrupted, "resent": resent}


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
