"""Runs every benchmark (`bench/*_bench.py`) in turn, as `make bench` does.

Each runs in its own process with this interpreter; its output is shown as it comes. Exits
non-zero when any benchmark fails, which includes missing its target; the others still run.

    .venv/bin/python bench/run_all.py [NAME ...]   # e.g. token rules; default: all
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def main() -> int:
    wanted = set(sys.argv[1:])
    scripts = sorted(
        p for p in BENCH_DIR.glob("*_bench.py") if not wanted or p.name.removesuffix("_bench.py") in wanted
    )
    if not scripts:
        print(f"no benchmark matches {sorted(wanted)}", file=sys.stderr)
        return 2
    failed = []
    for script in scripts:
        print(f"=== {script.name}", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, str(script)], cwd=BENCH_DIR.parent)
        print(
            f"=== {script.name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - start:.0f} s\n",
            flush=True,
        )
        if code != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(scripts)} benchmarks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
