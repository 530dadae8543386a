"""What the API docs (`/api/docs/`, the OpenAPI schema) show callers: the one error shape and
worked examples that pair a request with the answer it gets.

An example is a `Call`: a name, the request body (or none, for a GET), the status and the body
it is answered with. Its request and its answer share one name in the schema, so a reader, and
`tests/test_api_examples.py`, can tell which answer belongs to which request. The examples are
written for the demo client that `manage.py demo_setup` creates (rooms `demo-*`, agent
`demo-agent`): with its key every success example succeeds as documented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema_serializer
from rest_framework import serializers


@extend_schema_serializer(component_name="Error")
class ErrorSerializer(serializers.Serializer):
    """Every error under /api/ and /livekit/ has this body."""

    error = serializers.CharField(
        help_text="A code to branch on: invalid, malformed_json, unauthenticated, forbidden, not_found, "
        "conflict, already_dispatched, unsupported_media_type, method_not_allowed, rate_limited, server_error."
    )
    detail = serializers.JSONField(
        help_text='A sentence, or {"field": ["message"]} naming the field at fault '
        '(nested fields with dots: "grants.hidden").'
    )


@dataclass(frozen=True)
class Call:
    """One worked example: `request` (None for a GET/DELETE) answered with `status` and `response`."""

    name: str
    summary: str
    status: int
    response: Any
    request: Any = None
    description: str = ""
    media_type: str = "application/json"  # the request's


def call_examples(*calls: Call) -> list[OpenApiExample]:
    """The calls as OpenAPI examples: each request (first one is Swagger UI's default) and its answer."""
    examples = []
    for call in calls:
        if call.request is not None:
            examples.append(
                OpenApiExample(
                    call.name,
                    summary=f"{call.summary} ({call.status})",
                    description=call.description,
                    value=call.request,
                    request_only=True,
                    media_type=call.media_type,
                )
            )
        examples.append(
            OpenApiExample(
                call.name,
                summary=call.summary,
                description=call.description,
                value=call.response,
                response_only=True,
                status_codes=[str(call.status)],
            )
        )
    return examples


def error(description: str) -> OpenApiResponse:
    """An error response: the `Error` body; its examples come from the operation's calls."""
    return OpenApiResponse(ErrorSerializer, description=description)


# Answers every authenticated operation can give, with the exact bodies.
UNAUTHENTICATED = Call(
    "No key",
    "No Authorization header",
    401,
    {"error": "unauthenticated", "detail": "Authentication credentials were not provided."},
    description="Send `Authorization: Bearer dpk_...`. An unknown key is answered 401 'Unknown API key.', "
    "a disabled client's 'This API client is disabled.'",
)
