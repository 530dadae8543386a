"""Misbehaving HTTP peers on 127.0.0.1 for the outbound-call tests: each `FaultServer` reads a
request, then answers every connection with one fault, and records each call (path, when it
came, when the peer hung up)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

# What each fault does once the request is read.
KINDS = (
    "trickle_body",  # headers, then the body one byte a second
    "trickle_headers",  # the status line, then one header line a second
    "hang_after_headers",  # headers announcing a body that never comes
    "ssh_banner",  # `SSH-2.0-OpenSSH_9.6`, then close: not HTTP at all
    "close_early",  # close without a byte
    "huge_body",  # 50 MB, close-delimited (no Content-Length), as fast as it goes
    "huge_declared",  # Content-Length: 50 MB, then the bytes
    "cut_body",  # Content-Length: 100, three bytes, close
)
HUGE = 50 * 1024 * 1024


@dataclass
class Call:
    path: str
    at: float  # time.monotonic() when the request was read
    ended: float | None = None  # when the client hung up or the fault ended


class FaultServer:
    def __init__(self, kind: str) -> None:
        assert kind in KINDS, kind
        self.kind = kind
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        call = None
        try:
            conn.settimeout(5)
            path = _read_request(conn)
            call = Call(path=path, at=time.monotonic())
            with self._lock:
                self.calls.append(call)
            getattr(self, f"_{self.kind}")(conn)
        except OSError:
            pass  # the client hung up: what a deadline does
        finally:
            if call is not None:
                call.ended = time.monotonic()
            conn.close()

    def _trickle_body(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 600\r\n\r\n")
        while not self._stop.wait(1.0):
            conn.sendall(b"x")

    def _trickle_headers(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        n = 0
        while not self._stop.wait(1.0):
            n += 1
            conn.sendall(b"X-Slow-%d: yes\r\n" % n)

    def _hang_after_headers(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n")
        _wait_for_hangup(conn, self._stop)

    def _ssh_banner(self, conn: socket.socket) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    def _close_early(self, conn: socket.socket) -> None:
        pass

    def _huge_body(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        _send_huge(conn, self._stop)

    def _huge_declared(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE)
        _send_huge(conn, self._stop)

    def _cut_body(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)


def _read_request(conn: socket.socket) -> str:
    """Read one request (headers and a Content-Length body); return its path."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed before a request")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        (int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:")), 0
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return lines[0].split(" ")[1]


def _wait_for_hangup(conn: socket.socket, stop: threading.Event) -> None:
    conn.settimeout(0.1)
    while not stop.is_set():
        try:
            if conn.recv(1) == b"":
                return
        except TimeoutError:
            continue


def _send_huge(conn: socket.socket, stop: threading.Event) -> None:
    block = b"x" * 65536
    for _ in range(HUGE // len(block)):
        if stop.is_set():
            return
        conn.sendall(block)
