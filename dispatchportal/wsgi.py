"""WSGI entry point for gunicorn: Django's own handler, with what the first request would
otherwise load done at import.

Django imports the URLconf (every view, DRF, the schema generator) at the first request, and
Celery its message machinery (`app.amqp`, the result backend, found by scanning entry points,
and the broker's transport class) at the first task sent, which every token sends. Done
here instead, it happens once in gunicorn's master (`preload_app`), not in every worker. None
of it opens a connection: the broker connection and its pool are made at the first send, in
the worker (`tests/test_startup.py`)."""

import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dispatchportal.settings")

application = get_wsgi_application()
get_resolver().url_patterns  # noqa: B018

from dispatchportal.celery import app as _celery  # noqa: E402  (after Django is set up)

_celery.amqp  # noqa: B018
_celery.backend  # noqa: B018
_celery.connection_for_write().get_transport_cls()  # the class; no connection is made
