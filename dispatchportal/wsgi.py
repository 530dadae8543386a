"""WSGI entry point for gunicorn.

The token endpoint is the hot path (every join asks it for a token): it is served by a handler
with only the middleware it uses (request ids and JSON logs, security headers), not the
admin's sessions, CSRF, messages, static files and history. Everything else goes through
the full stack. Both handlers resolve URLs with the same URLconf and run the same view.
The health endpoints (`/healthz`, `/readyz`) take the lean handler too: probes come often and
address the pod's IP, which no middleware of the lean handler checks against ALLOWED_HOSTS."""

import os
from typing import Any

from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dispatchportal.settings")

TOKEN_PATH = "/api/v1/token"
LEAN_PATHS = frozenset((TOKEN_PATH, "/healthz", "/readyz"))
TOKEN_MIDDLEWARE = (
    "dispatchportal.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
)


class LeanHandler(WSGIHandler):
    """Django's WSGI handler with a shorter middleware list (loaded once, at start-up)."""

    def __init__(self, middleware: tuple[str, ...]) -> None:
        self.lean_middleware = middleware
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        from django.conf import settings

        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = [m for m in full if m in self.lean_middleware]
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


portal = get_wsgi_application()
token_handler = LeanHandler(TOKEN_MIDDLEWARE)
# Django imports the URLconf (every view, DRF, the schema generator) at the first request.
# Done here instead, it happens once in gunicorn's master (preload_app), not in every worker.
get_resolver().url_patterns  # noqa: B018


def application(environ: dict[str, Any], start_response: Any) -> Any:
    if environ.get("PATH_INFO") in LEAN_PATHS:
        return token_handler(environ, start_response)
    return portal(environ, start_response)
