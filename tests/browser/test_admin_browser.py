"""The admin in a real browser: what a person sees after logging in, creating a rule, asking
explain, reading a dispatch's timeline, the dashboard's charts and the doctor's verdict.

Each test saves screenshots under test-artifacts/."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from agents_app.models import Agent
from rooms_app.models import Dispatch, DispatchEvent, Room

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_log_in_create_a_rule_and_explain_a_sample_room(admin_page, shot):
    page = admin_page
    Agent.objects.create(agent_name="support-agent", display_name="Support")

    page.get_by_role("link", name="Dispatch rules").first.click()
    page.get_by_role("link", name="Add dispatch rule").click()
    page.fill("#id_name", "support rooms")
    page.select_option("#id_room_match_kind", "glob")
    page.fill("#id_room_match_value", "support-*")
    page.select_option("#id_agent", label="support-agent")
    page.select_option("#id_delivery", "explicit")
    page.get_by_role("button", name="Save", exact=True).click()

    message = page.locator("ul.messagelist li.success")
    assert "was added successfully" in message.inner_text()
    assert page.locator("#result_list").get_by_role("link", name="support rooms").is_visible()
    shot(page, "rule-created")

    page.get_by_role("link", name="Explain / test rules").click()
    page.fill("#id_sample_room", "support-42")
    page.fill("#id_sample_identity", "ann")
    page.click("#explain-submit")

    verdict = page.locator("#explain-verdict")
    assert verdict.is_visible()
    assert " ".join(verdict.inner_text().split()) == (
        "Room support-42 gets: support-agent (rule “support rooms”, explicit)."
    )
    assert page.locator("#explain-rules tr.outcome-applied").inner_text().startswith("support rooms")
    shot(page, "explain-verdict")


def test_open_a_dispatch_timeline(admin_page, shot):
    page = admin_page
    start = timezone.now() - timedelta(seconds=30)
    room = Room.objects.create(name="support-7", status="active", started_at=start)
    dispatch = Dispatch.objects.create(
        room=room,
        agent_name="support-agent",
        source="rule",
        rule_name="support rooms",
        status="agent_joined",
        livekit_dispatch_id="AD_timeline1",
        participant_identity="agent-AJ_timeline1",
    )
    steps = [
        ("", "pending", "Explicit rule (room started) (rule 'support rooms')"),
        ("pending", "requested", "CreateDispatch answered: AD_timeline1"),
        ("requested", "job_assigned", "job AJ_timeline1 taken by a worker"),
        ("job_assigned", "agent_joined", "agent-AJ_timeline1 joined the room"),
    ]
    for i, (before, after, detail) in enumerate(steps):
        DispatchEvent.objects.create(
            dispatch=dispatch,
            at=start + timedelta(seconds=i),
            previous_status=before,
            status=after,
            detail=detail,
        )

    page.goto("/admin/rooms_app/dispatch/")
    page.get_by_role("link", name=str(dispatch.pk), exact=True).click()

    events = page.locator(".inline-group").filter(has_text="events, in the order the portal recorded them")
    text = events.inner_text()
    assert "CreateDispatch answered: AD_timeline1" in text
    assert "agent-AJ_timeline1 joined the room" in text
    assert text.index("CreateDispatch answered") < text.index("joined the room")  # oldest first
    shot(page, "dispatch-timeline")


@pytest.fixture
def history():
    """support-agent: 3 of 4 joined in the last hour; one room still waiting; a failure."""
    now = timezone.now()

    def add(room_name: str, status: str, *, ago_s: float, join_s: float | None = None, **fields) -> Dispatch:
        room = Room.objects.create(name=room_name, status=fields.pop("room_status", "finished"))
        row = Dispatch.objects.create(
            room=room, agent_name="support-agent", source="rule", status=status, **fields
        )
        created = now - timedelta(seconds=ago_s)
        joined = created + timedelta(seconds=join_s) if join_s is not None else None
        Dispatch.objects.filter(pk=row.pk).update(created_at=created, requested_at=created, joined_at=joined)
        return row

    add("support-1", "agent_joined", ago_s=900, join_s=1.2)
    add("support-2", "agent_joined", ago_s=600, join_s=2.5)
    add("support-4", "agent_joined", ago_s=7200, join_s=3.0)
    add("support-5", "agent_joined", ago_s=300, join_s=0.8)
    add(
        "support-3",
        "no_worker",
        ago_s=400,
        ended_at=now,
        last_error="no worker registered as 'support-agent' took the job",
    )
    add("support-waiting", "requested", ago_s=75, room_status="active")


def test_the_dashboard_draws_charts_and_the_doctor_is_one_click_away(admin_page, history, shot):
    page = admin_page
    agent = Agent.objects.create(agent_name="support-agent")
    agent.rules.create(
        name="support rooms", room_match_kind="glob", room_match_value="support-*", delivery="explicit"
    )

    box = page.locator("#dispatch-health-box")
    assert box.is_visible() and "why is there no agent in a room?" in box.inner_text()
    shot(page, "admin-home")
    page.locator("#dashboard-link").click()

    assert page.get_by_role("heading", name="Dispatch health", exact=True).is_visible()
    for chart in ("#success-rate-chart svg", "#time-to-join-chart svg", "#hours-chart svg"):
        box = page.locator(chart).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 150, chart
    # The bars' value labels, as drawn: 3 of 4 joined in the last hour, 4 of 5 over the day.
    labels = page.locator("#success-rate-chart svg text").all_text_contents()
    assert "75%" in labels and "80%" in labels
    row = page.locator("#agent-stats tbody tr").filter(has_text="support-agent")
    assert "75% / 80%" in row.inner_text()
    waiting = page.locator("#rooms-missing").inner_text()
    assert "support-waiting" in waiting
    assert 75 <= int(re.search(r"(\d+) s", waiting).group(1)) < 90  # asked for 75 s before the page loaded
    shot(page, "dashboard")

    failure = page.locator("#last-failures tbody tr").filter(has_text="support-3")
    assert "no worker registered as 'support-agent' took the job" in failure.inner_text()
    failure.get_by_role("link", name="Doctor's verdict").click()

    page.wait_for_url("**/admin/dispatch-doctor/**")
    verdict = page.locator("#doctor-verdict")
    assert verdict.inner_text().startswith("Broken at link 5 (Job created: a worker took the dispatch)")
    assert (
        "no worker registered as 'support-agent' took the job" in page.locator("#doctor-cause").inner_text()
    )
    assert page.locator("#link-5 .dp-state").inner_text().strip() == "5. broken"
    assert page.locator("#doctor-fix").is_visible()
    shot(page, "doctor-from-dashboard")


def test_the_doctor_page_from_the_admin_home(admin_page, lk, shot):
    page = admin_page
    # Joining within 0 s: the verdict does not wait for a deadline to pass.
    agent = Agent.objects.create(agent_name="support-agent", join_deadline_s=0)
    agent.rules.create(
        name="support rooms", room_match_kind="glob", room_match_value="support-*", delivery="explicit"
    )
    lk.control.add_worker("suport-agent")  # a typo in the worker's name; another app uses it
    lk.control.create_rooms([{"name": "other-app-1", "agents": [{"agent_name": "suport-agent"}]}])
    # Ann is in the room and a dispatch of 'support-agent' is there; no worker takes it.
    lk.control.create_rooms(
        [
            {
                "name": "support-8",
                "agents": [{"agent_name": "support-agent"}],
                "participants": [{"identity": "ann"}],
            }
        ]
    )
    lk.control.wait_for(
        lambda state: any(p["kind"] == "AGENT" for p in state["rooms"][0]["participants"]), room="other-app-1"
    )

    page.get_by_role("link", name="Doctor").click()
    page.fill("#id_room", "support-8")
    page.click("#doctor-submit")

    assert page.locator("#doctor-verdict").inner_text().startswith("Broken at link 5")
    states = [s.strip() for s in page.locator(".dp-state").all_inner_texts()]
    assert states[:5] == ["1. ok", "2. ok", "3. ok", "4. ok", "5. broken"]
    cause = page.locator("#doctor-cause").inner_text()
    assert "no worker is registered as exactly 'support-agent'" in cause
    assert "'suport-agent' (room 'other-app-1')" in cause
    assert "WorkerOptions(agent_name='support-agent')" in page.locator("#doctor-fix").inner_text()
    shot(page, "doctor-page")
