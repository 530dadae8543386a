"""Admin pages of alerts, workers and canaries: the signing secret is shown once, never again;
bad URLs name the field; a canary saved in admin is a beat task; every page renders."""

from __future__ import annotations

import re

import pytest
from django_celery_beat.models import PeriodicTask

from tests.factories import AgentFactory
from tests.receiver import Reply
from watch_app.models import AlertTarget, CanarySchedule, WorkerEndpoint


@pytest.fixture
def staff(client, admin_user):
    client.force_login(admin_user)
    return client


def target_form(url: str, **fields) -> dict:
    return {
        "name": "pager",
        "kind": "webhook",
        "url": url,
        "enabled": "on",
        "max_per_hour": 30,
        "max_attempts": 5,
        "timeout_s": 5,
        "new_secret": "",
        "deliveries-TOTAL_FORMS": 0,
        "deliveries-INITIAL_FORMS": 0,
        **fields,
    }


def test_secret_shown_once_then_masked(staff, receiver):
    response = staff.post(
        "/admin/watch_app/alerttarget/add/",
        target_form(f"{receiver.url}/hook", allow_private="on"),
        follow=True,
    )
    assert response.status_code == 200
    target = AlertTarget.objects.get()
    shown = re.search(r"dpw_[A-Za-z0-9_-]+", response.content.decode()).group(0)
    assert shown == target.secret
    for page in ("/admin/watch_app/alerttarget/", f"/admin/watch_app/alerttarget/{target.pk}/change/"):
        html = staff.get(page).content.decode()
        assert target.secret not in html and f"…{target.secret[-4:]}" in html


def test_slack_url_listed_by_host_only(staff):
    AlertTarget.objects.create(name="slack", kind="slack", url="https://hooks.slack.com/services/T0/B0/tok3n")
    html = staff.get("/admin/watch_app/alerttarget/").content.decode()
    assert "https://hooks.slack.com" in html and "tok3n" not in html


def test_private_url_refused_in_the_form(staff, receiver):
    response = staff.post("/admin/watch_app/alerttarget/add/", target_form(f"{receiver.url}/hook"))
    assert response.status_code == 200 and not AlertTarget.objects.exists()
    assert "is a loopback address" in response.context["adminform"].form.errors["url"][0]


def test_short_secret_refused(staff, receiver):
    form = target_form(f"{receiver.url}/hook", allow_private="on", new_secret="short")
    response = staff.post("/admin/watch_app/alerttarget/add/", form)
    assert response.context["adminform"].form.errors["new_secret"] == ["use at least 32 characters"]


def test_canary_saved_in_admin_is_a_beat_task(staff):
    agent = AgentFactory(agent_name="support")
    form = {
        "agent": agent.pk,
        "enabled": "on",
        "every_s": 120,
        "join_timeout_s": 20,
        "alert_after_failures": 2,
    }
    response = staff.post("/admin/watch_app/canaryschedule/add/", form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    task = PeriodicTask.objects.get(task="canary.run")
    assert task.interval.every == 120 and CanarySchedule.objects.get().periodic_task == task


def test_every_page_renders(staff):
    agent = AgentFactory(agent_name="support")
    WorkerEndpoint.objects.create(agent=agent, url="http://10.0.0.7:8081")
    for model in (
        "alerttarget",
        "incident",
        "alertdelivery",
        "workerendpoint",
        "canaryschedule",
        "canaryrun",
    ):
        assert staff.get(f"/admin/watch_app/{model}/").status_code == 200, model
    html = staff.get("/admin/watch_app/workerendpoint/").content.decode()
    assert "no worker online for &#x27;support&#x27;" in html


@pytest.mark.parametrize("model", ["workerendpoint", "alerttarget"])
def test_private_addresses_are_opt_in_with_a_warning(staff, model):
    html = staff.get(f"/admin/watch_app/{model}/add/").content.decode()
    box = re.search(r'<input type="checkbox" name="allow_private"[^>]*>', html).group(0)
    assert "checked" not in box
    assert "Warning: ticking this lets the portal call inside your network" in html
    assert "169.254.169.254" in html


def endpoint_form(agent, url: str, **fields) -> dict:
    return {"agent": agent.pk, "url": url, "enabled": "on", **fields}


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/", "http://[fe80::1]:8081", "http://[::ffff:169.254.169.254]/"],
)
def test_link_local_needs_the_box_on_every_form(staff, url):
    agent = AgentFactory(agent_name="support")
    response = staff.post("/admin/watch_app/workerendpoint/add/", endpoint_form(agent, url))
    assert response.status_code == 200 and not WorkerEndpoint.objects.exists()
    assert "is a link-local address" in response.context["adminform"].form.errors["url"][0]
    response = staff.post("/admin/watch_app/alerttarget/add/", target_form(url))
    assert response.status_code == 200 and not AlertTarget.objects.exists()
    assert "is a link-local address" in response.context["adminform"].form.errors["url"][0]
    # Ticked, the admin takes responsibility (the help text warned them).
    response = staff.post(
        "/admin/watch_app/workerendpoint/add/", endpoint_form(agent, url, allow_private="on")
    )
    assert response.status_code == 302 and WorkerEndpoint.objects.get().allow_private is True


def test_a_loopback_worker_url_needs_the_box(staff):
    agent = AgentFactory(agent_name="support")
    response = staff.post(
        "/admin/watch_app/workerendpoint/add/", endpoint_form(agent, "http://127.0.0.1:8081")
    )
    assert "is a loopback address" in response.context["adminform"].form.errors["url"][0]
    response = staff.post(
        "/admin/watch_app/workerendpoint/add/", endpoint_form(agent, "http://10.0.0.7:8081")
    )
    assert "is a private address" in response.context["adminform"].form.errors["url"][0]
    assert not WorkerEndpoint.objects.exists()


def test_poll_now_queues_the_poll_on_the_outbound_queue(staff, receiver, eager_tasks):
    receiver.routes["/"] = Reply(200, b"OK")
    receiver.routes["/worker"] = Reply(200, b'{"agent_name": "support", "worker_load": 0.2}')
    endpoint = WorkerEndpoint.objects.create(
        agent=AgentFactory(agent_name="support"), url=receiver.url, allow_private=True
    )
    response = staff.post(
        "/admin/watch_app/workerendpoint/",
        {"action": "poll_now", "_selected_action": [endpoint.pk]},
        follow=True,
    )
    assert "Poll of 1 worker(s) queued" in response.content.decode()
    endpoint.refresh_from_db()
    assert endpoint.healthy is True and endpoint.load == 0.2
