"""Gunicorn configuration: `gunicorn -c dispatchportal/gunicorn_conf.py dispatchportal.wsgi`.

- Prometheus multiprocess bookkeeping: the master and every worker must agree on
  `PROMETHEUS_MULTIPROC_DIR` before prometheus_client is first imported (the library picks its
  storage at import), and a worker that exits must be marked dead so its live gauges go away.
- `preload_app`: the master imports Django and the portal once, before it listens and forks,
  so every worker answers from its first request instead of importing on its own (seconds
  each, longer on a busy machine, while the master already accepted connections for it), and
  the workers share the imported code's memory. A code change then needs a restart, not a
  HUP. Nothing at import opens a database, cache, Redis or broker connection (the portal opens
  them lazily, per process: `tests/test_startup.py` holds it); `pre_fork` closes any the
  master holds all the same, because a socket inherited across fork would be shared by two
  processes and mix their replies.
Bind address and worker count stay on the command line (`bin/run-portal`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_base = Path(__file__).resolve().parent.parent
_var = Path(os.environ.get("DISPATCHPORTAL_VAR_DIR") or _base / "var")
# The same default as settings.py, so a bare `gunicorn -c ...` agrees with Celery and manage.py.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_var / "prometheus"))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

from prometheus_client import multiprocess  # noqa: E402  (needs the directory set first)

preload_app = True


def pre_fork(server, worker) -> None:
    if "django.db" in sys.modules:
        from django.core.cache import caches
        from django.db import connections

        connections.close_all()
        caches.close_all()


def child_exit(server, worker) -> None:
    multiprocess.mark_process_dead(worker.pid)
