"""Dispatch latency on LiveKit's own server with a real livekit-agents worker, the portal's live
server and a real Celery worker: p50/p95 over 20 rooms, explicit and token paths, from the
portal's call to the job running, the agent present, and the ledger's agent_joined.

Runs `tests/real_stories/measure_dispatch.py` under pytest (it reuses the suite's fixtures:
`livekit-server`, workers, Celery); needs `.bin/livekit-server` (`make livekit-server`).

    .venv/bin/python bench/real_dispatch_bench.py          # REAL_BENCH_ROOMS=20 by default
"""

from __future__ import annotations

import sys

from _common import pytest_run

if __name__ == "__main__":
    sys.exit(pytest_run("tests/real_stories/measure_dispatch.py"))
