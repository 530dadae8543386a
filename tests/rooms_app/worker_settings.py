"""Settings for the Celery worker subprocess the end-to-end tests start: the project's, plus

- the test session's queue as the default, so tasks the worker sends itself (join-deadline
  checks, re-dispatches) come back to it and never reach another worker on the same broker;
- Redis handing a killed worker's unacknowledged task back within seconds instead of an hour;
- the filesystem broker polled every 50 ms instead of every second;
- without Redis, a file cache of its own that the test process shares.
"""

import os

from dispatchportal.settings import *  # noqa: F403
from dispatchportal.settings import CELERY_BROKER_TRANSPORT_OPTIONS, REDIS_URL

CELERY_TASK_DEFAULT_QUEUE = os.environ["ROOMS_TEST_QUEUE"]

if REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **CELERY_BROKER_TRANSPORT_OPTIONS,
        "visibility_timeout": 4,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {**CELERY_BROKER_TRANSPORT_OPTIONS, "polling_interval": 0.05}
    # The test process reads the same file cache (room-live markers), and empties it per test.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": os.environ["ROOMS_TEST_CACHE_DIR"],
        }
    }
