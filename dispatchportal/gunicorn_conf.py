"""Gunicorn configuration: `gunicorn -c dispatchportal/gunicorn_conf.py dispatchportal.wsgi`.

Its one job is Prometheus multiprocess bookkeeping: the master and every worker must agree on
`PROMETHEUS_MULTIPROC_DIR` before prometheus_client is first imported (the library picks its
storage at import), and a worker that exits must be marked dead so its live gauges go away.
Bind address and worker count stay on the command line (`bin/run-portal`).
"""

from __future__ import annotations

import os
from pathlib import Path

_base = Path(__file__).resolve().parent.parent
_var = Path(os.environ.get("DISPATCHPORTAL_VAR_DIR") or _base / "var")
# The same default as settings.py, so a bare `gunicorn -c ...` agrees with Celery and manage.py.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_var / "prometheus"))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

from prometheus_client import multiprocess  # noqa: E402  (needs the directory set first)


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    multiprocess.mark_process_dead(worker.pid)
