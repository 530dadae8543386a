"""Runs one process with its output in a log file that rotates, and echoes its errors.

`bin/run-portal` starts every process (gunicorn, Celery, beat, LiveKit, the demo worker) as
`python -P dispatchportal/logpipe.py var/log/NAME.log -- COMMAND ...` (by its path, so it
imports the standard library only, not the portal; `-P` keeps this folder's `logging.py` from
hiding the standard one), so the console keeps only the lines that matter and no log grows without bound: each file rotates at `LOG_MAX_BYTES`
(10 MB) and keeps `LOG_BACKUPS` (3) old files, `NAME.log.1` the newest.

A line that reports an error (a JSON log line at ERROR or CRITICAL, as the portal writes them;
a livekit-server line at ERROR or worse) is also printed to the console as one short line
naming the process and its log file, so a problem is seen without reading the logs.

SIGTERM is passed to the process, SIGINT ignored (Ctrl-C in a terminal reaches the process
itself); this one exits with the process's exit code once its last line is written. A process
still running `STOP_GRACE_S` seconds after SIGTERM is killed: a Celery worker whose pool
processes got the same SIGTERM (a process manager, `timeout`, an IDE's stop button signal the
whole group) never finishes its warm shutdown, and would live on to take the next run's tasks.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from logging.handlers import RotatingFileHandler
from typing import TextIO

ERROR_LEVELS = frozenset({"ERROR", "CRITICAL", "FATAL", "PANIC", "DPANIC"})
# livekit-server's console format: "2026-12-03T09:12:14.534Z\tERROR\tlivekit\tfile.go:12\tmessage\t{...}"
_GO_LINE = re.compile(r"^\S+\t([A-Z]+)\t\S+\t\S+\t(.*)$")
ECHO_MAX_CHARS = 200
STOP_GRACE_S = int(os.environ.get("LOGPIPE_STOP_GRACE_S", "10"))


def error_summary(line: str) -> str | None:
    """The line in a few words when it reports an error, else None."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if isinstance(record, dict) and str(record.get("levelname", "")).upper() in ERROR_LEVELS:
            return f"{record['levelname']} {record.get('name', '')}: {record.get('message', '')}"
        return None
    match = _GO_LINE.match(line)
    if match and match.group(1) in ERROR_LEVELS:
        return f"{match.group(1)} {match.group(2)}"
    return None


def copy(lines: Iterable[str], path: str, *, console: TextIO, max_bytes: int, backups: int) -> None:
    """Every line to the rotating file at `path`; error lines also to `console`, shortened."""
    label = os.path.basename(path).removesuffix(".log")
    handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        for raw in lines:
            line = raw.rstrip("\n")
            handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
            summary = error_summary(line)
            if summary is not None:
                text = " ".join(summary.split())
                if len(text) > ECHO_MAX_CHARS:
                    text = text[: ECHO_MAX_CHARS - 1] + "…"
                console.write(f"  ! {label}: {text}  (see {path})\n")
                console.flush()
    finally:
        handler.close()


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: python -P dispatchportal/logpipe.py LOGFILE -- COMMAND [ARG ...]\n")
        return 2
    path, command = argv[1], argv[3:]
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
    )

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)
            signal.alarm(STOP_GRACE_S)

    def kill(_signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.kill()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGALRM, kill)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    assert child.stdout is not None
    copy(
        child.stdout,
        path,
        console=sys.stderr,
        max_bytes=int(os.environ.get("LOG_MAX_BYTES", 10 * 1024 * 1024)),
        backups=int(os.environ.get("LOG_BACKUPS", 3)),
    )
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
