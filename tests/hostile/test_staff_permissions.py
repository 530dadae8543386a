"""Staff sessions follow Django's permissions: the API grants a staff user what the admin
grants them, endpoint by endpoint, and nothing more. A superuser has every permission.

| endpoint                                   | permission                      |
| POST   /api/v1/rules/explain               | agents_app.view_dispatchrule    |
| POST   /api/v1/dispatches                  | rooms_app.add_dispatch          |
| GET    /api/v1/dispatches/{id}             | rooms_app.view_dispatch         |
| DELETE /api/v1/dispatches/{id}             | rooms_app.change_dispatch       |
| GET    /api/v1/rooms/{room}                | rooms_app.view_room             |
| GET    /api/v1/rooms/{room}/diagnosis      | rooms_app.view_dispatch         |
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from rooms_app.models import Dispatch, Room
from tests.factories import AgentFactory, RuleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger():
    agent = AgentFactory(agent_name="globex-agent", default_metadata={"note": "globex-private"})
    RuleFactory(name="globex rooms", agent=agent, room_match_value="globex-*")
    room = Room.objects.create(name="globex-1", status=Room.Status.ACTIVE)
    live = Dispatch.objects.create(
        room=room, agent=agent, agent_name="globex-agent", source="api", status="requested"
    )
    return live


def staff(django_user_model, *perms: str, is_staff: bool = True) -> APIClient:
    user = django_user_model.objects.create_user("sam", password="pw-sam-12345", is_staff=is_staff)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = APIClient()
    client.force_login(user)
    return client


def _call(client: APIClient, method: str, path: str, body: dict | None, dispatch: Dispatch):
    path = path.format(id=dispatch.pk)
    if method == "post":
        return client.post(path, body, format="json")
    return getattr(client, method)(path)


ENDPOINTS = [
    ("post", "/api/v1/rules/explain", {"room_name": "globex-1"}, "agents_app.view_dispatchrule", 200),
    (
        "post",
        "/api/v1/dispatches",
        {"room_name": "globex-2", "agent_name": "globex-agent"},
        "rooms_app.add_dispatch",
        202,
    ),
    ("get", "/api/v1/dispatches/{id}", None, "rooms_app.view_dispatch", 200),
    ("delete", "/api/v1/dispatches/{id}", None, "rooms_app.change_dispatch", 202),
    ("get", "/api/v1/rooms/globex-1", None, "rooms_app.view_room", 200),
]


def _unchanged(dispatch: Dispatch) -> None:
    assert Dispatch.objects.count() == 1
    dispatch.refresh_from_db()
    assert dispatch.status == "requested"


@pytest.mark.parametrize(("method", "path", "body", "perm", "ok"), ENDPOINTS, ids=[e[3] for e in ENDPOINTS])
def test_without_the_permission_staff_get_403_json_and_change_nothing(
    django_user_model, ledger, method, path, body, perm, ok
):
    others = [p for _, _, _, p, _ in ENDPOINTS if p != perm]  # every other permission, not this one
    client = staff(django_user_model, *others)

    response = _call(client, method, path, body, ledger)

    assert response.status_code == 403
    assert response.json() == {
        "error": "forbidden",
        "detail": f"Your staff account lacks the permission {perm}.",
    }
    assert "globex-private" not in response.content.decode()
    _unchanged(ledger)


@pytest.mark.parametrize(("method", "path", "body", "perm", "ok"), ENDPOINTS, ids=[e[3] for e in ENDPOINTS])
def test_with_the_permission_staff_are_served(django_user_model, ledger, method, path, body, perm, ok):
    client = staff(django_user_model, perm)

    response = _call(client, method, path, body, ledger)

    assert response.status_code == ok, response.content


def test_the_permissions_do_nothing_for_a_user_who_is_not_staff(django_user_model, ledger):
    client = staff(django_user_model, *[p for _, _, _, p, _ in ENDPOINTS], is_staff=False)

    for method, path, body, _, _ in ENDPOINTS:
        response = _call(client, method, path, body, ledger)
        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"
    _unchanged(ledger)


def test_the_diagnosis_needs_view_on_dispatches_as_the_admin_doctor_page(django_user_model, ledger, lk):
    without = staff(django_user_model, "rooms_app.view_room")
    response = without.get("/api/v1/rooms/globex-1/diagnosis")
    assert response.status_code == 403
    assert response.json()["detail"] == "Your staff account lacks the permission rooms_app.view_dispatch."
    assert without.get("/admin/dispatch-doctor/", {"room": "globex-1"}).status_code == 403

    user = django_user_model.objects.get(username="sam")
    user.user_permissions.add(Permission.objects.get(codename="view_dispatch"))
    response = without.get("/api/v1/rooms/globex-1/diagnosis")
    assert response.status_code == 200 and response.json()["room_name"] == "globex-1"


def test_a_superuser_is_unscoped(staff_api, ledger):
    response = staff_api.post(
        "/api/v1/dispatches", {"room_name": "globex-3", "agent_name": "globex-agent"}, format="json"
    )

    assert response.status_code == 202
    assert response.json()["metadata"] == '{"note":"globex-private"}'
