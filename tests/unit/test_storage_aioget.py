"""The event-loop GET client (services/storage/aioget.py) against a scripted HTTP server on a real
socket: keep-alive reuse, a kept-alive connection the server closed, cut-off bodies, store
errors, chunked replies, timeouts, and TTFB measured to the first body byte."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from botocore.exceptions import ClientError

from services.storage.aioget import AsyncGetter, Unsupported
from services.storage.errors import is_retryable, map_error
from services.storage.model import BackendSpec, Credentials, Kind

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kernel timestamps are Linux's")

Reply = Callable[[asyncio.StreamWriter], Awaitable[bool]]  # False: close the connection after it


def raw(data: bytes, *, keep: bool = True) -> Reply:
    """A reply of exactly these bytes; `keep=False` closes the connection after it."""

    async def send(w: asyncio.StreamWriter) -> bool:
        w.write(data)
        await w.drain()
        return keep

    return send


def ok(body: bytes, *, extra: str = "") -> Reply:
    return raw(f'HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nETag: "e1"\r\n{extra}\r\n'.encode() + body)


@dataclass
class Script:
    """Answers the n-th request with `replies[n]`; records each request's head and connection."""

    replies: list[Reply]
    requests: list[tuple[int, bytes]] = field(default_factory=list)
    connections: int = 0


@pytest.fixture
async def server() -> AsyncIterator[tuple[Script, int]]:
    script = Script([])

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        script.connections += 1
        conn_no = script.connections
        try:
            while True:
                try:
                    head = await r.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                script.requests.append((conn_no, head))
                reply = script.replies[len(script.requests) - 1]
                if not await reply(w):
                    return
        finally:
            w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield script, srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


def getter(port: int, read_timeout_s: float = 10.0) -> AsyncGetter:
    spec = BackendSpec("t", Kind.S3_COMPATIBLE, endpoint=f"http://127.0.0.1:{port}", bucket="b")
    return AsyncGetter(spec, Credentials("AK", "SK"), spec.endpoint, 4, 3.0, read_timeout_s)


async def test_reuses_the_connection_and_signs(server) -> None:
    script, port = server
    script.replies = [ok(b"one"), ok(b"two", extra="x-amz-meta-doc: a\r\n")]
    g = getter(port)
    try:
        a = await g.get("b", "chunks/c/1 x")
        b = await g.get("b", "chunks/c/2")
    finally:
        g.close()
    assert (a.status, a.body, b.body) == (200, b"one", b"two")
    assert b.fields()["Metadata"] == {"doc": "a"} and b.fields()["ETag"] == '"e1"'
    assert script.connections == 1 and [c for c, _ in script.requests] == [1, 1]
    head = script.requests[0][1].decode()
    assert head.startswith("GET /b/chunks/c/1%20x HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}\r\n" in head and "Authorization: AWS4-HMAC-SHA256 Credential=AK/" in head
    assert 0 < a.first_ns - a.sent_ns <= a.end_ns - a.sent_ns


async def test_a_kept_alive_connection_the_store_closed_is_replaced(server) -> None:
    script, port = server

    async def once_then_close(w: asyncio.StreamWriter) -> bool:
        await ok(b"first")(w)
        return False  # the server drops the idle connection after answering

    script.replies = [once_then_close, ok(b"second")]
    g = getter(port)
    try:
        assert (await g.get("b", "k1")).body == b"first"
        await asyncio.sleep(0.05)  # let the close reach the client
        assert (await g.get("b", "k2")).body == b"second"
    finally:
        g.close()
    assert script.connections == 2


async def test_a_cut_off_body_is_a_retryable_transport_error(server) -> None:
    script, port = server

    script.replies = [raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", keep=False)]
    g = getter(port)
    try:
        with pytest.raises(ConnectionError) as ei:
            await g.get("b", "k")
    finally:
        g.close()
    assert is_retryable(ei.value)
    assert map_error(ei.value, "t", "b", "k").reason == "BACKEND_UNAVAILABLE"


@pytest.mark.parametrize(
    ("status", "code", "reason", "retry"),
    [
        (404, "NoSuchKey", "OBJECT_NOT_FOUND", False),
        (403, "SignatureDoesNotMatch", "BACKEND_UNAUTHENTICATED", False),
        (503, "SlowDown", "BACKEND_THROTTLED", True),
    ],
)
async def test_store_errors_map_as_boto3s(server, status: int, code: str, reason: str, retry: bool) -> None:
    script, port = server
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode()

    script.replies = [raw(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body), ok(b"after")]
    g = getter(port)
    try:
        with pytest.raises(ClientError) as ei:
            await g.get("b", "k")
        assert (await g.get("b", "k2")).body == b"after"  # the connection stays usable
    finally:
        g.close()
    assert ei.value.response["Error"]["Code"] == code
    assert is_retryable(ei.value) is retry
    assert map_error(ei.value, "t", "b", "k").reason == reason
    assert script.connections == 1


async def test_a_chunked_reply_is_left_to_another_path(server) -> None:
    script, port = server

    script.replies = [raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")]
    g = getter(port)
    try:
        with pytest.raises(Unsupported):
            await g.get("b", "k")
    finally:
        g.close()


async def test_a_silent_store_times_out(server) -> None:
    script, port = server

    async def silent(w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return False

    script.replies = [silent]
    g = getter(port, read_timeout_s=0.2)
    try:
        with pytest.raises(TimeoutError) as ei:
            await g.get("b", "k")
    finally:
        g.close()
    assert is_retryable(ei.value)


async def test_ttfb_runs_to_the_first_body_byte(server) -> None:
    """Headers at once, the body 80 ms later: TTFB includes the wait, the headers alone do not end it."""
    script, port = server

    async def late_body(w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.08)
        w.write(b"body")
        await w.drain()
        return True

    script.replies = [late_body]
    g = getter(port)
    try:
        r = await g.get("b", "k")
    finally:
        g.close()
    assert r.body == b"body"
    assert r.first_ns - r.sent_ns >= 80_000_000
    assert r.end_ns >= r.first_ns
