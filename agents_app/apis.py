"""REST endpoints: the LiveKit-standard token endpoint and rule explain.

Each view validates its input, calls one service and serializes the answer.
- `token_view` (POST /api/v1/token, the route every join takes) is a plain Django view: it
  does without DRF's per-request `Request`, negotiation and throttling machinery, and keeps
  the API's authentication (`ApiClientAuthentication`), error bodies (the project's
  exception handler) and renderer (`JSONRenderer`). `TokenApiSchema` describes it in the
  OpenAPI schema (`openapi_endpoints` puts it there).
- `ExplainApi` runs DRF's own `dispatch`: authentication, permission checks, the exception
  handler and the renderer."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from dispatchportal import metrics
from dispatchportal.exceptions import ApplicationError, Forbidden, exception_handler
from dispatchportal.openapi import call_examples, error
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

from . import api_docs
from .authentication import (
    ApiClientAuthentication,
    ClientPrincipal,
    IsApiClient,
    IsApiClientOrStaffWith,
    request_scope,
)
from .models import Agent
from .rules import KINDS, MAX_PATTERN_LENGTH, Join, RuleError, RuleSpec, rule_compile
from .selectors import Scope
from .services import RateLimited, rules_explain, token_mint
from .token_request import token_request_from_body


class AgentRequestSerializer(StrictSerializer):
    agent_name = StrictCharField(
        max_length=128, allow_blank=True, help_text="One of your own agents, e.g. 'demo-agent'."
    )
    metadata = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=MAX_METADATA_BYTES,
        help_text='Job metadata for the agent (ctx.job.metadata), e.g. \'{"topic": "billing"}\'.',
    )
    deployment = DeploymentField()


class RoomConfigSerializer(StrictSerializer):
    """Only `agents` (and `name`, ignored: the room is `room_name`): other RoomConfiguration
    fields are the operator's, refused with 403."""

    agents = AgentRequestSerializer(
        many=True,
        required=False,
        help_text="Agents you ask for yourself: only for a client allowed to, and only its own agents. "
        "A rule that gives the same agent wins.",
    )
    name = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=MAX_NAME_LENGTH,
        help_text="Ignored; the room is room_name.",
    )


class GrantsSerializer(StrictSerializer):
    """What the participant may do; each true must be within your client's grant ceiling (by
    default publish, subscribe and publish data; not update own metadata, not hidden)."""

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


@extend_schema_serializer(component_name="TokenAgent")
class TokenAgentSerializer(serializers.Serializer):
    agent_name = serializers.CharField(help_text="The name the agent's worker registers with.")
    rule = serializers.CharField(
        help_text="The rule that gave the agent, or 'client' when room_config.agents asked for it."
    )
    metadata = serializers.CharField(help_text="The job metadata the agent receives, a JSON string.")
    delivery = serializers.ChoiceField(
        choices=["token", "explicit"],
        help_text="token: in this token, dispatched by LiveKit when this join creates the room; "
        "explicit: the portal dispatches it through LiveKit's API.",
    )


@extend_schema_serializer(component_name="TokenDispatch")
class TokenDispatchSerializer(serializers.Serializer):
    room_exists = serializers.BooleanField(
        help_text="The room was already live, so LiveKit would ignore agents in a token: they are "
        "dispatched explicitly instead."
    )
    agents = TokenAgentSerializer(
        many=True, help_text="The agents this join brings; empty when no rule matches."
    )


ALLOWED_METHODS = "POST, OPTIONS"


@csrf_exempt  # keys only: no session, so no CSRF
def token_view(request: HttpRequest) -> HttpResponse:
    """LiveKit's standard token endpoint (what `TokenSource.endpoint` calls): POST mints one
    token with the key's client; OPTIONS answers the allowed methods; any other method is 405.
    Every answer, errors included, is JSON from the API's renderer; every answer to a POST is
    counted by client and outcome (no database write)."""
    if request.method == "OPTIONS":
        return HttpResponse(status=200, headers={"Allow": ALLOWED_METHODS})
    if request.method != "POST":
        status, body, headers = _token_error(request, exceptions.MethodNotAllowed(str(request.method)))
        return _token_json(body, status=status, headers={**headers, "Allow": ALLOWED_METHODS})
    client = ""
    try:
        principal = _token_authenticate(request)
        client = principal.client.name
        status, body, headers = 201, _token_minted(request, principal), {}
    except (ApplicationError, exceptions.APIException) as exc:
        status, body, headers = _token_error(request, exc)
    metrics.token_response_record(client=client, status=status, body=body)
    return _token_json(body, status=status, headers=headers)


def _token_json(body: Any, *, status: int, headers: dict[str, str]) -> HttpResponse:
    return HttpResponse(
        JSONRenderer().render(body), status=status, content_type="application/json", headers=headers
    )


def _token_authenticate(request: HttpRequest) -> ClientPrincipal:
    """The key's principal, by the API's own authentication; a request without a key is 401,
    a staff session included (tokens are minted for API clients only)."""
    found = ApiClientAuthentication().authenticate(request)
    if found is None:
        raise exceptions.NotAuthenticated()
    principal: ClientPrincipal = found[0]
    return principal


def _token_minted(request: HttpRequest, principal: ClientPrincipal) -> dict[str, Any]:
    token_request = token_request_from_body(_json_body(request))
    minted = token_mint(client=principal.client, request=token_request, config=principal.config)
    return {
        "server_url": minted.server_url,
        "participant_token": minted.participant_token,
        "room_name": minted.room_name,
        "participant_identity": minted.participant_identity,
        "dispatch": {
            "room_exists": minted.room_exists,
            "agents": [
                {"agent_name": a.agent_name, "rule": a.rule, "metadata": a.metadata, "delivery": a.delivery}
                for a in minted.agents
            ],
        },
    }


def _token_error(
    request: HttpRequest, exc: ApplicationError | exceptions.APIException
) -> tuple[int, Any, dict[str, str]]:
    """The status and body the project's exception handler gives `exc`, as for every DRF view,
    with the challenge of a 401 and the wait of a 429 as headers."""
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        headers["WWW-Authenticate"] = ApiClientAuthentication().authenticate_header(request)
    response = exception_handler(exc, {"request": request})
    assert response is not None  # the handler answers every ApplicationError and APIException
    return response.status_code, response.data, headers


class TokenApiSchema(APIView):
    """`token_view` as the OpenAPI schema shows it. drf-spectacular describes DRF views only,
    so this class carries the endpoint's authentication, request, answers and examples, and
    `openapi_endpoints` puts it at the endpoint's path; a URL routes it nowhere. Its POST
    hands the request to `token_view`, so it answers as the endpoint does wherever it is
    used."""

    permission_classes = [IsApiClient]
    authentication_classes = [ApiClientAuthentication]
    renderer_classes = [JSONRenderer]

    # The body as the schema shows it; `token_request_parse` validates it (a test keeps the two
    # in step).
    @extend_schema_serializer(component_name="TokenRequest")
    class InputSerializer(StrictSerializer):
        """LiveKit's standard token request; every field is optional."""

        room_name = LiveKitName(
            required=False,
            allow_blank=True,
            help_text="e.g. 'demo-1'; must match one of your key's room patterns. Omit it to have the "
            "room named by your client's room-name template.",
        )
        participant_identity = LiveKitName(
            required=False,
            allow_blank=True,
            help_text="e.g. 'ann'; unique within the room. Omitted: 'user-' and 12 random hex digits.",
        )
        participant_name = StrictCharField(
            required=False,
            allow_blank=True,
            max_length=MAX_NAME_LENGTH,
            help_text="Display name, e.g. 'Ann'.",
        )
        participant_metadata = StrictCharField(
            required=False, allow_blank=True, max_length=MAX_METADATA_BYTES
        )
        participant_attributes = AttributesField(required=False)
        room_config = RoomConfigSerializer(required=False)
        ttl = serializers.IntegerField(
            required=False,
            min_value=60,
            help_text="Token lifetime in seconds, e.g. 3600; at most your client's maximum (6 hours by "
            "default). Extension to LiveKit's format.",
        )
        grants = GrantsSerializer(
            required=False,
            help_text="Extension to LiveKit's format: ask for fewer rights, or more within your ceiling.",
        )

    @extend_schema_serializer(component_name="TokenResponse")
    class OutputSerializer(serializers.Serializer):
        server_url = serializers.CharField(help_text="LiveKit's address for the client, e.g. wss://…")
        participant_token = serializers.CharField(help_text="The JWT to connect with.")
        room_name = serializers.CharField(help_text="The room (named by the template when you sent none).")
        participant_identity = serializers.CharField()
        dispatch = TokenDispatchSerializer(help_text="Which agents come, and how.")

    @extend_schema(
        operation_id="token_create",
        summary=api_docs.TOKEN_SUMMARY,
        description=api_docs.TOKEN_DESCRIPTION,
        request=InputSerializer,
        responses={
            201: OutputSerializer,
            400: error(
                "Malformed JSON, a wrong type, or a name or size LiveKit rejects; the field is named."
            ),
            401: error("Missing, unknown or disabled key."),
            403: error(
                "Room, agent, grant or TTL outside your key's scope, or a room_config field other than "
                "agents; the field is named."
            ),
            415: error("The body is not JSON."),
            429: error("Over your client's rate limit; retry after Retry-After seconds."),
        },
        examples=call_examples(*api_docs.TOKEN_CALLS),
    )
    def post(self, request: Any) -> HttpResponse:
        return token_view(request._request)


def openapi_endpoints(endpoints: list[tuple[str, str, str, Any]]) -> list[tuple[str, str, str, Any]]:
    """drf-spectacular's preprocessing hook (settings.SPECTACULAR_SETTINGS): adds the token
    endpoint, a plain Django view the generator does not list, at its routed path."""
    path = reverse("agents:token")
    return [*endpoints, (path, path.lstrip("/"), "POST", TokenApiSchema.as_view())]


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


class RuleVerdictSerializer(serializers.Serializer):
    rule = serializers.CharField(help_text="The rule's name.")
    agent_name = serializers.CharField()
    outcome = serializers.ChoiceField(
        choices=["applied", "shadowed", "agent_disabled", "not_matched", "not_evaluated", "disabled"]
    )
    reason = serializers.CharField(help_text="e.g. \"matched glob 'demo-*'\".")
    stop = serializers.BooleanField(help_text="A matching stop rule ends evaluation.")


@extend_schema_serializer(component_name="ExplainedAgent")
class ExplainedAgentSerializer(TokenAgentSerializer):
    deployment = serializers.CharField(help_text="LiveKit's dispatch deployment, '' for none.")
    attributes = serializers.DictField(
        child=serializers.CharField(), help_text="LiveKit's dispatch attributes."
    )


class RoomConfigAgentSerializer(serializers.Serializer):
    agent_name = serializers.CharField()
    metadata = serializers.CharField()
    deployment = serializers.CharField(required=False, help_text="Present only when set.")


class RoomConfigOutSerializer(serializers.Serializer):
    agents = RoomConfigAgentSerializer(many=True, help_text="The agents with token delivery.")


@extend_schema_serializer(component_name="Explanation")
class ExplanationSerializer(serializers.Serializer):
    room_name = serializers.CharField()
    participant_identity = serializers.CharField()
    rules = RuleVerdictSerializer(many=True, help_text="Every rule you may see, in evaluation order.")
    agents = ExplainedAgentSerializer(many=True, help_text="The agents the join gets.")
    room_config = RoomConfigOutSerializer(help_text="The RoomConfiguration a token would carry.")
    token_claims = serializers.DictField(
        help_text="The claims of the token it would mint (LiveKit's JWT claims: video grant, attributes, "
        "roomConfig, sub)."
    )


class ExplainApi(APIView):
    """Why does this room get that agent? Every rule's verdict for a sample join."""

    permission_classes = [IsApiClientOrStaffWith]
    staff_permissions = {"POST": ("agents_app.view_dispatchrule",)}

    DraftRuleSerializer = DraftRuleSerializer

    @extend_schema_serializer(component_name="ExplainRequest")
    class InputSerializer(StrictSerializer):
        room_name = LiveKitName(help_text="The sample join's room, e.g. 'demo-1'.")
        participant_identity = LiveKitName(required=False, allow_blank=True, help_text="e.g. 'ann'.")
        participant_name = StrictCharField(required=False, allow_blank=True)
        participant_attributes = serializers.DictField(
            child=StrictCharField(allow_blank=True),
            required=False,
            help_text='As a token request would carry them, e.g. {"role": "customer"}.',
        )
        draft_rule = DraftRuleField(required=False, help_text="An unsaved rule to try.")

    @extend_schema(
        operation_id="rules_explain",
        summary=api_docs.EXPLAIN_SUMMARY,
        description=api_docs.EXPLAIN_DESCRIPTION,
        request=InputSerializer,
        responses={
            200: ExplanationSerializer,
            400: error("Invalid input or draft rule; the field is named (draft fields as draft_rule.*)."),
            401: error("Missing, unknown or disabled key."),
            403: error(
                "Room outside your key's patterns, or a staff session without view permission on dispatch rules."
            ),
        },
        examples=call_examples(*api_docs.EXPLAIN_CALLS),
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
        return Response(rules_explain(join=join, draft=draft, scope=scope).as_json())

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
