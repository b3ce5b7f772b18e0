"""Wire-level timing: TTFB comes from kernel stamps, so a client that looks at its socket late
(a busy process, the GIL) does not inflate it, and a slow server does show in it."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from services.storage import wire
from services.storage.fastget import _TimedHTTPConnection

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kernel timestamps are Linux's")


@pytest.fixture
def server() -> Iterator[tuple[int, list[float]]]:
    """An HTTP/1.1 server answering each request after `delay[0]` seconds."""
    delay = [0.0]
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                buf = b""
                while not stop.is_set():
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        break
                    if not data:
                        break
                    buf += data
                    while b"\r\n\r\n" in buf:
                        _, buf = buf.split(b"\r\n\r\n", 1)
                        time.sleep(delay[0])
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1], delay
    finally:
        stop.set()
        t.join(2)
        srv.close()


def exchange(port: int, client_late_s: float = 0.0) -> tuple[int, bytes]:
    conn = _TimedHTTPConnection("127.0.0.1", port)
    try:
        wire.reset()
        conn.request("GET", "/x")
        time.sleep(client_late_s)  # the client gets round to reading late
        resp = conn.getresponse()
        body = resp.data
        return wire.response_ns() - wire.sent_ns(), body
    finally:
        conn.close()


def test_a_late_client_does_not_inflate_ttfb(server: tuple[int, list[float]]) -> None:
    port, _ = server
    ttfb, body = exchange(port, client_late_s=0.2)
    assert body == b"hello"
    assert 0 < ttfb < 100_000_000  # well under the 200 ms the client spent elsewhere
    assert wire.body_came_with_headers()


def test_a_slow_server_shows_in_ttfb(server: tuple[int, list[float]]) -> None:
    port, delay = server
    delay[0] = 0.06
    ttfb, _ = exchange(port)
    assert 60_000_000 <= ttfb < 1_000_000_000
