"""The portal's overhead over LiveKit's own dispatch (issue 16, item 6): on LiveKit's own server
with a real livekit-agents worker, the portal's live server and a real Celery worker, portal
and native samples paired and interleaved, to the agent visible to a real participant. Prints
`path | p50 | p95 | n` of portal - native for the explicit path (POST /api/v1/dispatches vs
CreateDispatch) and the token path (POST /api/v1/token + join vs a natively minted token +
join); exits non-zero when a p50 is over 50 ms.

Runs `tests/real_stories/measure_overhead.py` under pytest (it reuses the suite's fixtures);
needs `.bin/livekit-server` (`make livekit-server`).

    .venv/bin/python bench/real_overhead_bench.py     # REAL_OVERHEAD_PAIRS=20 by default
"""

from __future__ import annotations

import sys

from _common import pytest_run

if __name__ == "__main__":
    sys.exit(pytest_run("tests/real_stories/measure_overhead.py"))
