"""Issue 18's pages at 1366 x 768 and 1920 x 1080, as a person reads them: the dashboard's first
screen answers "is dispatch healthy right now?", the rooms list says which expected agent is
missing, pages never contradict the record they describe, incidents can be acted on, and the
admin home puts the ledger first.

What must be on the first screen is checked by where it is drawn (inside the window without
scrolling), not only by being in the page. Screenshots go to test-artifacts/glance-*.png."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from agents_app.models import Agent
from dispatchportal.reserved import CANARY_ROOM_PREFIX
from rooms_app.models import Dispatch, DispatchEvent, Room, WebhookEvent
from watch_app.models import AlertTarget, CanaryRun, CanarySchedule, Incident, WorkerEndpoint

from .conftest import SCREENS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
both_screens = pytest.mark.parametrize("screen", list(SCREENS))

NO_WORKER = "no worker registered as 'support-agent' took the job within 10 s"


def _on_first_screen(page, locator, screen: str) -> None:
    """Drawn inside the window as the page opens: no scrolling needed to read it."""
    page.evaluate("window.scrollTo(0, 0)")
    width, height = SCREENS[screen]
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not drawn"
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, (
        f"{locator} at y={box['y']:.0f}..{box['y'] + box['height']:.0f}, window {height} px high"
    )
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, (
        f"{locator} at x={box['x']:.0f}, window {width} px wide"
    )


def _ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.fixture
def troubled():
    """A portal where two live rooms lack their expected agent (one gave up, one past its
    deadline), one live room has its agent (token path), an incident opened before any alert
    target existed, a worker is offline, a canary fails, and canary rooms sent webhooks."""
    now = timezone.now()
    support = Agent.objects.create(agent_name="support-agent", display_name="Support")
    Agent.objects.create(agent_name="retired-agent", enabled=False)  # never seen, disabled
    Agent.objects.create(agent_name="sales-agent")  # never seen, enabled
    support.rules.create(name="support rooms", room_match_kind="glob", room_match_value="support-*")
    # Busy history, so the dashboard has three charts to draw below the first screen.
    for i in range(8):
        room = Room.objects.create(name=f"support-old-{i}", status="finished")
        row = Dispatch.objects.create(
            room=room, agent=support, agent_name="support-agent", source="rule", status="agent_joined"
        )
        Dispatch.objects.filter(pk=row.pk).update(
            created_at=_ago(900 + i * 60),
            requested_at=_ago(900 + i * 60),
            joined_at=_ago(899 + i * 60),
        )

    gave_up_room = Room.objects.create(name="support-live-gave-up", status="active", started_at=_ago(120))
    gave_up = Dispatch.objects.create(
        room=gave_up_room,
        agent=support,
        agent_name="support-agent",
        source="rule",
        status="no_worker",
        requested_at=_ago(100),
        ended_at=_ago(90),
        last_error=NO_WORKER,
    )
    late_room = Room.objects.create(name="support-live-late", status="active", started_at=_ago(60))
    Dispatch.objects.create(
        room=late_room,
        agent=support,
        agent_name="support-agent",
        source="rule",
        status="requested",
        requested_at=_ago(50),
        deadline_at=_ago(20),
    )
    ok_room = Room.objects.create(
        name="support-live-ok", status="active", started_at=_ago(30), existed_before_token=False
    )
    joined = Dispatch.objects.create(
        room=ok_room,
        agent=support,
        agent_name="support-agent",
        source="token",
        delivery="token",
        status="agent_joined",
        participant_identity_trigger="alice",
        participant_identity="agent-AJ_ok",
        livekit_dispatch_id="AD_ok",
        livekit_job_id="AJ_ok",
    )
    # Recorded as the token path did before: the join time is LiveKit's, the request and the
    # job were stamped when the portal saw them, after the join.
    Dispatch.objects.filter(pk=joined.pk).update(
        created_at=_ago(31), joined_at=_ago(29.000), requested_at=_ago(28.676), job_assigned_at=_ago(28.670)
    )
    for previous, status, at in (
        ("", "pending", 31),
        ("pending", "job_assigned", 28.67),
        ("job_assigned", "agent_joined", 28.66),
    ):
        DispatchEvent.objects.create(
            dispatch=joined, at=_ago(at), previous_status=previous, status=status, detail=""
        )

    Incident.objects.create(
        key="dispatch_gave_up:support-agent",
        kind="dispatch_gave_up",
        subject="support-agent",
        summary=f"Dispatch of agent 'support-agent' gave up in room 'support-live-gave-up': {NO_WORKER}",
        detail={"room": "support-live-gave-up", "dispatch_id": gave_up.pk, "status": "no_worker"},
        opened_at=_ago(85),
        last_seen_at=now,
        occurrences=1,
    )
    AlertTarget.objects.create(name="on-call pager", url="https://hooks.example.com/x", secret="s" * 40)
    WorkerEndpoint.objects.create(
        agent=support,
        url="http://10.0.0.7:8081",
        allow_private=True,
        polled_at=now,
        healthy=False,
        last_error="cannot reach 10.0.0.7:8081: connection refused",
    )
    CanarySchedule.objects.create(agent=support, enabled=True)
    for i in range(2):
        CanaryRun.objects.create(
            agent_name="support-agent",
            room_name=f"{CANARY_ROOM_PREFIX}support-agent-{i}",
            status="failed",
            error="no worker registered as 'support-agent' took the job within 20 s",
            started_at=_ago(30 + i * 300),
            finished_at=_ago(10 + i * 300),
        )
        for event in ("room_started", "participant_joined", "participant_left", "room_finished"):
            WebhookEvent.objects.create(
                event_id=f"EV_c{i}{event}", event=event, room_name=f"{CANARY_ROOM_PREFIX}support-agent-{i}"
            )
    WebhookEvent.objects.create(event_id="EV_real", event="room_started", room_name="support-live-ok")
    return {"gave_up": gave_up, "joined": joined, "ok_room": ok_room}


@both_screens
def test_the_dashboard_first_screen_says_whether_dispatch_is_healthy(admin_page, troubled, screen, shot):
    page = admin_page
    page.goto("/admin/dispatch-dashboard/")
    shot(page, f"glance-{screen}-dashboard")

    line = page.locator("#health-line")
    _on_first_screen(page, line, screen)
    assert line.get_attribute("data-level") == "red"
    text = line.inner_text()
    assert text.startswith("Red") and "2 live room(s) missing an expected agent" in text, text
    assert "1 open incident(s)" in text and "failing canary" in text and "workers offline" in text, text

    items = page.locator("#attention li.dp-attention-item")
    texts = items.all_inner_texts()
    rooms = [t for t in texts if "support-live-gave-up" in t or "support-live-late" in t]
    assert len(rooms) >= 3, texts  # both rooms, and the incident naming one of them
    assert not any("support-live-ok" in t for t in texts), texts
    for kind in ("room", "incident", "worker", "canary"):
        item = page.locator(f'#attention li[data-kind="{kind}"]').first
        _on_first_screen(page, item, screen)
        _on_first_screen(page, item.locator("a.attention-doctor-link"), screen)
    # What needs attention comes before the charts, and the charts are below it.
    charts = page.locator("#success-rate-chart svg").bounding_box()
    attention = page.locator("#attention").bounding_box()
    assert charts["y"] >= attention["y"] + attention["height"]
    # The table further down agrees with the line: both rooms, never "no room is waiting".
    missing = page.locator("#rooms-missing").inner_text()
    assert "support-live-gave-up" in missing and "support-live-late" in missing
    assert page.locator("text=No room is waiting for an agent").count() == 0
    # The canaries' time to join is labelled as measured differently from the dashboard's.
    assert "createdispatch sent -> agent active" in page.locator("#watch-block").inner_text().lower()
    assert "Time to join: from LiveKit having the request" in page.locator("#join-measure").inner_text()

    page.locator('#attention li[data-kind="room"]').filter(has_text="support-live-gave-up").locator(
        "a.attention-doctor-link"
    ).click()
    page.wait_for_url("**/admin/dispatch-doctor/**")
    assert page.locator("#id_room").input_value() == "support-live-gave-up"


@both_screens
def test_a_healthy_portal_says_so_in_green(admin_page, lk, screen, shot):
    page = admin_page
    support = Agent.objects.create(agent_name="support-agent")
    room = Room.objects.create(name="support-1", status="active", started_at=_ago(10))
    Dispatch.objects.create(
        room=room,
        agent=support,
        agent_name="support-agent",
        source="rule",
        status="agent_joined",
        joined_at=_ago(9),
    )
    page.goto("/admin/dispatch-dashboard/")
    line = page.locator("#health-line")
    _on_first_screen(page, line, screen)
    assert line.get_attribute("data-level") == "green"
    assert "all 1 live room(s) have their expected agents" in line.inner_text()
    assert page.locator("#attention").count() == 0
    shot(page, f"glance-{screen}-dashboard-green")


@both_screens
def test_the_rooms_list_shows_expected_and_present_agents(admin_page, troubled, screen, shot):
    page = admin_page
    page.goto("/admin/rooms_app/room/?status__exact=active")
    shot(page, f"glance-{screen}-rooms")

    def agents_of(name: str) -> str:
        return page.locator("#result_list tr").filter(has_text=name).locator("td.field-agents").inner_text()

    assert agents_of("support-live-gave-up") == "support-agent: missing (No worker took the job)"
    assert agents_of("support-live-late") == "support-agent: missing (Requested from LiveKit)"
    assert agents_of("support-live-ok") == "support-agent: present"
    # No green or red icon stands for a room's status: words do.
    assert page.locator("#result_list img").count() == 0
    # The doctor column is whole inside the window and its links are not clipped.
    width = SCREENS[screen][0]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    results = page.locator("#changelist .results")
    assert results.evaluate("r => r.scrollWidth <= r.clientWidth"), "the list scrolls sideways"
    visible_right = min(width, results.bounding_box()["x"] + results.bounding_box()["width"])
    for cell in page.locator("#result_list td.field-doctor_column").all():
        box = cell.bounding_box()
        assert box["x"] + box["width"] <= visible_right, (box, visible_right)
        assert cell.inner_text() == "diagnose"
    header = page.locator("#result_list th.column-doctor_column").bounding_box()
    assert header["x"] + header["width"] <= visible_right


@both_screens
def test_the_room_page_never_contradicts_its_status(admin_page, troubled, screen, shot):
    page = admin_page
    page.goto(f"/admin/rooms_app/room/{troubled['ok_room'].pk}/change/")
    shot(page, f"glance-{screen}-room")

    status = page.locator(".field-status_now")
    assert (
        status.locator(".readonly").inner_text()
        == "Live: LiveKit reports the room: people and agents can be in it"
    )
    assert "pending:" not in status.inner_text()
    assert "a token was minted but LiveKit has not reported" not in page.locator("#content-main").inner_text()
    existed = page.locator(".field-existed_before .readonly")
    assert existed.inner_text().startswith("no: the first token's join created the room")
    assert page.locator("fieldset img[src*='icon-no']").count() == 0
    assert page.locator(".field-agents .readonly").inner_text() == "support-agent: present"


@both_screens
def test_the_dispatch_page_orders_steps_as_they_happened(admin_page, troubled, screen, shot):
    page = admin_page
    joined = troubled["joined"]
    page.goto(f"/admin/rooms_app/dispatch/{joined.pk}/change/")
    shot(page, f"glance-{screen}-dispatch")

    steps = page.locator(f"#timeline-{joined.pk} li.dp-step")
    keys = [s.get_attribute("data-step") for s in steps.all()]
    times = [s.locator(".dp-step-at").inner_text() for s in steps.all()]
    gaps = [s.locator(".dp-step-gap").inner_text().strip() for s in steps.all()]
    assert keys == ["trigger", "requested", "job_assigned", "joined"], keys
    assert times == sorted(times), times
    assert not any(g.startswith("+-") for g in gaps), gaps
    # The title names the attempt in words; "#" is the id, as everywhere else.
    assert (
        "attempt 1" in page.locator("#content h2, #content h1").first.inner_text()
        or "attempt 1" in page.title()
    )
    assert "#1" not in page.title()
    # The events table: labels in both columns, no "- -> pending" caption above the rows.
    events = page.locator("#events-group")
    text = events.inner_text()
    assert "->" not in text and "- ->" not in text
    first = events.locator("tbody tr").first
    assert first.locator("td.field-from_status").inner_text() == "(new dispatch)"
    assert first.locator("td.field-to_status").inner_text() == "Pending"
    assert events.locator("tbody tr").nth(1).locator("td.field-from_status").inner_text() == "Pending"
    assert events.locator("td.original p").count() == 0
    assert events.locator("a.inline-deletelink, td.delete input").count() == 0  # no delete marks


@both_screens
def test_an_incident_reads_as_sentences_with_links_and_can_be_acted_on(admin_page, troubled, screen, shot):
    page = admin_page
    incident = Incident.objects.get()
    page.goto(f"/admin/watch_app/incident/{incident.pk}/change/")
    shot(page, f"glance-{screen}-incident")

    main = page.locator("#content-main").inner_text()
    assert '{"room"' not in main and "{'room'" not in main  # no raw JSON or dict text
    expect(page.locator("#incident-room-link")).to_have_text("support-live-gave-up")
    expect(page.locator("#incident-dispatch-link")).to_have_text(f"#{troubled['gave_up'].pk}")
    sent = page.locator(".field-sent .readonly").inner_text()
    assert sent.startswith("Never sent: no alert target existed when it opened"), sent
    assert "'on-call pager'" in sent
    page.locator("#incident-doctor-link").click()
    page.wait_for_url("**/admin/dispatch-doctor/**")
    assert page.locator("#id_room").input_value() == "support-live-gave-up"

    page.goto("/admin/watch_app/incident/")
    options = page.locator("select[name=action] option").all_inner_texts()
    assert any(o.startswith("Resolve") for o in options) and any(o.startswith("Acknowledge") for o in options)
    assert any(o.startswith("Mute") for o in options)
    page.locator("#result_list input.action-select").first.check()
    page.locator("select[name=action]").select_option(
        label="Acknowledge selected incidents (someone is on it)"
    )
    page.get_by_role("button", name="Go").click()
    expect(page.locator("ul.messagelist")).to_contain_text("1 incident(s) acknowledged by admin")
    assert "acknowledged by admin" in page.locator("#result_list td.field-handled").inner_text()
    page.locator("#result_list input.action-select").first.check()
    page.locator("select[name=action]").select_option(label="Resolve selected incidents (the cause is fixed)")
    page.get_by_role("button", name="Go").click()
    expect(page.locator("ul.messagelist")).to_contain_text("1 incident(s) resolved")
    assert page.locator("#result_list td.field-status").inner_text() == "Resolved"
    shot(page, f"glance-{screen}-incidents")


@both_screens
def test_the_admin_home_puts_rooms_and_dispatches_first(admin_page, screen, shot):
    page = admin_page
    page.goto("/admin/")
    shot(page, f"glance-{screen}-home")
    rooms = page.locator("#content-main a", has_text="Rooms").first
    dispatches = page.locator("#content-main a", has_text="Dispatches").first
    _on_first_screen(page, rooms, screen)
    _on_first_screen(page, dispatches, screen)
    for later in ("Periodic tasks", "Users"):
        box = page.locator("#content-main caption, #content-main th a", has_text=later).first.bounding_box()
        assert box["y"] > rooms.bounding_box()["y"], later


@both_screens
def test_rules_say_stop_in_words_and_their_history_reads_plainly(admin_page, troubled, screen, shot):
    page = admin_page
    rule = troubled["gave_up"].agent.rules.get()
    rule.metadata_template = {"tier": "gold"}
    rule.save()
    page.goto("/admin/agents_app/dispatchrule/")
    assert page.locator("#result_list td.field-stops img").count() == 0
    page.locator("#result_list input.action-select").first.check()
    page.locator("select[name=action]").select_option(
        label="Duplicate selected rules (copies start disabled)"
    )
    page.get_by_role("button", name="Go").click()
    expect(page.locator("ul.messagelist")).to_contain_text("Duplicated 1 rule(s)")
    shot(page, f"glance-{screen}-rules-after-duplicate")
    messages = page.locator("ul.messagelist li").all_inner_texts()
    assert [m for m in messages if m.startswith("Duplicated")] == [
        "Duplicated 1 rule(s); the copies are disabled."
    ]
    assert sum(1 for m in messages if "Never seen" in m) <= 1, messages

    page.goto("/admin/agents_app/agent/")
    never = [m for m in page.locator("ul.messagelist li").all_inner_texts() if "Never seen" in m]
    assert len(never) == 1 and "'sales-agent'" in never[0] and "retired-agent" not in never[0], never

    page.goto(f"/admin/agents_app/dispatchrule/{rule.pk}/history/")
    shot(page, f"glance-{screen}-rule-history")
    table = page.locator("#change-history").inner_text()
    assert "None" not in table and "Change reason" not in table, table
    assert '{"tier": "gold"}' in table and "{'tier'" not in table, table


@both_screens
def test_webhook_events_hide_canary_rooms_unless_asked(admin_page, troubled, screen, shot):
    page = admin_page
    page.goto("/admin/rooms_app/webhookevent/")
    shot(page, f"glance-{screen}-webhooks")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1 and "support-live-ok" in rows.first.inner_text()
    assert "diagnose" in rows.first.inner_text()

    page.goto("/admin/rooms_app/webhookevent/?canary=only")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 8
    assert page.locator("#result_list a.doctor-link").count() == 0  # no "diagnose" for a probe room


@both_screens
def test_a_long_list_of_problems_still_fits_the_first_screen(admin_page, lk, screen, shot):
    """Fifteen live rooms without their agent, each with a long error: the line and the list
    (the worst first, the rest counted) are all on the first screen."""
    page = admin_page
    support = Agent.objects.create(agent_name="support-agent-eu-west")
    for i in range(15):
        room = Room.objects.create(
            name=f"support-eu-west-2026-12-03-customer-{4700 + i}", status="active", started_at=_ago(100)
        )
        Dispatch.objects.create(
            room=room,
            agent=support,
            agent_name=support.agent_name,
            source="rule",
            status="no_worker",
            ended_at=_ago(60),
            last_error=NO_WORKER + ". Workers registered now: 'support-agent-eu', 'sales-agent'; check "
            "WorkerOptions(agent_name=...) of the worker you expect and that it runs in this project.",
        )
    page.goto("/admin/dispatch-dashboard/")
    shot(page, f"glance-{screen}-dashboard-many")

    assert "15 live room(s) missing an expected agent" in page.locator("#health-line").inner_text()
    _on_first_screen(page, page.locator("#health-line"), screen)
    _on_first_screen(page, page.locator("#attention"), screen)
    assert page.locator("#attention li.dp-attention-item").count() == 8
    assert page.locator("#attention-more").inner_text() == "and 7 more: see the tables below."
    assert page.locator("#rooms-missing tbody tr").count() == 15
