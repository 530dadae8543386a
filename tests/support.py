"""Helpers shared by the test packages: polling with a deadline, reading the emulator."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

T = TypeVar("T")


def eventually(check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll `check()` until it is truthy, with a deadline (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met within {timeout}s (last: {result!r})")
        time.sleep(interval)


def point_portal_at(settings: Any, server: Any, *, timeout_s: float) -> Any:
    """The portal's LiveKit settings pointing at `server` (the emulator or the real server)."""
    settings.LIVEKIT_URL = server.url
    settings.LIVEKIT_API_KEY = server.api_key
    settings.LIVEKIT_API_SECRET = server.api_secret
    settings.LIVEKIT_TIMEOUT_S = timeout_s
    return server


def agents_in(server: Any, room: str, agent_name: str | None = None) -> list[dict[str, Any]]:
    """The agent participants LiveKit (the emulator) has in a room, of one name if given."""
    rooms = server.control.state(room=room)["rooms"]
    return [
        p
        for r in rooms
        for p in r["participants"]
        if p["kind"] == "AGENT" and (agent_name is None or p["attributes"].get("lk.agent_name") == agent_name)
    ]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gunicorn(*, port: int, env: dict[str, str], threads: int = 1, stderr: Any = None) -> Any:
    """The portal under gunicorn with two workers, as `bin/run-portal` runs it."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    command = [
        str(root / ".venv/bin/gunicorn"),
        "-c",
        "dispatchportal/gunicorn_conf.py",
        "dispatchportal.wsgi",
    ]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", str(threads)]
    return subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=stderr or subprocess.DEVNULL
    )


class RedisServer:
    """A redis-server of the test's own on a free port (never the shared one), for tests that
    stop and start Redis. With `folder`, every write is persisted (appendfsync always), so a
    restart keeps what Redis had acknowledged; without it Redis keeps nothing."""

    def __init__(self, folder: Any = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: Any = None

    @staticmethod
    def available() -> bool:
        import os
        import shutil

        import pytest

        if shutil.which("redis-server") is not None:
            return True
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("REQUIRE_SERVICES=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed")

    def start(self) -> None:
        import subprocess

        persist = ["--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always"]
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += persist if self.folder is not None else ["--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually(self._pong, timeout=10, what="own redis-server up")

    def _pong(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, crash: bool = False) -> None:
        """Stop it: politely, or with `crash` as a kill (nothing flushed)."""
        if self.process is not None and self.process.poll() is None:
            (self.process.kill if crash else self.process.terminate)()
            self.process.wait(10)


def node_with_packages(js_dir: Path, installed: Path) -> str:
    """The node binary, with `js_dir`'s packages installed from its lockfile (`npm ci`) when
    `installed` (a file the install creates) is missing. Skips without node or npm, or fails
    under REQUIRE_SERVICES=1."""

    def missing(what: str) -> NoReturn:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"REQUIRE_SERVICES=1 but {what}")
        pytest.skip(what)

    node_bin = shutil.which("node")
    if node_bin is None:
        missing("node is not installed")
    if not installed.exists():
        npm = shutil.which("npm") or missing("npm is not installed")
        done = subprocess.run(
            [npm, "ci", "--prefix", str(js_dir), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci in {js_dir} failed:\n{done.stdout}\n{done.stderr}")
    return node_bin
