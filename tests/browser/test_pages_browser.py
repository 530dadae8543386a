"""What a person sees on a 1366 x 768 laptop and a 1920 x 1080 screen: every admin page and the
API docs without sideways scrolling (the key columns inside the window), chart labels that do
not overlap, a dispatch's timeline in order, the API docs offline, a dashboard that refreshes.

Each test saves screenshots under test-artifacts/, named after the screen size."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlparse

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from agents_app.models import Agent, ApiClient
from rooms_app.models import Dispatch, Room, WebhookEvent

from .conftest import SCREENS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
both_screens = pytest.mark.parametrize("screen", list(SCREENS))

NO_WORKER = (
    "no worker registered as 'support-agent-eu-west' took the job within 10 s. Workers registered "
    "now: 'support-agent-eu', 'support-agnet-eu-west', 'sales-agent'; check "
    "WorkerOptions(agent_name=...) of the worker you expect and that it runs in this project."
)


@pytest.fixture
def ledger():
    """A portal after a busy morning: agents (one never seen), rules, rooms with long names,
    dispatches that joined, failed and still wait."""
    now = timezone.now()
    backup = Agent.objects.create(agent_name="backup-agent", display_name="Backup agent for every room")
    Agent.objects.create(agent_name="sales-agent", display_name="Sales")  # no worker ever answered to it
    agent = Agent.objects.create(
        agent_name="support-agent-eu-west",
        display_name="Support agent (EU west)",
        description="Answers support calls in the EU west region",
        fallback=backup,
    )
    agent.rules.create(
        name="support rooms in the EU west region get the support agent",
        room_match_kind="glob",
        room_match_value="support-eu-west-*",
        delivery="explicit",
    )
    backup.rules.create(name="everything else", room_match_kind="glob", room_match_value="*", priority=900)
    ApiClient.objects.create(
        name="web frontend", key_prefix="dpk_abcdefgh", key_digest="0" * 64, room_patterns=["support-*"]
    )

    def dispatch(
        room: Room, status: str, *, ago_s: float, steps: tuple[float, ...] = (), **fields
    ) -> Dispatch:
        created = now - timedelta(seconds=ago_s)
        times = dict(zip(("requested_at", "job_assigned_at", "joined_at"), steps, strict=False))
        row = Dispatch.objects.create(
            room=room, agent=agent, agent_name=agent.agent_name, source="rule", status=status, **fields
        )
        Dispatch.objects.filter(pk=row.pk).update(
            created_at=created, **{k: created + timedelta(seconds=v) for k, v in times.items()}
        )
        return row

    for i in range(12):
        room = Room.objects.create(
            name=f"support-eu-west-2026-11-26-customer-{4700 + i}", status="finished", sid=f"RM_{i:08d}"
        )
        if i % 4 == 3:
            dispatch(
                room, "no_worker", ago_s=300 + i * 60, steps=(0.021,), ended_at=now, last_error=NO_WORKER
            )
        else:
            dispatch(
                room,
                "agent_joined",
                ago_s=300 + i * 60,
                steps=(0.021, 0.412, 1.305),
                participant_identity=f"agent-AJ_{i:08d}",
                livekit_dispatch_id=f"AD_{i:08d}",
                livekit_job_id=f"AJ_{i:08d}",
            )
    for i, status in enumerate(("agent_joined", "agent_joined")):  # 100% over the hour and the day
        room = Room.objects.create(name=f"backup-{i}", status="finished")
        row = Dispatch.objects.create(
            room=room, agent=backup, agent_name="backup-agent", source="fallback", status=status
        )
        created = now - timedelta(seconds=200)
        Dispatch.objects.filter(pk=row.pk).update(
            created_at=created, requested_at=created, joined_at=created + timedelta(seconds=0.3)
        )
    waiting = Room.objects.create(name="support-eu-west-waiting", status="active", started_at=now)
    dispatch(waiting, "requested", ago_s=40, steps=(0.03,), deadline_at=now + timedelta(seconds=5))
    WebhookEvent.objects.create(
        event_id="EV_1",
        event="participant_joined",
        room_name="support-eu-west-2026-11-26-customer-4700",
        participant_identity="agent-AJ_00000000",
        agent_name="support-agent-eu-west",
    )
    return agent


def _fits(page, screen: str, *key_columns: str) -> None:
    """No sideways scrolling, and each key column's header inside the window."""
    width = SCREENS[screen][0]
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"{page.url}: {scroll_width} px wide on a {width} px screen"
    if key_columns:  # the list scrolls inside its box when it is too wide: it must not
        results = page.locator("#changelist .results")
        assert results.evaluate("r => r.scrollWidth <= r.clientWidth"), (
            f"{page.url}: the list scrolls sideways"
        )
    for column in key_columns:
        box = page.locator(f"#result_list th.column-{column}").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (page.url, column)


@both_screens
def test_every_admin_page_fits_the_screen(admin_page, ledger, screen, shot):
    page = admin_page
    dispatch = Dispatch.objects.filter(status="no_worker").first()
    pages = [
        ("admin-home", "/admin/", ()),
        (
            "dispatches",
            "/admin/rooms_app/dispatch/",
            ("id", "room_link", "agent_name", "status", "age", "doctor_column"),
        ),
        ("rooms", "/admin/rooms_app/room/", ("name", "room_status", "agents", "doctor_column")),
        ("agents", "/admin/agents_app/agent/", ("__str__", "enabled", "deadline", "fallback", "last_seen")),
        ("rules", "/admin/agents_app/dispatchrule/", ("name", "agent", "how", "warnings")),
        ("clients", "/admin/agents_app/apiclient/", ("name", "enabled")),
        ("webhooks", "/admin/rooms_app/webhookevent/", ("event", "room_name", "room_doctor_column")),
        ("dispatch-detail", f"/admin/rooms_app/dispatch/{dispatch.pk}/change/", ()),
        ("room-detail", f"/admin/rooms_app/room/{dispatch.room_id}/change/", ()),
        ("agent-detail", f"/admin/agents_app/agent/{ledger.pk}/change/", ()),
        ("explain", "/admin/agents_app/dispatchrule/explain/?sample_room=support-eu-west-1", ()),
        ("dashboard", "/admin/dispatch-dashboard/", ()),
        ("doctor", f"/admin/dispatch-doctor/?room={dispatch.room.name}", ()),
    ]
    for name, url, columns in pages:
        page.goto(url)
        assert page.locator("#site-name").inner_text() == "Dispatch Portal", url
        assert page.title().endswith("| Dispatch Portal"), url
        shot(page, f"{screen}-{name}")
        _fits(page, screen, *columns)

    # "View site" leads to the API docs; the favicon is there.
    assert page.locator("#view-site").get_attribute("href") == "/api/docs/"
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert page.request.get(icon).ok and page.request.get("/favicon.ico").ok

    # The dispatch list: a no_worker row stays two lines high at most, its whole error on hover.
    page.goto("/admin/rooms_app/dispatch/?status__exact=no_worker")
    row = page.locator("#result_list tbody tr").first
    assert row.bounding_box()["height"] < 60
    assert row.locator("td.field-short_error span.dp-clamp").get_attribute("title") == NO_WORKER
    # The agent list: the fallback agent's name is whole and inside the window.
    page.goto("/admin/agents_app/agent/")
    cell = (
        page.locator("#result_list tr").filter(has_text="support-agent-eu-west").locator("td.field-fallback")
    )
    box = cell.bounding_box()
    assert cell.inner_text() == "backup-agent" and box["x"] + box["width"] <= SCREENS[screen][0]
    assert "never seen" in page.locator("#result_list tr").filter(has_text="sales-agent").inner_text()
    assert "Never seen: 'sales-agent'" in page.locator("ul.messagelist").inner_text()


@both_screens
def test_the_api_docs_list_the_operations_offline(page, live_server, screen, shot):
    host = urlparse(live_server.url).hostname
    blocked: list[str] = []

    def only_the_portal(route):
        if urlparse(route.request.url).hostname in (host, "localhost", "127.0.0.1"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_portal)
    page.goto("/api/docs/")

    operations = page.locator(".opblock-summary-path")
    expect(operations.first).to_be_visible()
    paths = {p.strip().replace("\u200b", "") for p in operations.all_inner_texts()}
    assert {"/api/v1/token", "/api/v1/dispatches", "/api/v1/rules/explain"} <= paths
    assert page.locator(".info .title").inner_text().startswith("Dispatch Portal API")
    assert blocked == []  # nothing even tried to leave the machine
    assert page.evaluate("document.documentElement.scrollWidth") <= SCREENS[screen][0]
    shot(page, f"{screen}-api-docs")


def _steps(page, scope: str) -> list[tuple[str, str, str]]:
    steps = page.locator(f"{scope} li.dp-step")
    return [
        (
            s.get_attribute("data-step"),
            s.locator(".dp-step-at").inner_text(),
            s.locator(".dp-step-gap").inner_text().strip(),
        )
        for s in steps.all()
    ]


@both_screens
def test_a_dispatch_timeline_on_the_dispatch_and_room_pages(admin_page, ledger, screen, shot):
    page = admin_page
    dispatch = Dispatch.objects.filter(status="agent_joined").order_by("id").first()
    api = page.request.get(f"/api/v1/dispatches/{dispatch.pk}").json()
    millis = [
        api[f][:23].replace("T", " ") for f in ("created_at", "requested_at", "job_assigned_at", "joined_at")
    ]

    page.goto(f"/admin/rooms_app/dispatch/{dispatch.pk}/change/")
    steps = _steps(page, f"#timeline-{dispatch.pk}")
    assert [s[0] for s in steps] == [step["key"] for step in api["timeline"]]
    assert [s[0] for s in steps] == ["trigger", "requested", "job_assigned", "joined"]
    assert [s[1] for s in steps] == millis  # the API's times, to the millisecond
    assert [s[2] for s in steps] == ["", "+0.021 s", "+0.391 s", "+0.893 s"]
    boxes = [page.locator(f"#timeline-{dispatch.pk} li.dp-step").nth(i).bounding_box() for i in range(4)]
    assert all(a["x"] < b["x"] or a["y"] < b["y"] for a, b in zip(boxes, boxes[1:], strict=False))  # in order
    assert "agent-AJ_" in page.locator(f"#timeline-{dispatch.pk}").inner_text()
    assert page.locator(".field-requested .readonly").inner_text() == millis[1]
    assert page.locator(".field-livekit_dispatch_id .help").count() == 0  # no "e.g. 'AD_x1y2z3'"
    shot(page, f"{screen}-dispatch-timeline")

    page.get_by_role("link", name="Ask the doctor").click()
    expect(page.locator("#doctor-verdict")).to_be_visible()

    page.goto(f"/admin/rooms_app/room/{dispatch.room_id}/change/")
    assert _steps(page, f"#timeline-{dispatch.pk}") == steps
    assert page.get_by_role("link", name="Ask the doctor").is_visible()
    shot(page, f"{screen}-room-timeline")

    failed = Dispatch.objects.filter(status="no_worker").first()
    page.goto(f"/admin/rooms_app/dispatch/{failed.pk}/change/")
    steps = _steps(page, f"#timeline-{failed.pk}")
    assert [s[0] for s in steps] == ["trigger", "requested", "job_assigned", "verdict"]
    verdict = page.locator(f"#timeline-{failed.pk} li[data-step=verdict]")
    assert "No worker took the job" in verdict.inner_text() and "dp-step-failed" in verdict.get_attribute(
        "class"
    )


def _overlapping(page, svg: str) -> list[tuple[str, str]]:
    """Pairs of labels whose boxes, as drawn, intersect (read in one go: the page refreshes)."""
    boxes = page.locator(svg).evaluate(
        """svg => [...svg.querySelectorAll("text")].filter(t => t.textContent.trim()).map(t => {
             const r = t.getBoundingClientRect();
             return [t.textContent, r.left, r.top, r.right, r.bottom];
           })"""
    )
    return [
        (a[0], b[0])
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]
    ]


@both_screens
def test_the_dashboard_labels_never_overlap_and_the_figures_refresh(admin_page, ledger, screen, shot):
    page = admin_page
    page.goto("/admin/dispatch-dashboard/?refresh=1")
    for chart in ("#success-rate-chart svg", "#time-to-join-chart svg", "#hours-chart svg"):
        assert page.locator(chart).evaluate("svg => svg.querySelectorAll('text').length") > 5, chart
        assert _overlapping(page, chart) == [], chart
    assert page.evaluate("document.documentElement.scrollWidth") <= SCREENS[screen][0]
    shot(page, f"{screen}-dashboard")

    page.evaluate("window.notReloaded = true")
    room = Room.objects.create(name="support-eu-west-new", status="active", started_at=timezone.now())
    Dispatch.objects.create(
        room=room, agent=ledger, agent_name=ledger.agent_name, source="rule", status="pending"
    )

    expect(page.locator("#rooms-missing")).to_contain_text("support-eu-west-new")
    expect(page.locator("#attention")).to_contain_text("support-eu-west-new")  # the first screen too
    assert page.evaluate("window.notReloaded") is True
    shot(page, f"{screen}-dashboard-refreshed")


def test_a_new_install_dashboard_says_what_is_missing(admin_page, shot):
    page = admin_page
    page.goto("/admin/dispatch-dashboard/")

    for empty in ("#no-dispatches", "#no-hours", "#no-rooms-missing", "#no-failures"):
        expect(page.locator(empty)).to_be_visible()
    assert page.locator("svg.dp-chart").count() == 0
    assert page.locator("#refresh-problem").is_hidden()
    shot(page, "1366x768-dashboard-empty")
