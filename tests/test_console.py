"""`make run`'s console: `bin/run-portal` started as a newcomer starts it (embedded SQLite and
broker in a fresh var folder, the LiveKit emulator) prints a few readable lines, the demo key
and admin login in a box, again at the end of start-up, and nothing from the processes' logs,
which go to rotated files in var/log/. Then the pieces: the log pipe rotates and echoes errors."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dispatchportal.logpipe import copy, error_summary
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
BOX_TOP = re.compile(r"^┌─+┐$")
MOST_CONSOLE_LINES = 25  # one line per step and two 7-line boxes


def _ports() -> tuple[int, int]:
    """The portal's port and the emulator's, whose control API takes the next one: that one
    must be free too (seen in CI: another test's server held it)."""
    for _ in range(50):
        portal, livekit = free_port(), free_port()
        if len({portal, livekit, livekit + 1}) == 3 and _bindable(livekit + 1):
            return portal, livekit
    raise AssertionError("no free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _environment(var: Path, portal: int, livekit: int) -> dict[str, str]:
    drop = ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "DJANGO_SETTINGS_MODULE", "PORT")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("LIVEKIT_", "DISPATCHPORTAL_"))
    }
    return env | {
        "DISPATCHPORTAL_VAR_DIR": str(var),
        "PORT": str(portal),
        "LIVEKIT_PORT": str(livekit),
        "LIVEKIT_SERVER_BIN": str(var / "no-livekit-server"),  # the emulator, whatever is built
    }


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """bin/run-portal until "Ready" and beat's first task, then Ctrl-C; its console lines and
    its var folder."""
    var = tmp_path_factory.mktemp("run") / "var"
    portal, livekit = _ports()
    process = subprocess.Popen(
        [str(ROOT / "bin/run-portal")],
        cwd=ROOT,
        env=_environment(var, portal, livekit),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C reaches it as in a terminal, even when this suite runs as a background job
        # (`cmd &`), whose processes start with SIGINT ignored: a shell cannot trap a signal
        # ignored when it started, so run-portal would never hear the Ctrl-C.
        preexec_fn=_sigint_default,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 240  # migrating a fresh SQLite database on a busy machine
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if any(line.startswith("Ready in") for line in lines) and lines[-1].startswith("└"):
                break
            time.sleep(0.2)
        ready = list(lines)
        assert any(line.startswith("Ready in") for line in ready), "".join(ready)
        beat = var / "log" / "celery-beat.log"
        while time.monotonic() < deadline and not (beat.exists() and "Sending due task" in beat.read_text()):
            time.sleep(0.2)  # beat's INFO lines are written: now they can be looked for on the console
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        reader.join(timeout=5)
    return {
        "ready": [line.rstrip("\n") for line in ready],
        "all": [line.rstrip("\n") for line in lines],
        "var": var,
        "exit_code": process.returncode,
    }


def _box_at(lines: list[str], top: int) -> list[str]:
    bottom = next(i for i in range(top, len(lines)) if lines[i].startswith("└"))
    return lines[top : bottom + 1]


def test_start_up_prints_a_few_lines_and_the_key_and_login_in_a_box_twice(started):
    ready = started["ready"]
    assert len(ready) <= MOST_CONSOLE_LINES, "\n".join(ready)
    tops = [i for i, line in enumerate(ready) if BOX_TOP.match(line)]
    assert len(tops) == 2, "\n".join(ready)
    first, last = (_box_at(ready, i) for i in tops)
    assert first == last
    key = re.search(r"│ API key +(dpk_[A-Za-z0-9_-]+) ", "\n".join(first))
    login = re.search(r"│ Login +admin / (\S+) ", "\n".join(first))
    assert key and login, "\n".join(first)
    # The second box ends the start-up: nothing scrolls it away.
    assert ready[-1] == last[-1] and ready[-len(last) - 1].startswith("Ready in")
    assert ready[0].startswith("Dispatch Portal: starting")


def test_the_processes_logs_go_to_files_not_the_console(started):
    console = "\n".join(started["all"])
    assert '"levelname"' not in console  # no JSON log line (beat's INFO lines among them)
    assert "InsecureKeyLengthWarning" not in console
    assert "celery beat" not in console
    logs = started["var"] / "log"
    beat = (logs / "celery-beat.log").read_text()
    assert "celery beat" in beat and '"levelname": "INFO"' in beat
    assert (logs / "portal.log").read_text()  # gunicorn's lines
    everything = "".join(p.read_text() for p in logs.glob("*.log*"))
    assert "InsecureKeyLengthWarning" not in everything  # the dev secret is long enough
    assert "Stopping..." in started["all"]
    assert started["exit_code"] == 0  # Ctrl-C is a clean stop, not an error `make` reports


def test_the_log_pipe_rotates_and_echoes_errors_on_one_line(tmp_path):
    path = tmp_path / "portal.log"
    console = io.StringIO()
    info = '{"asctime": "x", "levelname": "INFO", "name": "celery.beat", "message": "Scheduler: Sending due task"}'
    error = (
        '{"levelname": "ERROR", "name": "rooms_app.tasks", "message": "reconcile failed:\\n  LiveKit down"}'
    )
    copy([info + "\n"] * 400 + [error + "\n"], str(path), console=console, max_bytes=4096, backups=2)

    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["portal.log", "portal.log.1", "portal.log.2"]  # rotated, two kept
    assert all(p.stat().st_size <= 4096 for p in tmp_path.iterdir())
    assert path.read_text().splitlines()[-1] == error
    assert console.getvalue() == (
        f"  ! portal: ERROR rooms_app.tasks: reconcile failed: LiveKit down  (see {path})\n"
    )


def test_error_lines_are_recognised_from_the_portal_and_from_livekit_server():
    assert error_summary('{"levelname": "WARNING", "name": "x", "message": "m"}') is None
    assert error_summary('{"levelname": "CRITICAL", "name": "x", "message": "m"}') == "CRITICAL x: m"
    go = "2026-12-03T09:12:14.534Z\tERROR\tlivekit\tservice/roommanager.go:12\tcould not start room\t{}"
    assert error_summary(go) == "ERROR could not start room\t{}"
    assert error_summary(go.replace("\tERROR\t", "\tINFO\t")) is None
    assert error_summary("Traceback (most recent call last):") is None


def test_the_log_pipe_passes_the_exit_code_on():
    result = subprocess.run(
        [sys.executable, "-P", "dispatchportal/logpipe.py", os.devnull, "--", "sh", "-c", "echo hi; exit 3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3 and result.stdout == "" and result.stderr == ""


def test_the_log_pipe_kills_a_process_that_outlives_its_sigterm(tmp_path):
    """A Celery worker whose pool got the group's SIGTERM hangs in its warm shutdown: the pipe
    passes SIGTERM on, then kills what is still running after its grace, so no process lives on
    to take the next run's tasks."""
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(120)"
    log = tmp_path / "stubborn.log"
    pipe = subprocess.Popen(
        [sys.executable, "-P", "dispatchportal/logpipe.py", str(log), "--", sys.executable, "-c", stubborn],
        cwd=ROOT,
        env={**os.environ, "LOGPIPE_STOP_GRACE_S": "1"},
    )
    try:
        for _ in range(200):  # until the process is up (its first line is in the log)
            if log.exists() and "up" in log.read_text():
                break
            time.sleep(0.05)
        pipe.send_signal(signal.SIGTERM)
        # The pipe exits with its process's status: killed, -9 (247 as an exit status).
        assert pipe.wait(timeout=30) == 256 - signal.SIGKILL
    finally:
        if pipe.poll() is None:
            pipe.kill()
