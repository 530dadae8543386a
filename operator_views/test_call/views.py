"""The test call page (/admin/test-call/) and the two staff JSON endpoints its script calls.

- `token.json` (POST) mints a participant token under one API client's scope through
  `agents_app.services.token_mint`, the service the REST token endpoint calls, with the same
  body validation (`token_request_parse`): the same rules, scope, rate limit and token facts.
- `room.json` (GET) is where the room's dispatches stand, from the ledger's selectors
  (`room_state`, `dispatch_get`, `dispatch_timeline`) under that client's scope.

Both take a staff session only (never an API key: a key must not mint under another client),
with the ledger's view permission, plus view permission on API clients to mint. Errors are the
project's JSON `{error, detail}`, naming the field. The page itself is an admin view (a login
redirect for anyone else). Admin helpers, not the public API: left out of the OpenAPI schema.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from agents_app.models import ApiClient
from agents_app.selectors import ClientScope, Scope, agents_join_deadline, client_scope_get
from agents_app.services import token_mint
from agents_app.token_request import token_request_from_body
from dispatchportal.exceptions import ApplicationError, Forbidden
from dispatchportal.serializers import LiveKitName
from rooms_app.models import Room
from rooms_app.selectors import dispatch_get, dispatch_timeline, room_state

from ..doctor.views import doctor_url
from ..helpers import VIEW_PERMISSION, admin_page_context, admin_url, view_permission_require

MINT_PERMISSIONS = (VIEW_PERMISSION, "agents_app.view_apiclient")
RECENT_ROOMS = 20
DEFAULT_JOIN_DEADLINE_S = 15  # an agent the portal does not know: the ledger's own default


def test_call_view(request: HttpRequest) -> HttpResponse:
    """The page: pick a client, a room and an identity, then call (see test_call.js)."""
    view_permission_require(request)
    clients = list(ApiClient.objects.filter(enabled=True).order_by("name"))
    wanted = request.GET.get("client", "")
    context = {
        **admin_page_context(request, "Test call"),
        "clients": [
            {"id": c.pk, "name": c.name, "rooms": ", ".join(c.room_patterns or []) or "(none)"}
            for c in clients
        ],
        "client_selected": int(wanted) if wanted.isdigit() else None,
        "room": request.GET.get("room", "").strip(),
        "identity": request.GET.get("identity", "").strip() or f"test-call-{request.user.get_username()}",
        "recent_rooms": list(
            Room.objects.order_by("-created_at").values_list("name", flat=True)[:RECENT_ROOMS]
        ),
        "token_url": reverse("test-call-token"),
        "room_url": reverse("test-call-room"),
        "dashboard_url": reverse("dispatch-dashboard"),
    }
    return render(request, "admin/test_call/test_call.html", context)


class IsStaffWith(permissions.BasePermission):
    """An active staff session holding every permission in the view's `staff_permissions`."""

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_staff and user.is_active):
            self.message = "The test call is for staff: log in to the admin first."
            return False
        missing = [p for p in view.staff_permissions if not user.has_perm(p)]
        if missing:
            self.message = f"Your staff account lacks the permission {', '.join(missing)}."
            return False
        return True


def _client_scope(raw: Any) -> ClientScope:
    """The API client the call is made as: its id, a client that exists and is enabled."""
    if (
        isinstance(raw, bool)
        or not isinstance(raw, int | str)
        or not (str(raw).isascii() and str(raw).isdigit())
    ):
        raise ApplicationError("Pick an API client: its id, e.g. 3.", field="client")
    client = client_scope_get(client_id=int(raw))
    if client is None:
        raise ApplicationError(f"no API client {raw}", field="client")
    if not client.enabled:
        raise Forbidden(
            f"API client '{client.name}' is disabled: its tokens would be refused", field="client"
        )
    return client


def _doctor(room: str, agent: str | None, identity: str) -> str:
    url = doctor_url(room_name=room, agent_name=agent)
    return url + ("&" + urlencode({"identity": identity}) if identity else "")


def _explain(room: str, identity: str) -> str:
    """The rules' explain page, run for this room and identity."""
    url = admin_url("admin:agents_app_dispatchrule_explain")
    return url and url + "?" + urlencode({"sample_room": room, "sample_identity": identity})


@extend_schema(exclude=True)
class TestCallTokenApi(APIView):
    """Mint the test call's token as the chosen client's frontend would get it."""

    authentication_classes = [SessionAuthentication]  # a staff session; CSRF checked
    permission_classes = [IsStaffWith]
    staff_permissions = MINT_PERMISSIONS

    def post(self, request: Any) -> Response:
        body = request.data
        if not isinstance(body, dict):
            raise ApplicationError("Expected a JSON object.", field="non_field_errors")
        body = dict(body)
        client = _client_scope(body.pop("client", None))
        # The token endpoint's own validation and request: the same fields, limits and messages.
        # The page anchors the ledger's times at this moment: taken before the mint, so what the
        # mint records (the token's fact) is never shown before "token minted".
        mint_started = timezone.now()
        minted = token_mint(client=client, request=token_request_from_body(body))
        deadlines = agents_join_deadline(agent_names=[a.agent_name for a in minted.agents])
        room, identity = minted.room_name, minted.participant_identity
        return Response(
            {
                "server_url": minted.server_url,
                "participant_token": minted.participant_token,
                "room_name": room,
                "participant_identity": identity,
                "client": {"id": client.id, "name": client.name},
                "minted_at": mint_started,
                "room_exists": minted.room_exists,
                "agents": [
                    {
                        "agent_name": a.agent_name,
                        "rule": a.rule,
                        "delivery": a.delivery,
                        "expected_within_s": deadlines.get(a.agent_name, DEFAULT_JOIN_DEADLINE_S),
                        "doctor_url": _doctor(room, a.agent_name, identity),
                    }
                    for a in minted.agents
                ],
                "doctor_url": _doctor(room, None, identity),
                "explain_url": _explain(room, identity),
            },
            status=201,
        )


@extend_schema(exclude=True)
class TestCallRoomApi(APIView):
    """Where the room's dispatches stand in the ledger, as the chosen client may see them."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [IsStaffWith]
    staff_permissions = (VIEW_PERMISSION,)

    class InputSerializer(serializers.Serializer):
        room = LiveKitName()

    def get(self, request: Any) -> Response:
        client = _client_scope(request.query_params.get("client"))
        data = self.InputSerializer(data={"room": request.query_params.get("room", "")})
        data.is_valid(raise_exception=True)
        room_name = data.validated_data["room"]
        scope = Scope(client)
        state = room_state(room_name=room_name, scope=scope)
        agents = []
        for wanted in state.agents:
            dispatch = dispatch_get(dispatch_id=wanted.dispatch_id, scope=scope)
            agents.append(
                {
                    "agent_name": wanted.agent_name,
                    "dispatch_id": dispatch.pk,
                    "status": dispatch.status,
                    "status_label": dispatch.get_status_display(),
                    "delivery": dispatch.delivery,
                    "attempt": dispatch.attempt,
                    "participant_identity": dispatch.participant_identity,
                    "last_error": dispatch.last_error,
                    "steps": [
                        {"key": s.key, "label": s.label, "at": s.at, "state": s.state, "detail": s.detail}
                        for s in dispatch_timeline(dispatch=dispatch)
                    ],
                    "dispatch_url": admin_url("admin:rooms_app_dispatch_change", dispatch.pk),
                }
            )
        return Response(
            {
                "room_name": state.room_name,
                "status": state.status,
                "sid": state.sid,
                "num_participants": state.num_participants,
                "agents": agents,
                "checked_at": timezone.now(),
            }
        )
