"""Alerts reach a real HTTP receiver on loopback: signed, once per incident, retried, limited."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.receiver import Reply
from watch_app import alerts, checks
from watch_app.models import AlertDelivery, AlertTarget, Condition, Incident

SECRET = "s3cret-for-tests-0123456789abcdefghijklmnop"


@pytest.fixture
def webhook(db, receiver) -> AlertTarget:
    return AlertTarget.objects.create(
        name="pager", kind="webhook", url=f"{receiver.url}/hook", allow_private=True, secret=SECRET
    )


def raise_(key: str = "dispatch_gave_up:support", **kw):
    return alerts.incident_raise(
        key=key, kind="dispatch_gave_up", subject="support", summary="it broke", **kw
    )


def verify(request, secret: str = SECRET) -> None:
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-dispatchportal-signature"], expected)


def test_one_signed_alert_per_incident_and_one_resolved(
    webhook, receiver, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        incident, opened = raise_()
        again, opened_again = raise_()  # the next check sees the same one event
    assert opened and not opened_again and again.pk == incident.pk and again.occurrences == 1
    assert len(receiver.requests) == 1
    first = receiver.requests[0]
    verify(first)
    body = first.json()
    assert body["event"] == "opened"
    assert body["incident"]["key"] == "dispatch_gave_up:support" and body["incident"]["summary"] == "it broke"
    assert first.headers["content-type"] == "application/json"

    with django_capture_on_commit_callbacks(execute=True):
        alerts.incident_resolve(key="dispatch_gave_up:support")
        assert alerts.incident_resolve(key="dispatch_gave_up:support") is None
    assert [r.json()["event"] for r in receiver.requests] == ["opened", "resolved"]
    verify(receiver.requests[1])
    assert list(AlertDelivery.objects.order_by("id").values_list("event", "status")) == [
        ("opened", "sent"),
        ("resolved", "sent"),
    ]
    # The same key later is a new incident, announced again.
    with django_capture_on_commit_callbacks(execute=True):
        _, reopened = raise_()
    assert reopened and len(receiver.requests) == 3


def test_a_tampered_body_fails_verification(
    webhook, receiver, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        raise_()
    request = receiver.requests[0]
    request.body = request.body.replace(b"it broke", b"all fine")
    with pytest.raises(AssertionError):
        verify(request)


def test_slack_target_gets_text_only(db, receiver, eager_tasks, django_capture_on_commit_callbacks):
    AlertTarget.objects.create(
        name="slack", kind="slack", url=f"{receiver.url}/services/T0/B0/x", allow_private=True
    )
    with django_capture_on_commit_callbacks(execute=True):
        raise_()
        alerts.incident_resolve(key="dispatch_gave_up:support")
    texts = [r.json() for r in receiver.requests]
    assert texts == [{"text": ":rotating_light: it broke"}, {"text": ":white_check_mark: Resolved: it broke"}]
    assert "x-dispatchportal-signature" not in receiver.requests[0].headers


def test_transient_failures_are_retried_until_delivered(
    webhook, receiver, eager_tasks, django_capture_on_commit_callbacks
):
    receiver.script = [Reply(503), Reply(429)]
    with django_capture_on_commit_callbacks(execute=True):
        raise_()
    assert [r.json()["event"] for r in receiver.requests] == ["opened"] * 3
    ids = {r.headers["x-dispatchportal-delivery"] for r in receiver.requests}
    assert len(ids) == 1  # one delivery, three attempts: the receiver can deduplicate
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("sent", 3, 200)


def test_attempts_are_bounded(webhook, receiver, eager_tasks, django_capture_on_commit_callbacks):
    webhook.max_attempts = 2
    webhook.save()
    receiver.default = Reply(500)
    with django_capture_on_commit_callbacks(execute=True):
        raise_()
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 2, 500)
    assert len(receiver.requests) == 2


def test_a_4xx_is_final(webhook, receiver, eager_tasks, django_capture_on_commit_callbacks):
    receiver.default = Reply(400)
    with django_capture_on_commit_callbacks(execute=True):
        raise_()
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert delivery.last_error == f"http://127.0.0.1:{receiver.server.server_address[1]} answered 400"


def test_redirects_are_never_followed(
    webhook, receiver, other_receiver, eager_tasks, django_capture_on_commit_callbacks
):
    receiver.default = Reply(302, headers={"Location": f"{other_receiver.url}/stolen"})
    with django_capture_on_commit_callbacks(execute=True):
        raise_()
    assert other_receiver.requests == []
    delivery = AlertDelivery.objects.get()
    assert delivery.status == "failed" and "redirect not followed 302" in delivery.last_error


def test_rate_limit_per_target(webhook, receiver, eager_tasks, django_capture_on_commit_callbacks):
    webhook.max_per_hour = 2
    webhook.save()
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(3):
            raise_(key=f"dispatch_gave_up:agent-{n}")
    assert len(receiver.requests) == 2
    assert list(AlertDelivery.objects.order_by("id").values_list("status", flat=True)) == [
        "sent",
        "sent",
        "rate_limited",
    ]


def test_private_address_needs_the_admins_permission(db, receiver, settings):
    with pytest.raises(ValueError, match="is a loopback address"):
        alerts.target_save(target=AlertTarget(name="x", kind="webhook", url=f"{receiver.url}/hook"))
    settings.PRODUCTION = True
    with pytest.raises(ValueError, match="must be https"):
        alerts.target_save(target=AlertTarget(name="x", kind="webhook", url="http://hooks.example.com/x"))
    shown = alerts.target_save(
        target=AlertTarget(name="x", kind="webhook", url=f"{receiver.url}/h", allow_private=True)
    )
    assert shown.startswith("dpw_") and AlertTarget.objects.get().secret == shown


def test_a_target_turned_private_after_saving_is_refused_at_send(
    db, receiver, eager_tasks, django_capture_on_commit_callbacks
):
    AlertTarget.objects.create(name="p", kind="webhook", url=f"{receiver.url}/hook", secret=SECRET)
    with django_capture_on_commit_callbacks(execute=True):
        raise_()
    assert receiver.requests == []
    delivery = AlertDelivery.objects.get()
    assert delivery.status == "failed" and "is a loopback address: refused unless" in delivery.last_error


def test_livekit_down_for_long_enough(
    db, receiver, webhook, lk, settings, eager_tasks, django_capture_on_commit_callbacks
):
    settings.ALERT_LIVEKIT_DOWN_AFTER_S = 30
    lk.control.faults(down=True)
    t0 = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        checks.livekit_check(now=t0)
        assert not Incident.objects.exists()  # down, but not for long yet
        checks.livekit_check(now=t0 + timedelta(seconds=31))
    incident = Incident.objects.get()
    assert incident.kind == "livekit_unreachable" and incident.status == "open"
    assert receiver.requests[0].json()["incident"]["summary"].startswith("LiveKit unreachable for 31 s")
    lk.control.faults()
    with django_capture_on_commit_callbacks(execute=True):
        checks.livekit_check(now=t0 + timedelta(seconds=40))
    assert Incident.objects.get().status == "resolved"
    assert [r.json()["event"] for r in receiver.requests] == ["opened", "resolved"]


def test_livekit_refusing_credentials(db, lk, settings):
    settings.ALERT_LIVEKIT_DOWN_AFTER_S = 0
    settings.LIVEKIT_API_SECRET = "not-the-secret-" * 3
    checks.livekit_check()
    incident = Incident.objects.get()
    assert incident.kind == "livekit_credentials" and "refuses the credentials" in incident.summary
    assert "not-the-secret" not in incident.summary


def test_reconcile_failing_in_a_row(db, settings, eager_tasks):
    from rooms_app.tasks import reconcile_run

    settings.LIVEKIT_URL = "http://127.0.0.1:9"  # nothing listens: every pass fails
    settings.LIVEKIT_TIMEOUT_S = 0.5
    settings.ALERT_RECONCILE_FAILURES = 2
    reconcile_run.apply()
    checks.reconcile_check()
    assert Condition.objects.get(key="reconcile").consecutive_failures == 1 and not Incident.objects.exists()
    reconcile_run.apply()
    checks.reconcile_check()
    incident = Incident.objects.get()
    assert incident.kind == "reconcile_failing" and "failed 2 times in a row" in incident.summary
