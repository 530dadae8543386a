"""Cold start: seconds from starting gunicorn to its first answers, with and without
`preload_app`, side by side.

For each configuration (gunicorn -c dispatchportal/gunicorn_conf.py, as `bin/run-portal` runs
it, with 2 and with 4 sync workers; PostgreSQL + Redis; 100 rules) it starts gunicorn, then
asks at once and every 10 ms:

  healthz   the first 200 from /healthz;
  token     the first 201 from the token endpoint (a database write and a Redis call);
  all       every worker has answered a token request (each worker's metrics file appears
            when it counts its first token), i.e. no connection waits on a worker still
            importing Django;
  memory    the proportional set size (PSS) of the master and its workers, once all answered:
            preloaded workers share the imported code's pages with the master.

Without preload each worker imports Django on its own after the fork (`django_celery_beat`
-> `timezone_field` walks the tz database, for one); with it the master imports once, before it
listens, and every worker answers from its first request. Targets (medians of the runs,
interleaved): where the workers outnumber the cores, with preload every worker answers sooner;
where they do not, the workers' imports run side by side on their own cores without preload
(and gunicorn spaces its forks by up to 0.1 s either way), so preload gains memory, not time,
and must not be later by more than the spread (slowest minus fastest) of the starts without
it. The seconds themselves follow the machine's load, printed before and after.

    .venv/bin/python bench/startup_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    ROOT,
    TOKEN_BODY,
    backends,
    bench_env,
    django_setup,
    machine,
    ruleset_load,
    services_prepare,
)

RULES = 100
POLL_S = 0.01
GIVE_UP_S = 60.0
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))

NO_PRELOAD_CONF = """
# dispatchportal/gunicorn_conf.py as it is, with preload_app turned off (startup_bench only).
__file__ = {path!r}
exec(compile(open(__file__).read(), __file__, "exec"), globals())
preload_app = False
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(url: str, *, key: str = "") -> int:
    data = json.dumps(TOKEN_BODY).encode() if key else None
    request = urllib.request.Request(url, data=data, method="POST" if key else "GET")
    if key:
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with _no_proxy.open(request, timeout=GIVE_UP_S) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _pss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def one_start(*, preload: bool, workers: int, key: str, folder: Path) -> dict[str, float]:
    """Start gunicorn, time its first answers, stop it."""
    conf = ROOT / "dispatchportal" / "gunicorn_conf.py"
    if not preload:
        conf = folder / "gunicorn_no_preload.py"
        conf.write_text(NO_PRELOAD_CONF.format(path=str(ROOT / "dispatchportal" / "gunicorn_conf.py")))
    prom = Path(tempfile.mkdtemp(dir=folder))
    env = {
        **bench_env(),
        "PROMETHEUS_MULTIPROC_DIR": str(prom),
        "DISPATCHPORTAL_VAR_DIR": str(folder / "var"),
    }
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "gunicorn", "-c", str(conf), "dispatchportal.wsgi"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning"]

    times: dict[str, float] = {}
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    try:

        def first(name: str, url: str, ok: int, token_key: str = "") -> None:
            while time.monotonic() - started < GIVE_UP_S and process.poll() is None:
                if _status(url, key=token_key) == ok:
                    times[name] = time.monotonic() - started
                    return
                time.sleep(POLL_S)

        probes = [
            threading.Thread(target=first, args=("healthz", base + "/healthz", 200)),
            threading.Thread(target=first, args=("token", base + "/api/v1/token", 201, key)),
        ]
        for probe in probes:
            probe.start()

        # Keep `workers` requests in flight until every worker has counted a token.
        def until_all() -> None:
            while time.monotonic() - started < GIVE_UP_S and process.poll() is None:
                if len(list(prom.glob("counter_*.db"))) >= workers:
                    times["all"] = time.monotonic() - started
                    return
                if _status(base + "/api/v1/token", key=key) == 0:  # not listening yet
                    time.sleep(POLL_S)

        senders = [threading.Thread(target=until_all) for _ in range(workers)]
        for sender in senders:
            sender.start()
        for thread in probes + senders:
            thread.join()
        if "all" not in times:
            raise SystemExit(
                f"gunicorn (preload={preload}, {workers} workers) did not answer within {GIVE_UP_S} s"
            )
        times["memory"] = _pss_mb([process.pid, *_children(process.pid)])
    finally:
        process.terminate()
        process.wait(timeout=30)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    args = parser.parse_args()

    load = machine()
    cores = os.cpu_count() or 1
    django_setup()
    services_prepare()
    key = ruleset_load(RULES)

    results: dict[tuple[int, bool], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.runs):  # interleaved, so a load spike hurts both alike
            for workers in args.workers:
                for preload in (False, True):
                    results.setdefault((workers, preload), []).append(
                        one_start(preload=preload, workers=workers, key=key, folder=Path(folder))
                    )

    print(f"startup bench: gunicorn sync workers, {backends()}, {RULES} rules; {load}")
    print(f"median of {args.runs} starts; seconds from starting gunicorn to the first answer")
    print(f"{'workers':>7} {'':>10} {'healthz':>8} {'token':>8} {'all':>8} {'PSS MB':>8}")
    missed = []
    for workers in args.workers:
        medians = {}
        for preload in (False, True):
            runs = results[(workers, preload)]
            medians[preload] = {
                k: statistics.median(r[k] for r in runs) for k in ("healthz", "token", "all", "memory")
            }
            m = medians[preload]
            label = "preload" if preload else "no preload"
            print(
                f"{workers:>7} {label:>10} {m['healthz']:>8.2f} {m['token']:>8.2f} {m['all']:>8.2f} {m['memory']:>8.0f}"
            )
        with_, without = medians[True], medians[False]
        print(
            f"{'':>7} {'ratio':>10} {with_['healthz'] / without['healthz']:>8.2f} "
            f"{with_['token'] / without['token']:>8.2f} {with_['all'] / without['all']:>8.2f} "
            f"{with_['memory'] / without['memory']:>8.2f}"
        )
        starts_without = [r["all"] for r in results[(workers, False)]]
        spread = max(starts_without) - min(starts_without)
        if workers > cores and with_["all"] >= without["all"]:
            missed.append(
                f"{workers} workers on {cores} cores: every worker answered after {with_['all']:.2f} s with preload"
            )
        if workers <= cores and with_["all"] > without["all"] + spread:
            missed.append(
                f"{workers} workers on {cores} cores: every worker answered after {with_['all']:.2f} s with preload, "
                f"more than the spread ({spread:.2f} s) past {without['all']:.2f} s without"
            )
        print(
            f"{'':>7} {'spread':>10} {'':>8} {'':>8} {spread:>8.2f}   (all, slowest minus fastest start without preload)"
        )
    print(
        f"target: {cores} cores; with more workers than cores every worker answers sooner with preload, "
        f"with no more, no later than the spread; load average after: {os.getloadavg()[0]:.2f}"
    )
    for line in missed:
        print("MISSED", line)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
