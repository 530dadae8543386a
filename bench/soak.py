"""Soak (issue 21 item 3), opt-in (`make soak`, not part of `make bench`): gunicorn (2 workers)
and a Celery worker on PostgreSQL and Redis, with the LiveKit emulator, under a steady load
of token requests and room webhooks for SOAK_S seconds (default 600). Prints the resident
memory (RSS, summed over each process tree) of gunicorn and Celery at the start and the end,
and /proc/loadavg with each line.

Uses scale_bench's database and Redis (SCALE_BENCH_DATABASE_URL, SCALE_BENCH_REDIS_URL).

    .venv/bin/python bench/soak.py [--seconds 600] [--rate 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import scale_bench as sb

lb = sb.lb


def tree_rss_mib(pid: int) -> float:
    """RSS of `pid` and its children (gunicorn's master and workers), MiB."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    total = 0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_S", "600")))
    parser.add_argument(
        "--rate", type=float, default=20.0, help="tokens per second (each room also gets 6 webhooks)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        services = lb.Services(Path(tmp))
        if not lb.django_and_emulator_start(services):
            return 2
        lb.portal_start(services, threads=4)
        lb.worker_start(services)
        web = f"http://127.0.0.1:{services.web_port}"
        lb.wait_until(
            lambda: sb._no_proxy.open(f"{web}/healthz", timeout=2).status == 200, timeout=60, what="gunicorn"
        )
        with lb.redis_flushed():
            from agents_app.services import api_client_create

            lb.agent_and_rule(join_deadline_s=30)
            _, key = api_client_create(name="soak", room_patterns=["*"])
            stop = threading.Event()
            sent = {"tokens": 0, "webhooks": 0, "errors": 0}

            def load() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    body = json.dumps(
                        {"room_name": f"bench-soak-{n}", "participant_identity": "caller"}
                    ).encode()
                    request = urllib.request.Request(
                        f"{web}/api/v1/token",
                        data=body,
                        method="POST",
                        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
                    )
                    try:
                        sb._no_proxy.open(request, timeout=30).read()
                        sent["tokens"] += 1
                        for event in sb.room_events(n):
                            hook = urllib.request.Request(
                                f"{web}/livekit/webhook",
                                data=event,
                                method="POST",
                                headers={
                                    "Content-Type": "application/webhook+json",
                                    "Authorization": sb.signed(event),
                                },
                            )
                            sb._no_proxy.open(hook, timeout=30).read()
                            sent["webhooks"] += 1
                    except OSError:
                        sent["errors"] += 1
                    stop.wait(1 / args.rate)

            gunicorn = services.processes["gunicorn"].pid
            worker = services.processes["worker"].pid
            thread = threading.Thread(target=load, daemon=True)
            thread.start()
            time.sleep(min(30.0, args.seconds / 10))  # warm: imports, connections, first caches
            start = (tree_rss_mib(gunicorn), tree_rss_mib(worker))
            print(
                f"start: gunicorn {start[0]:.0f} MiB, celery {start[1]:.0f} MiB; /proc/loadavg {loadavg()}",
                flush=True,
            )
            time.sleep(args.seconds)
            end = (tree_rss_mib(gunicorn), tree_rss_mib(worker))
            stop.set()
            thread.join(30)
            print(f"end:   gunicorn {end[0]:.0f} MiB, celery {end[1]:.0f} MiB; /proc/loadavg {loadavg()}")
            print(
                f"soak {args.seconds:.0f} s: {sent['tokens']} tokens, {sent['webhooks']} webhooks, "
                f"{sent['errors']} errors; RSS change gunicorn {end[0] - start[0]:+.0f} MiB, "
                f"celery {end[1] - start[1]:+.0f} MiB"
            )
        services.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
