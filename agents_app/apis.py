"""REST endpoints: the LiveKit-standard token endpoint and rule explain.

Each view validates its input, calls one service and serializes the answer. The token
endpoint's POST is served without DRF's per-request machinery (`TokenApi.dispatch`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import exceptions, serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from dispatchportal import metrics
from dispatchportal.exceptions import ApplicationError, Forbidden
from dispatchportal.parsers import json_load
from dispatchportal.renderers import JSONRenderer
from dispatchportal.serializers import (
    MAX_METADATA_BYTES,
    MAX_NAME_LENGTH,
    NO_NUL_PATTERN,
    DeploymentField,
    LiveKitName,
    StrictCharField,
    StrictSerializer,
)

from .authentication import ApiClientAuthentication, IsApiClient, IsApiClientOrStaffWith, request_scope
from .models import Agent
from .rules import KINDS, MAX_PATTERN_LENGTH, Join, RuleError, RuleSpec, rule_compile
from .selectors import Scope
from .services import RateLimited, TokenRequest, rules_explain, token_mint
from .token_request import token_request_parse


class AgentRequestSerializer(StrictSerializer):
    agent_name = StrictCharField(max_length=128, allow_blank=True)
    metadata = StrictCharField(required=False, allow_blank=True, max_length=MAX_METADATA_BYTES)
    deployment = DeploymentField()


class RoomConfigSerializer(StrictSerializer):
    """Only `agents` (and `name`, ignored: the room is `room_name`): other RoomConfiguration
    fields are the operator's, refused with 403."""

    agents = AgentRequestSerializer(many=True, required=False)
    name = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=MAX_NAME_LENGTH,
        help_text="Ignored; the room is room_name.",
    )


class GrantsSerializer(StrictSerializer):
    can_publish = serializers.BooleanField(required=False)
    can_subscribe = serializers.BooleanField(required=False)
    can_publish_data = serializers.BooleanField(required=False)
    can_update_own_metadata = serializers.BooleanField(required=False)
    hidden = serializers.BooleanField(required=False)


def _json_body(request: Any) -> Any:
    """The body as JSON, with the project JSONParser's answers (415 for another media type, 400
    for bad JSON, lone surrogates or deep nesting) without DRF's per-request parser machinery."""
    if not request.body:
        return {}
    if not request.content_type.startswith("application/json"):
        raise exceptions.UnsupportedMediaType(request.content_type)
    return json_load(request.body)


class JsonOnly(BaseContentNegotiation):
    """The token endpoint answers JSON whatever the client accepts (LiveKit's SDKs want JSON),
    which spares parsing every request's headers for Accept."""

    def select_parser(self, request: Any, parsers: Iterable[BaseParser]) -> BaseParser:
        return next(iter(parsers))

    def select_renderer(
        self, request: Any, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string", "pattern": NO_NUL_PATTERN},
        "description": 'Participant attributes, e.g. {"tier": "gold"}; names not empty.',
    }
)
class AttributesField(serializers.DictField):
    """The token's participant_attributes (validated by `token_request_parse`)."""

    child = StrictCharField(allow_blank=True)


class TokenApi(APIView):
    """LiveKit's standard token endpoint (what `TokenSource.endpoint` calls)."""

    permission_classes = [IsApiClient]
    authentication_classes = [ApiClientAuthentication]  # keys only: no session, no CSRF
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonOnly

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        """Every answer, errors included, is counted by client and outcome (no database write)."""
        if request.method == "POST":
            client = getattr(getattr(request, "auth", None), "name", "")
            metrics.token_response_record(client=client, status=response.status_code, body=response.data)
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema_serializer(component_name="TokenRequest")
    class InputSerializer(StrictSerializer):
        """The body, for the OpenAPI schema; `token_request_parse` validates it."""

        room_name = LiveKitName(required=False, allow_blank=True)
        participant_identity = LiveKitName(required=False, allow_blank=True)
        participant_name = StrictCharField(required=False, allow_blank=True, max_length=MAX_NAME_LENGTH)
        participant_metadata = StrictCharField(
            required=False, allow_blank=True, max_length=MAX_METADATA_BYTES
        )
        participant_attributes = AttributesField(required=False)
        room_config = RoomConfigSerializer(required=False)
        ttl = serializers.IntegerField(required=False, min_value=60, help_text="Seconds; extension.")
        grants = GrantsSerializer(
            required=False, help_text="Extension: ask for less or more, within the ceiling."
        )

    @extend_schema_serializer(component_name="TokenDispatch")
    class DispatchSerializer(serializers.Serializer):
        agent_name = serializers.CharField()
        rule = serializers.CharField(help_text="The rule that applied it, or 'client'.")
        metadata = serializers.CharField()
        delivery = serializers.ChoiceField(choices=["token", "explicit"])

    @extend_schema_serializer(component_name="TokenResponse")
    class OutputSerializer(serializers.Serializer):
        server_url = serializers.CharField()
        participant_token = serializers.CharField()
        room_name = serializers.CharField()
        participant_identity = serializers.CharField()
        dispatch = serializers.DictField(help_text='{"agents": [{agent_name, rule, metadata, delivery}]}')

    @extend_schema(
        request=InputSerializer,
        responses={
            201: OutputSerializer,
            400: OpenApiResponse(description="Malformed JSON, wrong types, names or sizes LiveKit rejects"),
            401: OpenApiResponse(description="Missing, unknown or disabled key"),
            403: OpenApiResponse(description="Room, agent or grant outside the client's scope"),
            415: OpenApiResponse(description="The body is not JSON"),
            429: OpenApiResponse(description="Over the client's rate limit"),
        },
    )
    def post(self, request: Any) -> Response:
        values = token_request_parse(_json_body(request))
        token_request = TokenRequest(
            room_name=values.get("room_name", ""),
            participant_identity=values.get("participant_identity", ""),
            participant_name=values.get("participant_name", ""),
            participant_metadata=values.get("participant_metadata", ""),
            participant_attributes=values.get("participant_attributes", {}),
            agents=values.get("room_config", []),
            ttl_s=values.get("ttl"),
            grants=values.get("grants", {}),
        )
        try:
            minted = token_mint(client=request.auth, request=token_request, config=request.user.config)
        except RateLimited as exc:
            return Response(
                {"error": exc.code, "detail": exc.detail},
                status=429,
                headers={"Retry-After": str(exc.retry_after)},
            )
        body = {
            "server_url": minted.server_url,
            "participant_token": minted.participant_token,
            "room_name": minted.room_name,
            "participant_identity": minted.participant_identity,
            "dispatch": {
                "room_exists": minted.room_exists,
                "agents": [
                    {
                        "agent_name": a.agent_name,
                        "rule": a.rule,
                        "metadata": a.metadata,
                        "delivery": a.delivery,
                    }
                    for a in minted.agents
                ],
            },
        }
        return Response(body, status=201)


class MatchSerializer(StrictSerializer):
    kind = serializers.ChoiceField(choices=KINDS)
    # Blank is a prefix match of everything; the other kinds refuse it (draft_rule.*_value).
    value = StrictCharField(allow_blank=True, max_length=MAX_PATTERN_LENGTH)


@extend_schema_serializer(component_name="DraftRule")
class DraftRuleSerializer(StrictSerializer):
    name = StrictCharField(required=False, default="(draft)", min_length=1)
    agent_name = StrictCharField(allow_blank=True)
    priority = serializers.IntegerField(required=False, default=100)
    room = MatchSerializer()
    identity = MatchSerializer(required=False, allow_null=True)
    attributes = serializers.DictField(child=MatchSerializer(), required=False)
    metadata_template = serializers.JSONField(
        required=False, allow_null=True, help_text="null or absent: the agent's default metadata only."
    )
    delivery = serializers.ChoiceField(choices=["token", "explicit"], required=False, default="token")
    stop = serializers.BooleanField(required=False, default=False)
    deployment = DeploymentField()
    dispatch_attributes = serializers.DictField(child=StrictCharField(allow_blank=True), required=False)


@extend_schema_field(DraftRuleSerializer)
class DraftRuleField(serializers.DictField):
    """Validated by `_draft` (its errors under `draft_rule`); the schema shows the rule."""


class ExplainApi(APIView):
    """Why does this room get that agent? Every rule's verdict for a sample join."""

    permission_classes = [IsApiClientOrStaffWith]
    staff_permissions = {"POST": ("agents_app.view_dispatchrule",)}

    DraftRuleSerializer = DraftRuleSerializer

    @extend_schema_serializer(component_name="ExplainRequest")
    class InputSerializer(StrictSerializer):
        room_name = LiveKitName()
        participant_identity = LiveKitName(required=False, allow_blank=True)
        participant_name = StrictCharField(required=False, allow_blank=True)
        participant_attributes = serializers.DictField(
            child=StrictCharField(allow_blank=True), required=False
        )
        draft_rule = DraftRuleField(required=False, help_text="An unsaved rule to try.")

    @extend_schema(
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "Explanation",
                {
                    "rules": serializers.ListField(child=serializers.DictField()),
                    "agents": serializers.ListField(child=serializers.DictField()),
                    "room_config": serializers.DictField(),
                    "token_claims": serializers.DictField(),
                },
            ),
            400: OpenApiResponse(description="Invalid input or draft rule"),
            401: OpenApiResponse(description="Not authenticated"),
            403: OpenApiResponse(
                description="Neither a client key nor a staff session with view permission on dispatch "
                "rules, or room outside the client's patterns"
            ),
        },
    )
    def post(self, request: Any) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        room = values["room_name"]
        scope = request_scope(request)
        if not scope.room_allowed(room):
            raise Forbidden(f"room '{room}' is outside this client's room patterns", field="room_name")
        draft = None
        if "draft_rule" in values:
            draft = self._draft(values["draft_rule"], scope=scope)
        join = Join(
            room_name=room,
            participant_identity=values.get("participant_identity", ""),
            participant_name=values.get("participant_name", ""),
            attributes=values.get("participant_attributes", {}),
            client=scope.client.name if scope.client else "",
        )
        return Response(rules_explain(join=join, draft=draft, scope=scope))

    def _draft(self, raw: dict[str, Any], *, scope: Scope) -> RuleSpec:
        data = self.DraftRuleSerializer(data=raw)
        if not data.is_valid():
            raise serializers.ValidationError({"draft_rule": data.errors})
        v = data.validated_data
        agent = Agent.objects.filter(agent_name=v["agent_name"]).first()
        # An agent a client may not name is unknown to it: the same answer, so names of
        # other clients' agents cannot be enumerated.
        if agent is None or not scope.agent_nameable(agent.agent_name):
            raise ApplicationError(f"unknown agent '{v['agent_name']}'", field="draft_rule.agent_name")
        identity = v.get("identity") or {}
        spec = RuleSpec(
            name=v["name"],
            agent_name=agent.agent_name,
            agent_enabled=agent.enabled,
            room_kind=v["room"]["kind"],
            room_value=v["room"]["value"],
            priority=v["priority"],
            identity_kind=identity.get("kind", ""),
            identity_value=identity.get("value", ""),
            attributes=v.get("attributes", {}),
            default_metadata=agent.default_metadata,
            metadata_template=v.get("metadata_template") or {},
            delivery=v["delivery"],
            stop=v["stop"],
            deployment=v["deployment"],
            dispatch_attributes=v.get("dispatch_attributes") or {},
        )
        try:
            rule_compile(spec)
        except RuleError as exc:
            raise ApplicationError(exc.message, field=f"draft_rule.{exc.field}") from None
        return spec
