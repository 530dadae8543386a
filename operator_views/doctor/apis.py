"""`GET /api/v1/rooms/{room_name}/diagnosis`: the dispatch doctor over HTTP.

The same walk as `manage.py doctor`, for a frontend's "agent not here?" screen or a support
tool. Thin view: validate the query, scope the room, call `room_diagnose`, serialize.
A LiveKit outage is an answer here (200, `status: livekit_unavailable`, `exit_code: 2`), not
an error: the diagnosis says which link failed and why.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from agents_app.authentication import IsApiClientOrStaffWith, request_scope
from dispatchportal.exceptions import Forbidden
from dispatchportal.openapi import call_examples, error
from dispatchportal.serializers import LiveKitName, name_schema

from . import api_docs
from .checks import room_diagnose
from .verdicts import BROKEN, OK, UNKNOWN
from .wording import HEALTHY, LIVEKIT_UNAVAILABLE, WAITING


class DiagnosisLinkSerializer(serializers.Serializer):
    number = serializers.IntegerField(help_text="1 to 8, in the order of the chain.")
    key = serializers.CharField(help_text="e.g. 'job'.")
    title = serializers.CharField()
    state = serializers.ChoiceField(choices=[OK, BROKEN, UNKNOWN])
    summary = serializers.CharField()
    details = serializers.ListField(child=serializers.CharField())
    cause = serializers.CharField(help_text="Why it is broken, in plain words (broken links only).")
    fix = serializers.CharField(help_text="What to do about it (broken links only).")


class RoomDiagnosisApi(APIView):
    """Why is (or isn't) the agent in this room? Each link of the dispatch chain, with the
    cause and the fix at the first broken one."""

    permission_classes = [IsApiClientOrStaffWith]
    staff_permissions = {"GET": ("rooms_app.view_dispatch",)}  # as the admin's doctor page

    class InputSerializer(serializers.Serializer):
        room_name = LiveKitName()
        agent = LiveKitName(required=False, allow_blank=True)
        identity = LiveKitName(required=False, allow_blank=True)

    @extend_schema_serializer(component_name="RoomDiagnosis")
    class OutputSerializer(serializers.Serializer):
        room_name = serializers.CharField()
        agent = serializers.CharField(allow_null=True, help_text="The agent asked about, if any.")
        identity = serializers.CharField(allow_null=True)
        checked_at = serializers.DateTimeField()
        livekit_url = serializers.CharField(
            help_text="The LiveKit server asked: its API address for staff, its public address "
            "(PUBLIC_LIVEKIT_URL) for a client key."
        )
        room_live = serializers.BooleanField(help_text="LiveKit has the room now.")
        status = serializers.ChoiceField(choices=[HEALTHY, WAITING, "broken", LIVEKIT_UNAVAILABLE])
        exit_code = serializers.IntegerField(
            help_text="As `manage.py doctor`: 0 healthy, 1 broken, 2 LiveKit unavailable."
        )
        summary = serializers.CharField()
        first_broken_link = serializers.IntegerField(allow_null=True)
        cause = serializers.CharField()
        fix = serializers.CharField()
        expected_agents = serializers.ListField(child=serializers.CharField())
        links = DiagnosisLinkSerializer(many=True)

    @extend_schema(
        operation_id="room_diagnosis",
        summary=api_docs.SUMMARY,
        description=api_docs.DESCRIPTION,
        examples=call_examples(*api_docs.CALLS),
        parameters=[
            OpenApiParameter(
                "room_name",
                name_schema(),
                OpenApiParameter.PATH,
                required=True,
                description="The room, e.g. demo-3.",
                examples=[OpenApiExample("demo room", value="demo-3")],
            ),
            OpenApiParameter("agent", name_schema(), description="Only this agent name, e.g. support-agent."),
            OpenApiParameter(
                "identity", name_schema(), description="Evaluate the rules for this participant identity."
            ),
        ],
        responses={
            200: OutputSerializer,
            400: error("Invalid room name, agent or identity."),
            401: error("Missing, unknown or disabled key."),
            403: error(
                "Room outside the client's room patterns, or neither a key nor a staff session with "
                "view permission on dispatches."
            ),
        },
    )
    def get(self, request: Any, room_name: str) -> Response:
        data = self.InputSerializer(data={"room_name": room_name, **request.query_params.dict()})
        data.is_valid(raise_exception=True)
        values = data.validated_data
        scope = request_scope(request)
        if not scope.room_allowed(values["room_name"]):
            raise Forbidden(f"room '{room_name}' is outside this client's room patterns", field="room_name")
        diagnosis = room_diagnose(
            room_name=values["room_name"],
            agent_name=values.get("agent"),
            identity=values.get("identity"),
            scope=scope,
        )
        return Response(self.OutputSerializer(diagnosis.as_dict()).data)
