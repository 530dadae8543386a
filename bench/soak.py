"""Soak (issue 21 item 3), opt-in (`make soak`, not part of `make bench`): gunicorn (2 sync workers)
and a Celery worker on PostgreSQL and Redis, with the LiveKit emulator, under a steady load
of token requests and room webhooks for SOAK_S seconds (default 600). Prints the resident
memory (RSS, summed over each process tree) of gunicorn and Celery at the start, every
`--every` seconds and at the end, with /proc/loadavg on each line, then the change over the
whole soak, over its second half and over its last third (a process that has finished
warming up grows no more later than earlier: on this machine the portal's workers took about
eight minutes of this load to level off). Last, the same load through the portal's WSGI application in
this process, with tracemalloc: the Python objects left behind per token (with its six
webhooks), after a warm-up, so a leak of Python objects is told apart from the allocator's
own growth.

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
import urllib.error
import urllib.request
from collections import Counter
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


def _kinds(failures: Counter[str]) -> str:
    return " (" + ", ".join(f"{kind} {n}" for kind, n in failures.most_common()) + ")" if failures else ""


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def python_heap_growth(*, key: str, tokens: int, warm: int = 300) -> tuple[int, int]:
    """(bytes of Python objects still allocated after `tokens` tokens and their webhooks, in
    allocations) in this process, through the portal's WSGI application; measured after `warm`
    tokens, with garbage collected before each snapshot."""
    import gc
    import io
    import tracemalloc
    import warnings

    warnings.filterwarnings("ignore", "No directory at")  # whitenoise: no collected static here
    from dispatchportal.wsgi import application

    def post(path: str, body: bytes, headers: dict[str, str]) -> None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            **headers,
        }
        status: list[str] = []
        answer = application(environ, lambda s, h: status.append(s))
        b"".join(answer)
        answer.close()
        if not status[0].startswith(("200", "201")):
            raise SystemExit(f"in-process {path} answered {status[0]}")

    def one(n: int) -> None:
        body = json.dumps({"room_name": f"bench-heap-{n}", "participant_identity": "caller"}).encode()
        post(
            "/api/v1/token", body, {"CONTENT_TYPE": "application/json", "HTTP_AUTHORIZATION": f"Bearer {key}"}
        )
        for event in sb.room_events(1_000_000 + n):
            post(
                "/livekit/webhook",
                event,
                {"CONTENT_TYPE": "application/webhook+json", "HTTP_AUTHORIZATION": sb.signed(event)},
            )

    for n in range(warm):
        one(n)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for n in range(warm, warm + tokens):
            one(n)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    diff = after.compare_to(before, "filename")
    return sum(d.size_diff for d in diff), sum(d.count_diff for d in diff)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_S", "600")))
    parser.add_argument(
        "--rate", type=float, default=20.0, help="tokens per second (each room also gets 6 webhooks)"
    )
    parser.add_argument("--every", type=float, default=60.0, help="seconds between RSS samples")
    parser.add_argument("--heap-tokens", type=int, default=1500, help="tokens in the in-process heap check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        services = lb.Services(Path(tmp))
        if not lb.django_and_emulator_start(services):
            return 2
        try:
            lb.portal_start(services)  # sync workers, as bin/run-portal runs the portal
            lb.worker_start(services)
            web = f"http://127.0.0.1:{services.web_port}"
            lb.wait_until(
                lambda: sb._no_proxy.open(f"{web}/healthz", timeout=2).status == 200,
                timeout=60,
                what="gunicorn",
            )
            with lb.redis_flushed():
                from agents_app.services import api_client_create

                lb.agent_and_rule(join_deadline_s=30)
                # A limit well above the soak's pace: at the default 600 a minute a soak at 20
                # tokens a second is refused part of its tokens (429), which measures the limit.
                _, key = api_client_create(
                    name="soak", room_patterns=["*"], rate_limit_per_minute=int(args.rate * 60 * 2)
                )
                stop = threading.Event()
                sent = {"tokens": 0, "webhooks": 0}
                failures: Counter[str] = Counter()

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
                                sb.webhook_post(web, event)
                                sent["webhooks"] += 1
                        except urllib.error.HTTPError as exc:
                            failures[f"HTTP {exc.code}"] += 1
                        except OSError as exc:
                            failures[type(exc).__name__] += 1
                        stop.wait(1 / args.rate)

                gunicorn = services.processes["gunicorn"].pid
                worker = services.processes["worker"].pid
                thread = threading.Thread(target=load, daemon=True)
                thread.start()
                time.sleep(min(30.0, args.seconds / 10))  # warm: imports, connections, first caches
                start = (tree_rss_mib(gunicorn), tree_rss_mib(worker))
                print(
                    f"start: gunicorn {start[0]:.1f} MiB, celery {start[1]:.1f} MiB; /proc/loadavg {loadavg()}",
                    flush=True,
                )
                began = time.monotonic()
                samples = [(0.0, *start)]
                while (elapsed := time.monotonic() - began) < args.seconds:
                    time.sleep(min(args.every, args.seconds - elapsed))
                    at = time.monotonic() - began
                    samples.append((at, tree_rss_mib(gunicorn), tree_rss_mib(worker)))
                    print(
                        f"{at:5.0f} s: gunicorn {samples[-1][1]:.1f} MiB, celery {samples[-1][2]:.1f} MiB; "
                        f"/proc/loadavg {loadavg()}",
                        flush=True,
                    )
                end = samples[-1][1:]
                stop.set()
                thread.join(30)
                half = min(samples, key=lambda s: abs(s[0] - args.seconds / 2))
                third = min(samples, key=lambda s: abs(s[0] - args.seconds * 2 / 3))
                print(
                    f"soak {args.seconds:.0f} s: {sent['tokens']} tokens, {sent['webhooks']} webhooks, "
                    f"{failures.total()} errors{_kinds(failures)}; RSS change gunicorn {end[0] - start[0]:+.1f} MiB "
                    f"(second half {end[0] - half[1]:+.1f}, last third {end[0] - third[1]:+.1f}), "
                    f"celery {end[1] - start[1]:+.1f} MiB (second half {end[1] - half[2]:+.1f}, "
                    f"last third {end[1] - third[2]:+.1f})"
                )
                if args.heap_tokens > 0:
                    # A client of its own: the check asks for tokens as fast as the process answers,
                    # beyond the soak client's per-minute limit (the soak has just used most of it).
                    _, heap_key = api_client_create(
                        name="soak-heap", room_patterns=["*"], rate_limit_per_minute=1_000_000
                    )
                    grown, blocks = python_heap_growth(key=heap_key, tokens=args.heap_tokens)
                    print(
                        f"python heap in process: {grown / 1024:+.0f} KiB ({blocks:+d} allocations) after "
                        f"{args.heap_tokens} tokens and {6 * args.heap_tokens} webhooks, "
                        f"{grown / args.heap_tokens:+.0f} B per token"
                    )
        finally:  # a failed check must not leave the portal, worker and emulator running
            services.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
