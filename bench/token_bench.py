"""Token throughput: the portal's token endpoint against the floor and references, one run.

Four targets, each sent the same request by the same load generator (wrk):
  endpoint  POST /api/v1/token under gunicorn with the portal's own configuration
            (dispatchportal/gunicorn_conf.py, 2 sync workers) and 100 rules loaded, three
            of which match the room, so every token carries three agents and is recorded
            (one INSERT of its fact) before the answer;
  minimal   a minimal Django app (bench/minimal_app.py) under gunicorn (2 sync workers): no
            middleware at all, it parses the standard body and mints the same token (the same
            three agents) with `AccessToken`;
  bare      POST /bench/bare-token in the portal's server: a view that only signs a join
            token, but inside the portal's full middleware stack;
  node      a minimal express + livekit-server-sdk token server, as LiveKit's example does it.
The portal runs on PostgreSQL and Redis, DEBUG off; `BENCH_DATABASE_URL=sqlite:///var/bench.sqlite3
BENCH_REDIS_URL=` measures the embedded defaults instead (the target is for PostgreSQL + Redis).
Rounds alternate the targets so drift in the machine's load hits all alike; the median round
is reported, and each ratio is the median of the rounds' ratios.

    .venv/bin/python bench/token_bench.py [--duration 5] [--rounds 3] [--connections 16]

Needs wrk (`apt-get install -y wrk`), node and npm. Target: endpoint >= 0.5 of minimal's
requests per second. Exits 1 when it is missed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    HIT_AGENTS,
    LIVEKIT_API_KEY,
    LIVEKIT_API_SECRET,
    ROOT,
    TOKEN_BODY,
    backends,
    bench_env,
    django_setup,
    machine,
    redis_flush,
    ruleset_load,
    services_prepare,
)

RULES = 100
RATIO_TARGET = 0.50  # endpoint / minimal
NODE_DIR = ROOT / "bench" / "node_token_server"


@dataclass
class Target:
    name: str
    label: str
    url: str


@dataclass
class Result:
    requests_per_s: float
    p50_ms: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port} within {timeout_s} s")


def _post(url: str, key: str) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(TOKEN_BODY).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # workers boot slowly on a busy machine
        if response.status != 201:
            raise SystemExit(f"{url} answered {response.status}")
        return json.loads(response.read())


def _check(target: Target, key: str) -> dict:
    """One request before the load: the target must really mint what we think it mints."""
    from livekit.api import TokenVerifier

    body = _post(target.url, key)
    claims = TokenVerifier(LIVEKIT_API_KEY, LIVEKIT_API_SECRET).verify(body["participant_token"])
    if claims.video.room != TOKEN_BODY["room_name"] or claims.identity != TOKEN_BODY["participant_identity"]:
        raise SystemExit(f"{target.name}: token for the wrong room or identity")
    if target.name in ("endpoint", "minimal"):
        agents = sorted(a.agent_name for a in claims.room_config.agents)
        if agents != sorted(HIT_AGENTS):
            raise SystemExit(f"{target.name}: expected the token to carry {sorted(HIT_AGENTS)}, got {agents}")
    return body


def _wrk_script(key: str) -> str:
    body = json.dumps(TOKEN_BODY).replace("\\", "\\\\").replace("'", "\\'")
    return "\n".join(
        [
            'wrk.method = "POST"',
            f"wrk.body = '{body}'",
            'wrk.headers["Content-Type"] = "application/json"',
            f'wrk.headers["Authorization"] = "Bearer {key}"',
        ]
    )


def _wrk(url: str, script: Path, *, duration: int, connections: int, threads: int) -> Result:
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    out = done.stdout
    if done.returncode != 0:
        raise SystemExit(f"wrk failed on {url}:\n{out}\n{done.stderr}")
    # A benchmark of error pages would be meaningless: every answer must be a 201.
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise SystemExit(f"{url}: {non_2xx.group(1)} answers were not 2xx:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors and (int(errors.group(1)) or int(errors.group(3)) or int(errors.group(4))):
        raise SystemExit(f"{url}: socket errors:\n{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
    if not rps or not p50:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    return Result(float(rps.group(1)), float(p50.group(1)) * scale)


def _node_server(port: int) -> subprocess.Popen:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise SystemExit("node and npm are needed for the Node reference server")
    if not (NODE_DIR / "node_modules" / "livekit-server-sdk").exists():
        subprocess.run([npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"], check=True)
    env = {**bench_env(), "PORT": str(port), "NODE_ENV": "production"}
    return subprocess.Popen([node, "server.mjs"], cwd=NODE_DIR, env=env, stdout=subprocess.DEVNULL)


def _minimal_server(port: int, agents: list[dict], workers: int) -> subprocess.Popen:
    env = {**bench_env(), "BENCH_MINIMAL_AGENTS": json.dumps(agents)}
    env.pop("DJANGO_SETTINGS_MODULE")  # it configures itself
    command = [sys.executable, "-m", "gunicorn", "bench.minimal_app", "--workers", str(workers)]
    command += ["--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
    return subprocess.Popen(command, cwd=ROOT, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per target per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (the machine's cores are shared)")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="gunicorn sync workers of each Python target (on 2 cores, 4 measured lower for both)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")

    load = machine()
    django_setup()
    services_prepare()
    key = ruleset_load(RULES)
    # The facts earlier runs recorded (no Celery worker applies them here): every run starts
    # from an empty table, as a portal whose facts are applied and swept does.
    from rooms_app.models import TokenFact

    TokenFact.objects.all().delete()

    django_port, node_port, minimal_port = _free_port(), _free_port(), _free_port()
    servers: list[subprocess.Popen] = []
    try:
        servers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    "dispatchportal/gunicorn_conf.py",
                    "dispatchportal.wsgi",
                    "--workers",
                    str(args.workers),
                    "--bind",
                    f"127.0.0.1:{django_port}",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=bench_env(),
            )
        )
        servers.append(_node_server(node_port))
        _wait_listening(django_port, servers[0], "gunicorn")
        _wait_listening(node_port, servers[1], "node token server")

        base = f"http://127.0.0.1:{django_port}"
        endpoint = Target(
            "endpoint",
            f"endpoint /api/v1/token ({RULES} rules, {len(HIT_AGENTS)} agents per token)",
            f"{base}/api/v1/token",
        )
        # The minimal app mints exactly the agents (and job metadata) the portal gave.
        agents = _check(endpoint, key)["dispatch"]["agents"]
        servers.append(_minimal_server(minimal_port, agents, args.workers))
        _wait_listening(minimal_port, servers[2], "minimal Django app")
        targets = [
            endpoint,
            Target(
                "minimal",
                "minimal Django app (no middleware) + AccessToken",
                f"http://127.0.0.1:{minimal_port}/token",
            ),
            Target(
                "bare",
                "bare AccessToken view /bench/bare-token (portal middleware)",
                f"{base}/bench/bare-token",
            ),
            Target("node", "node express + livekit-server-sdk", f"http://127.0.0.1:{node_port}/token"),
        ]
        for target in targets:
            _check(target, key)

        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "token.lua"
            script.write_text(_wrk_script(key))
            for target in targets:  # warm up: both workers compile the rules, JITs settle
                _wrk(target.url, script, duration=2, connections=args.connections, threads=args.threads)
            results: dict[str, list[Result]] = {t.name: [] for t in targets}
            for _ in range(args.rounds):
                for target in targets:
                    results[target.name].append(
                        _wrk(
                            target.url,
                            script,
                            duration=args.duration,
                            connections=args.connections,
                            threads=args.threads,
                        )
                    )
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        redis_flush()  # the rate-limit counters and task messages of thousands of tokens

    print(
        f"token bench: gunicorn {args.workers} sync workers each, {backends()}; wrk -t{args.threads} -c{args.connections}, "
        f"{args.rounds} rounds x {args.duration} s per target, median round, ratios paired per round; {load}"
    )
    median: dict[str, float] = {}
    for target in targets:
        runs = results[target.name]
        median[target.name] = statistics.median(r.requests_per_s for r in runs)
        rounds = ", ".join(f"{r.requests_per_s:.0f}" for r in runs)
        p50 = statistics.median(r.p50_ms for r in runs)
        print(f"{target.label}: {median[target.name]:.0f} req/s (rounds: {rounds}; p50 {p50:.2f} ms)")

    # Paired: each round's endpoint and bare runs are seconds apart, so the machine's load
    # (shared, drifting) hits both alike; the median of those ratios is the figure.
    def paired(other: str) -> list[float]:
        return [
            e.requests_per_s / o.requests_per_s
            for e, o in zip(results["endpoint"], results[other], strict=True)
        ]

    per_round = paired("minimal")
    ratio = statistics.median(per_round)
    ok = ratio >= RATIO_TARGET
    rounds = ", ".join(f"{r:.2f}" for r in per_round)
    print(
        f"ratio endpoint/minimal: {ratio:.3f} (median of rounds {rounds}; target >= {RATIO_TARGET:.2f}) "
        f"{'OK' if ok else 'MISSED'}"
    )
    print(f"ratio endpoint/bare: {statistics.median(paired('bare')):.2f}")
    print(f"ratio endpoint/node: {statistics.median(paired('node')):.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
