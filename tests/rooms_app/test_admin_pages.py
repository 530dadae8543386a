"""The dispatch and room pages as read: times to the millisecond, no example help texts under
real values, the doctor one click away, the dispatch's timeline from the API's data."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from operator_views.doctor.views import doctor_url
from operator_views.helpers import without_examples
from rooms_app.models import Dispatch, Room, WebhookEvent
from rooms_app.selectors import dispatch_timeline

pytestmark = pytest.mark.django_db
EXAMPLE_UNDER_A_VALUE = re.compile(r'<div class="help"[^>]*>\s*<div>[^<]*e\.g\.')


@pytest.fixture
def no_worker(lk):
    room = Room.objects.create(name="support-3", status="active")
    row = Dispatch.objects.create(
        room=room,
        agent_name="support-agent",
        source="token",
        delivery="token",
        participant_identity_trigger="ann",
        status="no_worker",
        last_error="no worker registered as 'support-agent' took the job within 10 s",
    )
    start = timezone.now().replace(microsecond=123000)
    Dispatch.objects.filter(pk=row.pk).update(created_at=start, ended_at=start + timedelta(seconds=10.5))
    row.refresh_from_db()
    return row


def test_the_timeline_of_a_token_dispatch_that_no_worker_took(no_worker):
    steps = dispatch_timeline(dispatch=no_worker)

    assert [(s.key, s.state) for s in steps] == [
        ("trigger", "done"),
        ("requested", "skipped"),
        ("job_assigned", "skipped"),
        ("verdict", "failed"),
    ]
    assert (steps[0].label, steps[0].detail) == ("Token minted", "for ann")
    assert steps[3].label == "No worker took the job" and steps[3].since_previous_s == 10.5


def test_the_dispatch_page_shows_milliseconds_the_timeline_and_the_doctor(admin_client, no_worker):
    page = admin_client.get(f"/admin/rooms_app/dispatch/{no_worker.pk}/change/").content.decode()

    assert f"{no_worker.created_at:%Y-%m-%d %H:%M:%S}.123" in page
    assert "+10.500 s" in page and 'data-step="verdict"' in page
    assert doctor_url(room_name="support-3", agent_name="support-agent").replace("&", "&amp;") in page
    assert not EXAMPLE_UNDER_A_VALUE.search(page)


def test_the_room_page_shows_its_dispatches_timelines_and_the_doctor(admin_client, no_worker):
    page = admin_client.get(f"/admin/rooms_app/room/{no_worker.room_id}/change/").content.decode()

    assert f'id="timeline-{no_worker.pk}"' in page
    assert doctor_url(room_name="support-3") in page
    assert not EXAMPLE_UNDER_A_VALUE.search(page)


def test_a_webhook_event_page_shows_no_examples(admin_client):
    event = WebhookEvent.objects.create(event_id="EV_real1", event="room_started", room_name="support-3")

    page = admin_client.get(f"/admin/rooms_app/webhookevent/{event.pk}/change/").content.decode()

    assert "EV_real1" in page and not EXAMPLE_UNDER_A_VALUE.search(page)


def test_examples_are_taken_out_of_help_texts():
    assert without_examples("e.g. 'AD_x1y2z3'.") == ""
    assert without_examples("The LiveKit room name, e.g. 'interview-42'.") == "The LiveKit room name."
    assert without_examples('What the job gets, e.g. {"language": "en"}.') == "What the job gets."


def test_the_api_returns_the_same_timeline(admin_client, no_worker):
    body = admin_client.get(f"/api/v1/dispatches/{no_worker.pk}").json()

    assert [(s["key"], s["state"], s["since_previous_s"]) for s in body["timeline"]] == [
        ("trigger", "done", None),
        ("requested", "skipped", None),
        ("job_assigned", "skipped", None),
        ("verdict", "failed", 10.5),
    ]
    assert body["timeline"][3]["detail"] == no_worker.last_error
