"""REST endpoints of the dispatch lifecycle and the LiveKit webhook receiver.

Thin views: validate input, call one service or selector, serialize the answer. Errors are
the project's exceptions, turned into `{"error", "detail"}` by the project's handler.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from agents_app.authentication import IsApiClientOrStaffWith, request_scope
from dispatchportal.exceptions import Conflict, NotFound
from dispatchportal.openapi import ErrorSerializer, call_examples, error
from dispatchportal.serializers import (
    MAX_METADATA_BYTES,
    DeploymentField,
    LiveKitName,
    StrictCharField,
    StrictSerializer,
)

from . import api_docs
from .models import Dispatch
from .selectors import dispatch_get, dispatch_next_attempt, dispatch_timeline, room_state
from .services import dispatch_api_create, dispatch_cancel
from .webhooks import webhook_receive


class DispatchEventSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    previous_status = serializers.CharField()
    status = serializers.CharField()
    detail = serializers.CharField()


class TimelineStepSerializer(serializers.Serializer):
    key = serializers.ChoiceField(
        choices=["trigger", "requested", "job_assigned", "joined", "left", "verdict"]
    )
    label = serializers.CharField()  # type: ignore[assignment]  # a field named like DRF's Field attribute
    at = serializers.DateTimeField(allow_null=True)
    state = serializers.ChoiceField(choices=["done", "failed", "waiting", "skipped"])
    detail = serializers.CharField()
    since_previous_s = serializers.FloatField(
        allow_null=True,
        help_text="Seconds since the dated step before it; null for the first or an undated step.",
    )


class DispatchOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    room_name = serializers.CharField(source="room.name")
    agent_name = serializers.CharField()
    status = serializers.ChoiceField(choices=Dispatch.Status.choices)
    source = serializers.ChoiceField(choices=Dispatch.Source.choices)  # type: ignore[assignment]  # a field named like DRF's Field attribute
    delivery = serializers.ChoiceField(choices=Dispatch.Delivery.choices)
    attempt = serializers.IntegerField()
    metadata = serializers.CharField()
    livekit_dispatch_id = serializers.CharField()
    participant_identity = serializers.CharField(help_text="The agent's participant identity once joined.")
    last_error = serializers.CharField()
    created_at = serializers.DateTimeField()
    requested_at = serializers.DateTimeField(allow_null=True)
    job_assigned_at = serializers.DateTimeField(allow_null=True)
    joined_at = serializers.DateTimeField(allow_null=True)
    left_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    deadline_at = serializers.DateTimeField(allow_null=True)
    replaces = serializers.IntegerField(source="previous_id", allow_null=True)
    replaced_by = serializers.IntegerField(
        allow_null=True, help_text="The next attempt, when this one failed and was re-dispatched."
    )
    events = DispatchEventSerializer(
        many=True, help_text="The recorded events, oldest first."
    )  # Meta.ordering
    timeline = TimelineStepSerializer(
        many=True,
        help_text="The dispatch's life as the admin draws it: the token or trigger, dispatch requested, "
        "job assigned, then the agent joined or the verdict.",
    )


def _dispatch_body(dispatch: Dispatch) -> dict[str, Any]:
    nxt = dispatch_next_attempt(dispatch=dispatch)
    dispatch.replaced_by = nxt.pk if nxt else None  # type: ignore[attr-defined]
    dispatch.timeline = dispatch_timeline(dispatch=dispatch)  # type: ignore[attr-defined]
    return DispatchOutputSerializer(dispatch).data


MAX_ID = 2**63 - 1  # PostgreSQL's bigint: a larger id would be a database error, not a 404


def _dispatch_id(raw: str) -> int:
    """The id in the URL; anything that is not one (`abc`, `-1`, 20 digits) is a JSON 404."""
    if raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_ID:
        return int(raw)
    raise NotFound(f"no dispatch {raw!r}: ids are positive integers", field="dispatch_id")


_DISPATCH_ID = OpenApiParameter(
    "dispatch_id",
    OpenApiTypes.INT,
    OpenApiParameter.PATH,
    description="The dispatch's id: `id` in the answer of POST /api/v1/dispatches, e.g. 41.",
)
_ROOM_NAME = OpenApiParameter(
    "room_name",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The room, e.g. demo-1.",
    examples=[OpenApiExample("demo room", value="demo-1")],
)


def _who(request: Any) -> str:
    scope = request_scope(request)
    return scope.client.name if scope.client is not None else f"staff:{request.user.get_username()}"


@extend_schema_serializer(component_name="AlreadyDispatched")
class AlreadyDispatchedSerializer(ErrorSerializer):
    """The error body, with the live dispatch the agent already has."""

    metadata_applied = serializers.BooleanField(
        help_text="False when the metadata you sent differs from the live dispatch's: it was NOT applied."
    )
    dispatch = DispatchOutputSerializer(help_text="The live dispatch.")


class DispatchCreateApi(APIView):
    """Ask for an agent in a room (explicit dispatch), within the client's scope."""

    permission_classes = [IsApiClientOrStaffWith]
    staff_permissions = {"POST": ("rooms_app.add_dispatch",)}

    # Named components: every view's nested serializer is called Input/Output.
    @extend_schema_serializer(component_name="DispatchCreateInput")
    class InputSerializer(StrictSerializer):
        room_name = LiveKitName(help_text="e.g. 'demo-3'; must match one of your key's room patterns.")
        agent_name = LiveKitName(max_length=128, help_text="One of your agents, e.g. 'demo-agent'.")
        metadata = StrictCharField(
            required=False,
            allow_blank=True,
            help_text="Job metadata (ctx.job.metadata), e.g. '{\"ticket\": 1234}'. Default: the agent's "
            "default metadata.",
        )

        deployment = DeploymentField(
            help_text="LiveKit's dispatch deployment: only workers registered with it take the job, e.g. 'staging'.",
        )
        attributes = serializers.DictField(
            child=StrictCharField(allow_blank=True),
            required=False,
            help_text='LiveKit\'s dispatch attributes for the job, e.g. {"tier": "gold"}.',
        )

        def validate_metadata(self, value: str) -> str:
            if len(value.encode()) > MAX_METADATA_BYTES:
                raise serializers.ValidationError(f"Over {MAX_METADATA_BYTES} bytes.")
            return value

    @extend_schema(
        operation_id="dispatch_create",
        summary=api_docs.DISPATCH_CREATE_SUMMARY,
        description=api_docs.DISPATCH_CREATE_DESCRIPTION,
        request=InputSerializer,
        responses={
            202: OpenApiResponse(DispatchOutputSerializer, description="Recorded; the agent is on its way."),
            409: OpenApiResponse(
                AlreadyDispatchedSerializer,
                description="The agent already has a live dispatch in the room (from a token, a rule, "
                "reconcile or an earlier call): nothing was created.",
            ),
            400: error("Malformed JSON, a wrong type or size; the field is named."),
            401: error("Missing, unknown or disabled key."),
            403: error(
                "Room outside the client's patterns, agent disabled, or a staff session without "
                "add permission on dispatches."
            ),
            404: error("Unknown agent, or one the client may not name (answered alike)."),
        },
        examples=call_examples(*api_docs.DISPATCH_CREATE_CALLS),
    )
    def post(self, request: Any) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        dispatch, created = dispatch_api_create(
            client=request_scope(request).client,
            requested_by=_who(request),
            room_name=values["room_name"],
            agent_name=values["agent_name"],
            metadata=values.get("metadata"),
            deployment=values["deployment"],
            attributes=values.get("attributes"),
        )
        if created:
            return Response(_dispatch_body(dispatch), status=status.HTTP_202_ACCEPTED)
        asked = values.get("metadata")
        applied = asked is None or asked == dispatch.metadata
        detail = (
            f"'{dispatch.agent_name}' already has a live dispatch in '{dispatch.room.name}' "
            f"(#{dispatch.pk}, {dispatch.status}, from {dispatch.get_source_display().lower()}): nothing was created"
        )
        if not applied:
            detail += (
                "; the metadata you sent was NOT applied (the agent keeps the live dispatch's). Cancel "
                f"that dispatch (DELETE /api/v1/dispatches/{dispatch.pk}) and ask again to change it"
            )
        body = {
            "error": "already_dispatched",
            "detail": detail,
            "metadata_applied": applied,
            "dispatch": _dispatch_body(dispatch),
        }
        return Response(body, status=status.HTTP_409_CONFLICT)


class DispatchDetailApi(APIView):
    """One dispatch with its timeline; DELETE cancels it and removes the agent."""

    permission_classes = [IsApiClientOrStaffWith]
    staff_permissions = {"GET": ("rooms_app.view_dispatch",), "DELETE": ("rooms_app.change_dispatch",)}

    @extend_schema(
        operation_id="dispatch_retrieve",
        summary=api_docs.DISPATCH_RETRIEVE_SUMMARY,
        description=api_docs.DISPATCH_RETRIEVE_DESCRIPTION,
        parameters=[_DISPATCH_ID],
        examples=call_examples(*api_docs.DISPATCH_RETRIEVE_CALLS),
        responses={
            200: DispatchOutputSerializer,
            401: error("Missing, unknown or disabled key."),
            403: error("A staff session without view permission on dispatches."),
            404: error("No such dispatch in the client's rooms."),
        },
    )
    def get(self, request: Any, dispatch_id: str) -> Response:
        dispatch = dispatch_get(dispatch_id=_dispatch_id(dispatch_id), scope=request_scope(request))
        return Response(_dispatch_body(dispatch))

    @extend_schema(
        operation_id="dispatch_cancel",
        summary=api_docs.DISPATCH_CANCEL_SUMMARY,
        description=api_docs.DISPATCH_CANCEL_DESCRIPTION,
        parameters=[_DISPATCH_ID],
        examples=call_examples(*api_docs.DISPATCH_CANCEL_CALLS),
        responses={
            202: OpenApiResponse(
                DispatchOutputSerializer, description="Cancelled; the LiveKit dispatch is being deleted."
            ),
            401: error("Missing, unknown or disabled key."),
            403: error("A staff session without change permission on dispatches."),
            404: error("No such dispatch in the client's rooms."),
            409: error("The dispatch had already ended."),
        },
    )
    def delete(self, request: Any, dispatch_id: str) -> Response:
        dispatch = dispatch_get(dispatch_id=_dispatch_id(dispatch_id), scope=request_scope(request))
        if not dispatch_cancel(dispatch=dispatch, by=_who(request)):
            dispatch.refresh_from_db()
            raise Conflict(f"dispatch {dispatch.pk} has already ended ({dispatch.status})")
        return Response(_dispatch_body(dispatch), status=status.HTTP_202_ACCEPTED)


class WantedAgentSerializer(serializers.Serializer):
    agent_name = serializers.CharField()
    status = serializers.ChoiceField(choices=Dispatch.Status.choices)
    dispatch_id = serializers.IntegerField()
    attempt = serializers.IntegerField()
    source = serializers.CharField()  # type: ignore[assignment]  # a field named like DRF's Field attribute
    participant_identity = serializers.CharField()
    joined_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField()
    waiting_for_livekit_since = serializers.DateTimeField(
        allow_null=True,
        help_text="Set while LiveKit is unreachable and the dispatch waits to be sent (it keeps waiting).",
    )
    agents_removed = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        help_text="Agent participants of this name the portal removed from the room, with why: a second "
        "agent of one name, or the agent of a cancelled dispatch.",
    )


class RoomDetailApi(APIView):
    """Which agents the portal wants in a room and whether they are there.

    A browser asks this instead of only waiting for a participantConnected event it may have
    missed (the agent can join before the browser connects)."""

    permission_classes = [IsApiClientOrStaffWith]
    staff_permissions = {"GET": ("rooms_app.view_room",)}

    @extend_schema_serializer(component_name="RoomState")
    class OutputSerializer(serializers.Serializer):
        room_name = serializers.CharField()
        status = serializers.CharField(
            help_text="unknown, pending (token minted, not started), active or finished."
        )
        sid = serializers.CharField()
        num_participants = serializers.IntegerField()
        ready = serializers.BooleanField(
            help_text="Every wanted agent has joined (false when none is wanted)."
        )
        agents = WantedAgentSerializer(many=True)

    @extend_schema(
        operation_id="room_retrieve",
        summary=api_docs.ROOM_SUMMARY,
        description=api_docs.ROOM_DESCRIPTION,
        parameters=[_ROOM_NAME],
        examples=call_examples(*api_docs.ROOM_CALLS),
        responses={
            200: OutputSerializer,
            401: error("Missing, unknown or disabled key."),
            403: error(
                "Room outside the client's room patterns, or a staff session without view permission on rooms."
            ),
        },
    )
    def get(self, request: Any, room_name: str) -> Response:
        state = room_state(room_name=room_name, scope=request_scope(request))
        body = {
            "room_name": state.room_name,
            "status": state.status,
            "sid": state.sid,
            "num_participants": state.num_participants,
            "ready": state.ready,
            "agents": state.agents,
        }
        return Response(self.OutputSerializer(body).data)


class LiveKitWebhookApi(APIView):
    """LiveKit's webhooks (configure LiveKit's `webhook.urls` to this path, signed with the
    portal's API key). The body is read raw: its hash is part of the signature."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="WebhookAck")
    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()
        event = serializers.CharField()
        id = serializers.CharField()
        duplicate = serializers.BooleanField(help_text="Already handled (LiveKit redelivered it).")

    @extend_schema(
        operation_id="livekit_webhook",
        summary=api_docs.WEBHOOK_SUMMARY,
        description=api_docs.WEBHOOK_DESCRIPTION,
        request={"application/webhook+json": OpenApiTypes.OBJECT},
        responses={
            200: OutputSerializer,
            400: error(
                "Signed, but not a LiveKit WebhookEvent, or names or ids LiveKit never sends; nothing "
                "recorded."
            ),
            401: error("Bad signature or body hash; nothing recorded."),
        },
        examples=call_examples(*api_docs.WEBHOOK_CALLS),
    )
    def post(self, request: Any) -> Response:
        outcome = webhook_receive(body=request.body, authorization=request.META.get("HTTP_AUTHORIZATION", ""))
        body = {"ok": True, "event": outcome.event, "id": outcome.event_id, "duplicate": outcome.duplicate}
        return Response(self.OutputSerializer(body).data)
