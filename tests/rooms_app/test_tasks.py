"""The dispatch tasks' retries, run eagerly in this process against the emulator (a retry runs
at once, its countdown skipped): only named transient errors retry, bounded and spaced by the
DISPATCH_* settings as they are when the task runs."""

from __future__ import annotations

import logging

import pytest
from django.utils import timezone

from rooms_app import services, tasks
from rooms_app.livekit_client import LiveKitUnavailable
from rooms_app.models import Dispatch, Room
from tests.factories import AgentFactory

from .conftest import create_dispatch_calls

pytestmark = pytest.mark.django_db


def _room(name: str = "support-1") -> Room:
    return services.room_started(name=name, sid="RM_test", started_at=timezone.now())


def _pending(room: Room) -> Dispatch:
    dispatch, _ = services.dispatch_create(
        room=room, agent=AgentFactory(agent_name="support-agent"), source="api"
    )
    return dispatch


def _retries_logged(caplog: pytest.LogCaptureFixture, task_name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{task_name}: ")]


def test_backoff_is_exponential_with_full_jitter_and_read_from_the_settings_now(settings):
    settings.DISPATCH_RETRY_BACKOFF_S = 0.2
    settings.DISPATCH_RETRY_BACKOFF_MAX_S = 1
    for retries, step in ((0, 0.2), (1, 0.4), (2, 0.8), (3, 1.0), (9, 1.0)):
        waits = [tasks.backoff_s(retries) for _ in range(300)]
        assert all(0 <= wait <= step for wait in waits)
        assert min(waits) < step / 4 and max(waits) > step * 3 / 4  # the whole range, not half
    settings.DISPATCH_RETRY_BACKOFF_MAX_S = 0.05
    assert max(tasks.backoff_s(5) for _ in range(50)) <= 0.05


def test_dispatch_request_gives_up_on_the_row_after_the_configured_retries(lk, settings, caplog):
    settings.DISPATCH_MAX_RETRIES = 2
    lk.control.add_worker("support-agent")
    dispatch = _pending(_room())
    lk.control.faults(error_rate=1, error_status=503)
    with caplog.at_level(logging.WARNING, logger="rooms_app.tasks"):
        result = tasks.dispatch_request.apply(args=(dispatch.pk,))
    assert result.get() == "failed"
    dispatch.refresh_from_db()
    assert dispatch.status == Dispatch.Status.FAILED
    assert dispatch.last_error.startswith("LiveKit unavailable after 3 tries")
    details = [e.detail for e in dispatch.events.order_by("id")]
    assert [d.rpartition("; ")[2] for d in details[1:3]] == ["retry 1 scheduled", "retry 2 scheduled"]
    assert details[3].startswith("LiveKit unavailable after 3 tries") and len(details) == 4
    assert len(_retries_logged(caplog, "rooms.dispatch_request")) == 2


def test_dispatch_deadline_retries_livekit_unavailable_then_fails_the_task(lk, settings, caplog):
    settings.DISPATCH_MAX_RETRIES = 3
    lk.control.add_worker("support-agent")
    dispatch = _pending(_room())
    assert services.dispatch_request(dispatch_id=dispatch.pk) == "created"
    Dispatch.objects.filter(pk=dispatch.pk).update(deadline_at=timezone.now())
    lk.control.faults(error_rate=1, error_status=503)
    with caplog.at_level(logging.WARNING, logger="rooms_app.tasks"):
        result = tasks.dispatch_deadline.apply(args=(dispatch.pk,))
    assert result.state == "FAILURE" and isinstance(result.result, LiveKitUnavailable)
    assert len(_retries_logged(caplog, "rooms.dispatch_deadline")) == 3
    lk.control.faults()
    # LiveKit back: the next run (the reconcile pass's re-check) finds the agent there.
    assert tasks.dispatch_deadline.apply(args=(dispatch.pk,)).get() == Dispatch.Status.AGENT_JOINED


def test_a_lease_wait_is_not_bounded_by_the_retries(lk, settings, caplog):
    """DispatchInFlight is not a failure: it waits out the other run's lease even with no
    retries allowed for LiveKit being down."""
    settings.DISPATCH_MAX_RETRIES = 0
    lk.control.add_worker("support-agent")
    dispatch = _pending(_room())
    Dispatch.objects.filter(pk=dispatch.pk).update(
        request_tries=1, request_lease_until=timezone.now() + timezone.timedelta(seconds=0.05)
    )
    with caplog.at_level(logging.WARNING, logger="rooms_app.tasks"):
        result = tasks.dispatch_request.apply(args=(dispatch.pk,))
    assert result.get() == "created"
    assert _retries_logged(caplog, "rooms.dispatch_request")  # it did wait
    assert len(create_dispatch_calls(lk, "support-1")) == 1
