"""A small synchronous client for the control API (`/_emulator/*`), for tests, benchmarks and
scripts. Plain `urllib`, so it works anywhere, including inside a sync Django test."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

# Never route control calls through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ControlError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"control API answered {status}: {body}")
        self.status = status
        self.body = body


class ControlClient:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with _opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = raw.decode(errors="replace")
            raise ControlError(exc.code, detail) from None

    def join(self, token: str) -> dict[str, Any]:
        """Connect a participant with its access token, as a browser would; returns it."""
        return self.request("POST", "/_emulator/join", {"token": token})

    def leave(self, room: str, identity: str) -> dict[str, Any]:
        return self.request("POST", "/_emulator/leave", {"room": room, "identity": identity})

    def add_worker(
        self,
        agent_name: str,
        behavior: str = "accept",
        delay_ms: float = 0,
        crash_after_ms: float | None = None,
        capacity: int | None = None,
    ) -> dict[str, Any]:
        return self.request(
            "POST",
            "/_emulator/workers",
            {
                "agent_name": agent_name,
                "behavior": behavior,
                "delay_ms": delay_ms,
                "crash_after_ms": crash_after_ms,
                "capacity": capacity,
            },
        )

    def remove_worker(self, agent_name: str) -> dict[str, Any]:
        return self.request("DELETE", "/_emulator/workers/" + urllib.parse.quote(agent_name, safe=""))

    def worker_faults(self, **faults: Any) -> dict[str, Any]:
        """Replace the job hand-over faults: refuse_availability, drop_assignment, assignment_delay_ms."""
        return self.request("POST", "/_emulator/worker_faults", faults)

    def disconnect_worker(self, worker_id: str) -> dict[str, Any]:
        """Close a real worker's socket (a simulated one is unregistered)."""
        return self.request("POST", "/_emulator/disconnect_worker", {"worker_id": worker_id})

    def faults(self, **faults: Any) -> dict[str, Any]:
        """Replace the fault set: latency_ms, error_rate, error_status, timeout_rate, down."""
        return self.request("POST", "/_emulator/faults", faults)

    def webhooks(self, **settings: Any) -> dict[str, Any]:
        """Change webhook settings (url, drop, duplicate, delay_ms, retry_backoff_ms, max_retries)."""
        return self.request("POST", "/_emulator/webhooks", settings)

    def webhook_status(self) -> dict[str, Any]:
        return self.request("GET", "/_emulator/webhooks")

    def create_rooms(self, rooms: list[dict[str, Any]]) -> dict[str, Any]:
        return self.request("POST", "/_emulator/rooms", {"rooms": rooms})

    def state(self, room: str | None = None) -> dict[str, Any]:
        query = "?" + urllib.parse.urlencode({"room": room}) if room is not None else ""
        return self.request("GET", "/_emulator/state" + query)

    def reset(self) -> dict[str, Any]:
        return self.request("POST", "/_emulator/reset")

    def wait_webhooks(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until no webhook is queued or being retried; returns the webhook status."""
        return self.wait_for(lambda s: s["pending"] == 0, timeout=timeout, fetch=self.webhook_status)

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], Any],
        *,
        timeout: float = 5.0,
        room: str | None = None,
        fetch: Callable[[], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Poll the state (or `fetch()`) until `predicate` holds; raise TimeoutError otherwise."""
        fetch = fetch or (lambda: self.state(room))
        deadline = time.monotonic() + timeout
        while True:
            current = fetch()
            if predicate(current):
                return current
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s; last state: {current}")
            time.sleep(0.01)
