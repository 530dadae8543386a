"""Chromium (Debian's /usr/bin/chromium, never a downloaded browser) driven by Playwright's
sync API against pytest-django's live server.

Without Chromium or Playwright the browser tests skip; under REQUIRE_SERVICES=1 (CI) they
fail instead, because CI installs Chromium first (`make browser-deps`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ADMIN_PASSWORD = "pw-admin-browser-123"


def _missing() -> str:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (install it with `make browser-deps`)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing (requirements-dev.txt)"
    return ""


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("browser") is None:
        return
    missing = _missing()
    if missing:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"REQUIRE_SERVICES=1 but {missing}")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One Chromium per module. Playwright's sync API marks an event loop as running in the
    test's thread until it stops; Django then refuses ORM calls there as "async-unsafe"
    although nothing here is async, hence DJANGO_ALLOW_ASYNC_UNSAFE, for these tests only
    (module scope: the loop is gone before the next module's tests run)."""
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


SCREENS = {"1366x768": (1366, 768), "1920x1080": (1920, 1080)}


@pytest.fixture
def screen() -> str:
    """The screen size; tests that check what fits parametrize it over SCREENS."""
    return "1366x768"


@pytest.fixture
def page(browser, live_server, lk, screen) -> Iterator[object]:
    width, height = SCREENS[screen]
    context = browser.new_context(base_url=live_server.url, viewport={"width": width, "height": height})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def admin_page(page, transactional_db, django_user_model):
    """Logged in to the admin through its login form, as a person would."""
    django_user_model.objects.create_superuser("admin", "admin@example.com", ADMIN_PASSWORD)
    page.goto("/admin/login/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")
    return page


@pytest.fixture
def shot():
    """Save a full-page screenshot under test-artifacts/ (kept by CI as an artifact)."""
    ARTIFACTS.mkdir(exist_ok=True)

    def save(page, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
