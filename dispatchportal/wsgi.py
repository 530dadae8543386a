"""WSGI entry point for gunicorn: Django's own handler, with the URLconf loaded at import.

Django imports the URLconf (every view, DRF, the schema generator) at the first request.
Done here instead, it happens once in gunicorn's master (`preload_app`), not in every worker."""

import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dispatchportal.settings")

application = get_wsgi_application()
get_resolver().url_patterns  # noqa: B018
