"""The dispatch tasks' retries, run eagerly in this process against the emulator (a retry runs
at once, its countdown skipped): only named transient errors retry, bounded and spaced by the
DISPATCH_* settings as they are when the task runs."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from django.utils import timezone

from rooms_app import services, tasks
from rooms_app.models import Dispatch, Room
from tests.factories import AgentFactory

from .conftest import create_dispatch_calls

pytestmark = pytest.mark.django_db


def _room(name: str = "support-1") -> Room:
    return services.room_observe(name=name, sid="RM_test", started_at=timezone.now())


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


def _faults_off_after(lk, caplog: pytest.LogCaptureFixture, task_name: str, retries: int) -> threading.Thread:
    """LiveKit comes back once the task has retried `retries` times (it runs eagerly, in this
    thread's stead, so another thread ends the outage)."""

    def back() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_retries_logged(caplog, task_name)) < retries:
            time.sleep(0.01)
        lk.control.faults()

    thread = threading.Thread(target=back, daemon=True)
    thread.start()
    return thread


def test_dispatch_request_waits_for_livekit_past_the_retry_bound_and_never_fails_the_row(
    lk, settings, caplog
):
    settings.DISPATCH_MAX_RETRIES = 2
    settings.DISPATCH_RETRY_BACKOFF_S = 0.01
    settings.DISPATCH_RETRY_BACKOFF_MAX_S = 0.05
    lk.control.add_worker("support-agent")
    dispatch = _pending(_room())
    lk.control.faults(error_rate=1, error_status=503)
    with caplog.at_level(logging.WARNING, logger="rooms_app.tasks"):
        back = _faults_off_after(lk, caplog, "rooms.dispatch_request", 6)
        result = tasks.dispatch_request.apply(args=(dispatch.pk,))
        back.join(5)
    assert result.get() in ("created", "adopted")
    assert len(_retries_logged(caplog, "rooms.dispatch_request")) >= 6  # three times the bound
    dispatch.refresh_from_db()
    assert dispatch.status == Dispatch.Status.REQUESTED and dispatch.last_error == ""
    assert dispatch.livekit_waiting_since is None  # no longer waiting
    details = [e.detail for e in dispatch.events.order_by("id")]
    waits = [d for d in details if d.startswith("LiveKit unavailable")]
    assert waits and all("waiting for it" in d for d in waits)
    assert len(create_dispatch_calls(lk, "support-1")) == 1


def test_dispatch_deadline_retries_livekit_unavailable_past_the_bound_then_judges(lk, settings, caplog):
    settings.DISPATCH_MAX_RETRIES = 2
    settings.DISPATCH_RETRY_BACKOFF_S = 0.01
    settings.DISPATCH_RETRY_BACKOFF_MAX_S = 0.05
    lk.control.add_worker("support-agent")
    dispatch = _pending(_room())
    assert services.dispatch_request(dispatch_id=dispatch.pk) == "created"
    Dispatch.objects.filter(pk=dispatch.pk).update(deadline_at=timezone.now())
    lk.control.faults(error_rate=1, error_status=503)
    with caplog.at_level(logging.WARNING, logger="rooms_app.tasks"):
        back = _faults_off_after(lk, caplog, "rooms.dispatch_deadline", 5)
        result = tasks.dispatch_deadline.apply(args=(dispatch.pk,))
        back.join(5)
    assert len(_retries_logged(caplog, "rooms.dispatch_deadline")) >= 5
    # LiveKit back: the same task run finds the agent there.
    assert result.get() == Dispatch.Status.AGENT_JOINED


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
