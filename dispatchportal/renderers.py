"""The project's JSON renderer: never crashes on a string UTF-8 cannot encode.

Input with lone surrogates is refused by `dispatchportal.parsers`, but an answer may still
echo something that did not come through it (a header, a stored value): such a string is
written with JSON escapes (`"\\udc80"`) instead of failing the response with a 500."""

from __future__ import annotations

from typing import Any

from rest_framework import renderers


class JSONRenderer(renderers.JSONRenderer):
    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            # per instance: DRF builds a renderer per response (its stubs call it a ClassVar)
            self.ensure_ascii = True  # type: ignore[misc]
            return super().render(data, accepted_media_type, renderer_context)
