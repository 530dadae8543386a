"""Benchmark of the LiveKit emulator at portal scale (issue 3).

Starts `python -m livekit_emulator` as a subprocess (so its memory can be measured on its own),
seeds 10,000 rooms with two participants each through the control API, then measures through
the real `livekit.api.LiveKitAPI` client over HTTP:

- ListRooms wall time for all rooms (target < 1 s),
- CreateDispatch p50 over a few hundred calls (target < 2 ms),
- the emulator's resident memory, VmRSS from /proc (target < 500 MB).

Prints the figures as plain lines; exits 1 if a target is missed.
Run: `.venv/bin/python bench/emulator_bench.py`
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from livekit import api

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livekit_emulator import ControlClient  # noqa: E402 (needs the path above)

ROOMS = 10_000
PARTICIPANTS_PER_ROOM = 2
SEED_BATCH = 1_000
LIST_ROOMS_RUNS = 3
DISPATCH_WARMUP = 20
DISPATCH_CALLS = 300
API_KEY = "bench-key"
API_SECRET = "bench-secret-long-enough-for-pyjwt-0123456789"

TARGET_LIST_ROOMS_S = 1.0
TARGET_DISPATCH_P50_MS = 2.0
TARGET_RSS_MB = 500.0


def start_emulator() -> tuple[subprocess.Popen[str], str, str]:
    command = [
        sys.executable,
        "-m",
        "livekit_emulator",
        "--port",
        "0",
        "--control-port",
        "0",
        "--keys",
        f"{API_KEY}:{API_SECRET}",
        "--log-level",
        "WARNING",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    banner = process.stdout.readline()
    urls = re.findall(r"http://[\d.]+:\d+", banner)
    if len(urls) != 2:
        process.kill()
        raise SystemExit(f"emulator did not start: {banner!r}")
    return process, urls[0], urls[1]


def seed(control: ControlClient) -> float:
    started = time.perf_counter()
    for first in range(0, ROOMS, SEED_BATCH):
        control.create_rooms(
            [
                {
                    "name": f"bench-{i}",
                    "participants": [{"identity": f"user-{n}"} for n in range(PARTICIPANTS_PER_ROOM)],
                }
                for i in range(first, min(first + SEED_BATCH, ROOMS))
            ]
        )
    return time.perf_counter() - started


async def measure(url: str) -> tuple[list[float], int, list[float]]:
    async with api.LiveKitAPI(url, API_KEY, API_SECRET) as lk:
        list_times = []
        count = 0
        for _ in range(LIST_ROOMS_RUNS):
            started = time.perf_counter()
            listed = await lk.room.list_rooms(api.ListRoomsRequest())
            list_times.append(time.perf_counter() - started)
            count = len(listed.rooms)

        dispatch_times = []
        for i in range(DISPATCH_WARMUP + DISPATCH_CALLS):
            request = api.CreateAgentDispatchRequest(room=f"bench-{i % ROOMS}", agent_name="bench-agent")
            started = time.perf_counter()
            await lk.agent_dispatch.create_dispatch(request)
            if i >= DISPATCH_WARMUP:
                dispatch_times.append(time.perf_counter() - started)
        return list_times, count, dispatch_times


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kilobytes = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return kilobytes / 1024


def main() -> int:
    process, url, control_url = start_emulator()
    try:
        control = ControlClient(control_url)
        seed_s = seed(control)
        list_times, count, dispatch_times = asyncio.run(measure(url))
        memory = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)

    list_worst = max(list_times)
    p50_ms = statistics.median(dispatch_times) * 1000
    p95_ms = statistics.quantiles(dispatch_times, n=20)[-1] * 1000
    print(f"rooms seeded: {ROOMS} x {PARTICIPANTS_PER_ROOM} participants in {seed_s:.2f} s")
    print(
        f"ListRooms ({count} rooms): worst {list_worst * 1000:.0f} ms, runs {[round(t * 1000) for t in list_times]} ms"
    )
    print(f"CreateDispatch over {len(dispatch_times)} calls: p50 {p50_ms:.2f} ms, p95 {p95_ms:.2f} ms")
    print(f"emulator RSS: {memory:.0f} MB")

    missed = []
    if count != ROOMS:
        missed.append(f"ListRooms returned {count} rooms, expected {ROOMS}")
    if list_worst >= TARGET_LIST_ROOMS_S:
        missed.append(f"ListRooms {list_worst:.2f} s >= {TARGET_LIST_ROOMS_S} s")
    if p50_ms >= TARGET_DISPATCH_P50_MS:
        missed.append(f"CreateDispatch p50 {p50_ms:.2f} ms >= {TARGET_DISPATCH_P50_MS} ms")
    if memory >= TARGET_RSS_MB:
        missed.append(f"RSS {memory:.0f} MB >= {TARGET_RSS_MB} MB")
    for line in missed:
        print(f"TARGET MISSED: {line}")
    print("all targets met" if not missed else f"{len(missed)} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
