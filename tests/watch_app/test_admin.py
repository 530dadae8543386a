"""Admin pages of alerts: the signing secret is shown once, never again; bad URLs name the field."""

from __future__ import annotations

import re

from watch_app.models import AlertTarget


def test_secret_shown_once_then_masked(client, admin_user, receiver):
    client.force_login(admin_user)
    form = {
        "name": "pager",
        "kind": "webhook",
        "url": f"{receiver.url}/hook",
        "enabled": "on",
        "allow_private": "on",
        "max_per_hour": 30,
        "max_attempts": 5,
        "timeout_s": 5,
        "new_secret": "",
        "deliveries-TOTAL_FORMS": 0,
        "deliveries-INITIAL_FORMS": 0,
    }
    response = client.post("/admin/watch_app/alerttarget/add/", form, follow=True)
    assert response.status_code == 200
    target = AlertTarget.objects.get()
    shown = re.search(r"dpw_[A-Za-z0-9_-]+", response.content.decode()).group(0)
    assert shown == target.secret
    for page in ("/admin/watch_app/alerttarget/", f"/admin/watch_app/alerttarget/{target.pk}/change/"):
        html = client.get(page).content.decode()
        assert target.secret not in html and f"…{target.secret[-4:]}" in html


def test_slack_url_listed_by_host_only(client, admin_user, db):
    AlertTarget.objects.create(name="slack", kind="slack", url="https://hooks.slack.com/services/T0/B0/tok3n")
    client.force_login(admin_user)
    html = client.get("/admin/watch_app/alerttarget/").content.decode()
    assert "https://hooks.slack.com" in html and "tok3n" not in html


def test_private_url_refused_in_the_form(client, admin_user, receiver):
    client.force_login(admin_user)
    form = {
        "name": "p",
        "kind": "webhook",
        "url": f"{receiver.url}/hook",
        "max_per_hour": 30,
        "max_attempts": 5,
        "timeout_s": 5,
        "deliveries-TOTAL_FORMS": 0,
        "deliveries-INITIAL_FORMS": 0,
    }
    response = client.post("/admin/watch_app/alerttarget/add/", form)
    assert response.status_code == 200 and not AlertTarget.objects.exists()
    assert "private or loopback address" in response.context["adminform"].form.errors["url"][0]
