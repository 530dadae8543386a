"""The API docs' examples are true: every example request, sent with the key of the demo client
that `manage.py demo_setup` creates (as `make run` does), gets the status the docs pair it with,
and its answer has the documented shape and fits the documented response schema (as does the
documented example); every documented answer without a request of its own
(401 without a key, 404, 409, 415, 429, a bad webhook signature) is provoked and compared too.

LiveKit is the emulator, with a worker registered as 'demo-agent' (as `make run` has one)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from io import StringIO
from typing import Any

import jsonschema
import jwt
import pytest
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from agents_app.services import api_client_create
from rooms_app.services import token_facts_apply

pytestmark = pytest.mark.django_db(transaction=True)

# In the order a newcomer would try them: the dispatch examples need the dispatch made first.
OPERATIONS = [
    ("post", "/api/v1/token"),
    ("post", "/api/v1/rules/explain"),
    ("post", "/api/v1/dispatches"),
    ("get", "/api/v1/dispatches/{dispatch_id}"),
    ("get", "/api/v1/rooms/{room_name}"),
    ("get", "/api/v1/rooms/{room_name}/diagnosis"),
    ("delete", "/api/v1/dispatches/{dispatch_id}"),
    ("post", "/livekit/webhook"),
]


def shape(value: Any) -> Any:
    """What a body looks like, not what it says: keys, list items, value types."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else type(value).__name__


def same_shape(documented: Any, actual: Any, path: str = "") -> list[str]:
    """Where the two differ; null on either side stands for any value of that field."""
    if documented is None or actual is None:
        return []
    if isinstance(documented, dict) and isinstance(actual, dict):
        problems = [f"{path}.{k}: documented, not answered" for k in documented.keys() - actual.keys()]
        problems += [f"{path}.{k}: answered, not documented" for k in actual.keys() - documented.keys()]
        for k in documented.keys() & actual.keys():
            problems += same_shape(documented[k], actual[k], f"{path}.{k}")
        return problems
    if isinstance(documented, list) and isinstance(actual, list):
        if bool(documented) != bool(actual):
            return [f"{path}: documented {len(documented)} item(s), answered {len(actual)}"]
        return same_shape(documented[0], actual[0], f"{path}[0]") if documented else []
    return [] if documented == actual else [f"{path}: documented {documented}, answered {actual}"]


def openapi_to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema says it (the rest is JSON Schema already)."""
    if isinstance(node, list):
        return [openapi_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    converted = {k: openapi_to_json_schema(v) for k, v in node.items() if k != "nullable"}
    return {"anyOf": [converted, {"type": "null"}]} if node.get("nullable") else converted


def schema_problems(schema: dict, operation: dict, status: int, body: Any) -> list[str]:
    """Where the answer breaks the response schema the docs give for that status."""
    content = operation["responses"][str(status)].get("content", {})
    documented = next(iter(content.values()))["schema"] if content else None
    if documented is None:
        return [f"no response schema documented for {status}"]
    root = openapi_to_json_schema({**documented, "components": schema["components"]})
    validator = jsonschema.Draft202012Validator(root)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


def response_examples(operation: dict) -> dict[str, tuple[int, Any]]:
    """Example name -> (status, body) over every documented response."""
    found = {}
    for status, response in operation["responses"].items():
        for content in response.get("content", {}).values():
            for name, example in content.get("examples", {}).items():
                found[name] = (int(status), example["value"])
    return found


def request_examples(operation: dict) -> list[tuple[str, str, Any]]:
    return [
        (name, media_type, example["value"])
        for media_type, content in operation.get("requestBody", {}).get("content", {}).items()
        for name, example in content.get("examples", {}).items()
    ]


def livekit_signed(body: bytes, key: str, secret: str) -> str:
    now = int(time.time())
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return jwt.encode({"iss": key, "nbf": now, "exp": now + 300, "sha256": digest}, secret, algorithm="HS256")


@pytest.fixture
def demo_key() -> str:
    out = StringIO()
    call_command("demo_setup", stdout=out)
    return re.search(r"dpk_[A-Za-z0-9_-]+", out.getvalue()).group(0)


def test_every_documented_example_gets_its_documented_answer(lk, demo_key, settings):
    lk.control.add_worker("demo-agent", behavior="accept", delay_ms=0)
    schema = SchemaGenerator().get_schema(request=None, public=True)
    documented_operations = {(m, p) for p, ops in schema["paths"].items() for m in ops}
    assert documented_operations == set(OPERATIONS)

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {demo_key}")
    anonymous = APIClient()
    made: dict[str, Any] = {}
    failures: list[str] = []

    def check(where: str, response: Any, status: int, documented: Any, operation: dict) -> None:
        body = response.json()
        if response.status_code != status:
            failures.append(f"{where}: documented {status}, answered {response.status_code} {body}")
            return
        problems = same_shape(shape(documented), shape(body))
        problems += [
            f"the example breaks the schema: {p}"
            for p in schema_problems(schema, operation, status, documented)
        ]
        problems += [
            f"the answer breaks the schema: {p}" for p in schema_problems(schema, operation, status, body)
        ]
        if problems:
            failures.append(f"{where}: {'; '.join(problems)}\n    answered: {json.dumps(body)[:600]}")

    def url(path: str, operation: dict) -> str:
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "path":
                continue
            name = parameter["name"]
            value = made["dispatch_id"] if name == "dispatch_id" else parameter["examples"]
            if isinstance(value, dict):  # the parameter's documented example
                value = next(iter(value.values()))["value"]
            path = path.replace("{" + name + "}", str(value))
        return path

    for method, path in OPERATIONS:
        operation = schema["paths"][path][method]
        answers = response_examples(operation)
        assert answers, f"{method.upper()} {path} documents no example answer"
        unchecked = set(answers)
        requests = request_examples(operation)
        if requests:  # Swagger UI's "Try it out" starts from the first: it must succeed
            first = answers[requests[0][0]][0]
            assert first < 300, f"{method.upper()} {path}: the default example is answered {first}"
        for name, media_type, body in requests:
            where = f"{method.upper()} {path} example {name!r}"
            assert name in answers, f"{where}: no documented answer of that name"
            raw = json.dumps(body).encode()
            if path == "/livekit/webhook":  # LiveKit signs it with the portal's LiveKit key
                signature = livekit_signed(raw, settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
                response = anonymous.post(path, raw, content_type=media_type, HTTP_AUTHORIZATION=signature)
            else:
                response = getattr(api, method)(path, raw, content_type=media_type)
            status, documented = answers[name]
            check(where, response, status, documented, operation)
            if path == "/api/v1/dispatches" and response.status_code == 202:
                made["dispatch_id"] = response.json()["id"]
            unchecked.discard(name)
        if not requests:  # a GET or DELETE: its success answer, with the documented parameters
            # What the Celery worker does within half a second of a token: its fact reaches the ledger.
            token_facts_apply()
            [(name, (status, documented))] = [(n, a) for n, a in answers.items() if a[0] < 300]
            response = getattr(api, method)(url(path, operation))
            check(f"{method.upper()} {path} {name!r}", response, status, documented, operation)
            unchecked.discard(name)
        for name in sorted(unchecked):
            status, documented = answers[name]
            response = provoke(name, method, path, operation, api=api, anonymous=anonymous, url=url)
            check(f"{method.upper()} {path} answer {name!r}", response, status, documented, operation)
    assert not failures, "\n".join(failures)


def provoke(name: str, method: str, path: str, operation: dict, *, api, anonymous, url) -> Any:
    """A documented answer that has no example request of its own, brought about as described."""
    if name == "NoKey":
        return getattr(anonymous, method)(url(path, operation), {}, format="json")
    if name == "NoSuchDispatch":
        return getattr(api, method)(path.replace("{dispatch_id}", "999999"))
    if name == "AlreadyEnded":  # the success example cancelled it
        return api.delete(url(path, operation))
    if name == "RoomOutsideTheKey'sPatterns":
        return api.get(path.replace("{room_name}", "support-1"))
    if name == "InvalidAgentName":
        return api.get(url(path, operation), {"agent": "demo\x01agent"})
    if name == "BodyNotJSON":
        return api.post(path, "room_name=demo-1", content_type="text/plain")
    if name == "OverTheRateLimit":
        _, key = api_client_create(name="limited", room_patterns=["demo-*"], rate_limit_per_minute=1)
        limited = APIClient()
        limited.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        limited.post(path, {"room_name": "demo-1"}, format="json")
        return limited.post(path, {"room_name": "demo-1"}, format="json")
    if name == "BadSignature":
        return anonymous.post(
            path, b"{}", content_type="application/webhook+json", HTTP_AUTHORIZATION="not-a-jwt"
        )
    raise AssertionError(f"{method.upper()} {path}: no way to provoke the documented answer {name!r}")
