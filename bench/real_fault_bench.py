"""LiveKit's own server down for 60 s (SIGKILL, then started again on the same ports) while 50
dispatches are in flight: the suite's fault test at full size, printing how long recovery took,
how many attempts it needed, and that no room got two agents.

    .venv/bin/python bench/real_fault_bench.py

(REAL_FAULT_DISPATCHES=50, REAL_FAULT_DOWN_S=60, REAL_FAULT_WORKERS=5, REAL_FAULT_DEADLINE_S=10 by
default: one worker process holds about ten rooms on this machine.)
"""

from __future__ import annotations

import os
import sys

from _common import pytest_run

if __name__ == "__main__":
    os.environ.setdefault("REAL_FAULT_DISPATCHES", "50")
    os.environ.setdefault("REAL_FAULT_DOWN_S", "60")
    os.environ.setdefault("REAL_FAULT_WORKERS", "5")
    os.environ.setdefault("REAL_FAULT_DEADLINE_S", "10")
    sys.exit(pytest_run("tests/real_stories/test_faults.py"))
