"""JSON bodies every endpoint can trust: valid JSON, at most `MAX_JSON_DEPTH` levels deep,
and no string (value or key) that UTF-8 cannot encode or PostgreSQL cannot store (NUL).

`json.loads` accepts `"\\udc80"` (a lone UTF-16 surrogate): Python keeps it in the string, and
it crashes whatever encodes it later (the response renderer, PyJWT, the database driver), or
worse, lands in a token LiveKit's parsers refuse. Very deep nesting makes the parser itself
raise `RecursionError`. Both are refused here with a 400 naming the field, before a view sees
the body."""

from __future__ import annotations

import json
from typing import Any

from rest_framework import exceptions, parsers

MAX_JSON_DEPTH = 32
SURROGATE_MESSAGE = "Must be valid Unicode (a lone UTF-16 surrogate such as \\udc80 is not)."
NUL_MESSAGE = "Null characters are not allowed."
DEPTH_MESSAGE = f"Nested deeper than {MAX_JSON_DEPTH} levels."


def printable_key(key: str) -> str:
    """A key safe to echo in an error (its lone surrogates written as `\\udc80`)."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def text_problem(value: str) -> str | None:
    """Why UTF-8 (and so LiveKit, a JSON response) or PostgreSQL cannot carry this string."""
    if "\x00" in value:
        return NUL_MESSAGE
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_MESSAGE
    return None


def json_problems(data: Any) -> dict[str, list[str]]:
    """`{field: [message]}` for the first string that is not valid Unicode (the field named as
    a dotted path, `room_config.agents.0.metadata`) or the first value nested too deep."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        field = path or "non_field_errors"
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                return {field: [problem]}
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth >= MAX_JSON_DEPTH:
            return {field.split(".", 1)[0]: [DEPTH_MESSAGE]}  # the top-level field: short
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            name = printable_key(key) if isinstance(key, str) else str(key)
            child = f"{path}.{name}" if path else name
            if isinstance(key, str) and (problem := text_problem(key)):
                return {child: [problem]}
            stack.append((item, child, depth + 1))
    return {}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_load(body: bytes | str) -> Any:
    """The parsed body, or a 400: `malformed_json`, or `invalid` naming the field at fault."""
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise exceptions.ParseError(f"JSON parse error - {DEPTH_MESSAGE}") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise exceptions.ParseError(f"JSON parse error - {exc}") from None
    problems = json_problems(data)
    if problems:
        raise exceptions.ValidationError(problems)
    return data


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with `json_load`'s checks (the project's default parser)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return json_load(stream.read() if stream is not None else b"")
