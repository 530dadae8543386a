"""The admin dashboard and doctor page: the numbers a person reads off them."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from dispatchportal.stats import percentile
from operator_views.dashboard import agent_stats_get, rooms_missing_agents
from operator_views.doctor.views import doctor_url
from rooms_app.models import Dispatch, Room
from tests.factories import AgentFactory, RuleFactory

from .conftest import person_joins

pytestmark = pytest.mark.django_db


def _dispatch(room: Room, agent: str, status: str, *, ago_s: float, join_s: float | None = None, **fields):
    created = timezone.now() - timedelta(seconds=ago_s)
    row = Dispatch.objects.create(room=room, agent_name=agent, source="rule", status=status, **fields)
    joined = created + timedelta(seconds=join_s) if join_s is not None else None
    Dispatch.objects.filter(pk=row.pk).update(created_at=created, requested_at=created, joined_at=joined)
    return row


@pytest.fixture
def history():
    """support-agent: 3 joins and 1 no-worker in the last hour, 1 more join yesterday evening;
    sales-agent: one failure only. One room still waits for its agent."""
    rooms = [Room.objects.create(name=f"support-{i}", status="finished") for i in range(6)]
    _dispatch(rooms[0], "support-agent", "agent_joined", ago_s=600, join_s=1.0)
    _dispatch(rooms[1], "support-agent", "agent_joined", ago_s=500, join_s=2.0)
    _dispatch(rooms[2], "support-agent", "agent_joined", ago_s=400, join_s=9.0)
    _dispatch(
        rooms[3],
        "support-agent",
        "no_worker",
        ago_s=300,
        ended_at=timezone.now(),
        last_error="no worker registered as 'support-agent' took the job",
    )
    _dispatch(rooms[4], "support-agent", "agent_joined", ago_s=20 * 3600, join_s=4.0)
    _dispatch(rooms[5], "sales-agent", "failed", ago_s=100, ended_at=timezone.now(), last_error="job crashed")
    waiting_room = Room.objects.create(name="support-waiting", status="active", started_at=timezone.now())
    _dispatch(
        waiting_room,
        "support-agent",
        "requested",
        ago_s=42,
        deadline_at=timezone.now() - timedelta(seconds=5),
    )


def test_success_rate_and_time_to_join_per_agent(history):
    stats = agent_stats_get()

    hour, day = stats["support-agent"]["hour"], stats["support-agent"]["day"]
    assert (hour.joined, hour.failed, hour.success_rate) == (3, 1, 0.75)
    assert (hour.p50_s, hour.p95_s) == (2.0, 9.0)
    assert (day.joined, day.success_rate, day.p50_s, day.p95_s) == (4, 0.8, 2.0, 9.0)
    assert stats["sales-agent"]["hour"].success_rate == 0.0
    assert percentile([], 0.5) is None


def test_rooms_waiting_longest_first_with_overdue_flag(history):
    [waiting] = rooms_missing_agents()

    assert waiting.room_name == "support-waiting" and waiting.overdue and not waiting.ended
    assert 40 <= waiting.waiting_s < 60


def test_a_live_room_whose_agent_gave_up_is_missing_it_as_the_room_state_says(history, admin_client):
    """The case the dashboard once called "No room is waiting for an agent": live rooms whose
    dispatch ended without the agent. The dashboard's list, its health line, the rooms list and
    the API's room state all read the same answer."""
    from rooms_app.selectors import room_state

    live = Room.objects.create(name="support-live-no-agent", status="active", started_at=timezone.now())
    _dispatch(live, "support-agent", "no_worker", ago_s=30, ended_at=timezone.now(), last_error="no worker")
    Dispatch.objects.filter(room__name="support-waiting").delete()

    [missing] = rooms_missing_agents()
    assert (missing.room_name, missing.agent_name, missing.ended) == (
        "support-live-no-agent",
        "support-agent",
        True,
    )
    assert [a.joined for a in room_state(room_name="support-live-no-agent").agents] == [False]
    page = admin_client.get("/admin/dispatch-dashboard/").content.decode()
    assert 'data-level="red"' in page and "1 live room(s) missing an expected agent" in page
    assert "Every live room has" not in page


def test_the_dashboard_shows_charts_waiting_rooms_and_failures_with_doctor_links(admin_client, history):
    response = admin_client.get("/admin/dispatch-dashboard/")

    assert response.status_code == 200
    page = response.content.decode()
    assert page.count('class="dp-chart"') == 3  # success rate, time to join, per hour
    assert (
        "Dispatch success rate by agent" in page
        and "Time to join (seconds): LiveKit had the request -&gt; agent joined" in page
    )
    assert re.search(r"<td>support-agent</td>\s*<td>5 / 6</td>\s*<td>75%\s*/ 80%</td>", page)
    assert "2.0 s / 9.0 s" in page
    assert "support-waiting" in page and "(past the deadline)" in page
    assert "no worker registered as &#x27;support-agent&#x27; took the job" in page
    assert doctor_url(room_name="support-3", agent_name="support-agent").replace("&", "&amp;") in page


def test_waiting_now_counts_the_rooms_listed_as_waiting(history, admin_client):
    """A token dispatch whose participant has not joined yet (no room in LiveKit) is not a
    room waiting for its agent: the per-agent count and the list say the same."""
    not_started = Room.objects.create(name="support-not-yet", status="pending")
    _dispatch(not_started, "support-agent", "pending", ago_s=5, delivery="token")

    page = admin_client.get("/admin/dispatch-dashboard/").content.decode()

    per_agent = page[page.index('data-section="per-agent"') : page.index('data-section="per-hour"')]
    row = per_agent[per_agent.index("<td>support-agent</td>") :]
    cells = re.findall(r"<td>(.*?)</td>", row[: row.index("</tr>")], re.S)
    assert cells[-1] == "1"  # support-waiting only
    assert [w.room_name for w in rooms_missing_agents()] == ["support-waiting"]


def test_an_empty_dashboard_says_so(admin_client, lk):
    page = admin_client.get("/admin/dispatch-dashboard/").content.decode()

    assert "No dispatch in the last day: no chart to draw yet." in page
    assert "No dispatch in the last 24 hours." in page and 'id="hours-chart"' not in page
    assert (
        "Every live room has the agents the ledger expects there." in page and "No failed dispatch." in page
    )
    assert 'data-level="green"' in page


def test_the_open_dashboard_polls_its_sections_as_json(admin_client, history):
    body = admin_client.get("/admin/dispatch-dashboard/live.json").json()

    assert set(body["sections"]) == {"glance", "per-agent", "per-hour", "waiting", "failures", "watch"}
    assert "Open alerts" in body["sections"]["watch"]
    assert "support-waiting" in body["sections"]["waiting"]
    assert "75%" in body["sections"]["per-agent"] and "<svg" in body["sections"]["per-hour"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", body["as_of"])


def test_the_hourly_chart_starts_at_the_first_busy_hour(admin_client):
    room = Room.objects.create(name="support-1", status="finished")
    _dispatch(room, "support-agent", "agent_joined", ago_s=60, join_s=1.0)

    page = admin_client.get("/admin/dispatch-dashboard/").content.decode()

    assert "Dispatches per hour, last 6 h, by outcome" in page


def test_the_admin_home_links_to_the_dashboard_and_the_doctor(admin_client):
    page = admin_client.get("/admin/").content.decode()

    assert 'id="dashboard-link"' in page and 'id="doctor-link"' in page


def test_the_doctor_page_shows_the_verdict_cause_and_fix(admin_client, lk):
    agent = AgentFactory(agent_name="support-agent", enabled=False)
    RuleFactory(name="support rooms", agent=agent, room_match_value="support-*")
    person_joins(lk, "support-9", "ann")

    page = admin_client.get("/admin/dispatch-doctor/", {"room": "support-9"}).content.decode()

    assert "Broken at link 2" in page
    assert 'id="doctor-cause"' in page and "is disabled" in page
    assert "Enable &#x27;support-agent&#x27; in Admin › Agents" in page
    assert page.count('class="dp-state dp-state-') == 8


def test_staff_without_permission_and_anonymous_users_are_kept_out(client, django_user_model):
    assert client.get("/admin/dispatch-dashboard/").status_code == 302  # to the login page
    clerk = django_user_model.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    client.force_login(clerk)
    assert client.get("/admin/dispatch-dashboard/").status_code == 403
    assert client.get("/admin/dispatch-doctor/", {"room": "x"}).status_code == 403
    assert client.get("/admin/dispatch-dashboard/live.json").status_code == 403


def test_rooms_and_dispatches_in_the_admin_link_to_the_doctor(admin_client, lk):
    room = Room.objects.create(name="support-11", status="active")
    Dispatch.objects.create(room=room, agent_name="support-agent", source="rule", status="no_worker")

    rooms = admin_client.get("/admin/rooms_app/room/").content.decode()
    dispatches = admin_client.get("/admin/rooms_app/dispatch/").content.decode()

    assert doctor_url(room_name="support-11").replace("&", "&amp;") in rooms
    assert doctor_url(room_name="support-11", agent_name="support-agent").replace("&", "&amp;") in dispatches


def test_a_token_agents_time_to_join_counts_from_the_rooms_start(admin_client):
    """The portal saw LiveKit's dispatch from the token (requested_at) 1.5 s after the room
    started and 0.2 s before the join: the agent took 1.7 s, not 0.2 s."""
    started = timezone.now() - timedelta(seconds=60)
    room = Room.objects.create(name="support-token", status="active", started_at=started)
    row = Dispatch.objects.create(
        room=room, agent_name="support-agent", source="token", delivery="token", status="agent_joined"
    )
    Dispatch.objects.filter(pk=row.pk).update(
        created_at=started - timedelta(seconds=5),
        requested_at=started + timedelta(seconds=1.5),
        joined_at=started + timedelta(seconds=1.7),
    )

    hour = agent_stats_get()["support-agent"]["hour"]

    assert hour.p50_s == pytest.approx(1.7)
