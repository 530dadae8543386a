"""Fixtures shared by every test: isolated cache, services markers, API clients, factories."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.support import point_portal_at

pytest_plugins = ["livekit_emulator.pytest_plugin", "tests.real_livekit", "tests.livekit_cluster"]

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked as needing a service skips without it, or fails under REQUIRE_SERVICES=1."""
    from tests import real_livekit  # registered above as a plugin; imported here to be rewritten

    missing = {
        "needs_redis": (not os.environ.get("REDIS_URL"), "service not configured"),
        "needs_postgres": (
            not os.environ.get("DATABASE_URL", "").startswith("postgres"),
            "service not configured",
        ),
        real_livekit.MARKER: (real_livekit.server_binary() is None, real_livekit.HOW_TO_GET),
    }
    for marker, (absent, why) in missing.items():
        if absent and item.get_closest_marker(marker):
            if REQUIRE_SERVICES:
                pytest.fail(f"REQUIRE_SERVICES=1 but {marker}: {why}")
            pytest.skip(f"{marker}: {why}")


@pytest.fixture(autouse=True)
def _tasks_settled_before_the_flush(request: pytest.FixtureRequest, django_db_blocker: Any) -> Iterator[None]:
    """After a test marked `django_db(transaction=True)`: `tasks_settle` before pytest-django
    flushes the database (its marker fixture is set up before this one, so it is torn down
    after)."""
    yield
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not (marker.kwargs.get("transaction") or (marker.args and marker.args[0])):
        return
    from tests.rooms_app.conftest import tasks_settle

    tasks_settle(django_db_blocker)


@pytest.fixture(autouse=True)
def _no_assignment_window(settings) -> None:
    """The emulator lists a job the moment its simulated worker takes it, so in-process checks
    need no assignment window; the real-server stories' Celery worker runs with the real
    server's 10 s, and tests of the window set it themselves."""
    settings.DISPATCH_ASSIGNMENT_WINDOW_S = 0


@pytest.fixture(autouse=True)
def _isolated_cache(settings, tmp_path) -> None:
    """Each test gets its own cache namespace, so counters and the rule-set change marker never leak."""
    from agents_app import selectors

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    settings.CACHE_KEY_PREFIX = prefix
    if settings.REDIS_URL:
        settings.CACHES = {
            "default": {
                "BACKEND": "dispatchportal.cache.RedisCache",
                "LOCATION": settings.REDIS_URL,
                "KEY_PREFIX": prefix,
            }
        }
    else:
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": str(tmp_path / "cache"),
            }
        }
    selectors._current = None


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def admin_user(db, django_user_model):
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "pw-admin-123")


@pytest.fixture
def staff_api(admin_user) -> APIClient:
    client = APIClient(enforce_csrf_checks=False)
    client.force_login(admin_user)
    return client


@pytest.fixture
def lk(livekit_server, settings):
    """The LiveKit emulator, with the portal's LiveKit settings pointing at it."""
    return point_portal_at(settings, livekit_server, timeout_s=2.0)
