from __future__ import annotations

from collections.abc import Iterator

import pytest

from dispatchportal.celery import app as celery_app
from tests.receiver import other_receiver, receiver  # noqa: F401  (fixtures)


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Run tasks in-process at once (retries included, without their countdown)."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous
