"""Raw HTTP over plain sockets against the real gateway: what `requests` refuses to send.

The gateway is the real one (gateway.server.start) in this process, in front of the fuzz stack's
services, with short client timeouts (the stack's own gateway takes no settings from tests).
Names of 2,000+ characters, invalid UTF-8 in paths, queries and headers, header floods, a
slowloris trickle, bodies longer or shorter than their Content-Length, and chunked-encoding
abuse. Each case sends its bytes, ends its side of the connection (so a server that waits for
more has its answer) and reads: the gateway must answer 4xx (or 2xx for a request that is valid
however odd) or close the connection. A 5xx or no answer within `ANSWER_S` fails. Afterwards the
gateway holds no more sockets than before (no leak) and still answers /healthz.
`raw_http_cases`, `raw_http_5xx` and `raw_http_hangs` go to bench/results/reliability.json.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psutil
import pytest

from gateway.config import GatewayConfig
from gateway.server import start
from kernel.config import load_env
from testkit.faults import harness
from testkit.stack import RunningStack

pytestmark = [pytest.mark.e2e]

ANSWER_S = 10.0
KEEPALIVE_S = 3.0  # the request-head (slowloris) bound
BODY_S = 2.0  # the stalled-body bound
TRICKLE_LIMIT_S = 15.0
LONG = "n" * 2500
BAD_UTF8 = b"\xff\xfe\xc3\x28\xed\xa0\x80"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    trickle_s: float = 0.0  # > 0: send one byte per this many seconds, never finishing the head


def _req(method: str, target: bytes, headers: list[bytes] | None = None, body: bytes = b"") -> bytes:
    head = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"] + (headers or [])
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def cases() -> list[Case]:
    out: list[Case] = []
    long = LONG.encode()
    for method, path in (
        ("GET", b"/api/documents/" + long),
        ("DELETE", b"/api/documents/" + long),
        ("GET", b"/api/ingestion/jobs/" + long),
        ("GET", b"/api/benchmarks/" + long),
        ("DELETE", b"/api/config/backends/" + long),
        ("GET", b"/api/documents?collection=" + long),
        ("GET", b"/api/rag/stream?collection=" + long + b"&q=x"),
        ("GET", b"/" + b"a/" * 1500),
        ("GET", b"/api/documents/" + b"x" * 20_000),  # past the request-line limit
    ):
        out.append(Case(f"long_name {method} {path[:30]!r}", _req(method, path)))
    body = b'{"collection": "%s", "q": "x"}' % long
    out.append(
        Case(
            "long_name collection json",
            _req(
                "POST", b"/api/rag/query", [b"Content-Type: application/json", b"Content-Length: %d" % len(body)], body
            ),
        )
    )
    for path in (
        b"/api/documents/" + BAD_UTF8,
        b"/api/documents/%FF%FE%C3%28",
        b"/api/ingestion/jobs/%ED%A0%80",
        b"/" + BAD_UTF8,
        b"/api/documents?collection=" + BAD_UTF8,
        b"/api/documents?collection=%FF%FE",
        b"/api/rag/stream?q=%C3%28&collection=%80",
        b"/api/documents?" + BAD_UTF8 + b"=" + BAD_UTF8,
    ):
        out.append(Case(f"bad_utf8 {path[:40]!r}", _req("GET", path)))
    for h in (
        b"X-Api-Key: " + BAD_UTF8,
        b"Authorization: Bearer " + BAD_UTF8,
        b"Cookie: s=" + BAD_UTF8,
        BAD_UTF8 + b": x",
        b"Traceparent: " + BAD_UTF8,
        b"Content-Type: application/json; charset=" + BAD_UTF8,
        b"Origin: http://" + BAD_UTF8,
    ):
        out.append(Case(f"bad_utf8 header {h[:20]!r}", _req("GET", b"/api/collections", [h])))
    out.append(
        Case(
            "bad_utf8 json body",
            _req(
                "POST",
                b"/api/rag/query",
                [b"Content-Type: application/json", b"Content-Length: %d" % (len(BAD_UTF8) + 9)],
                b'{"q": "' + BAD_UTF8 + b'"}',
            ),
        )
    )
    out.append(Case("header_flood 200 headers", _req("GET", b"/api/health", [b"X-H%d: v" % i for i in range(200)])))
    out.append(Case("header_flood 5000 headers", _req("GET", b"/healthz", [b"X-H%d: v" % i for i in range(5000)])))
    out.append(Case("header_flood one 64 KiB header", _req("GET", b"/healthz", [b"X-Big: " + b"v" * 65536])))
    out.append(
        Case("header_flood 100 cookies", _req("GET", b"/api/collections", [b"Cookie: a=%d" % i for i in range(100)]))
    )
    out.append(Case("header_flood no colon", _req("GET", b"/healthz", [b"garbage line without colon"])))
    out.append(Case("header_flood space before colon", _req("GET", b"/healthz", [b"Host : evil"])))
    json_h = [b"Content-Type: application/json"]
    out.append(
        Case(
            "body longer than content-length",
            _req("POST", b"/api/rag/query", [*json_h, b"Content-Length: 5"], b'{"q": "x"}'),
        )
    )
    out.append(
        Case(
            "body longer smuggles a request",
            _req("POST", b"/api/rag/query", [*json_h, b"Content-Length: 2"], b"{}" + _req("GET", b"/api/collections")),
        )
    )
    out.append(
        Case(
            "body shorter than content-length",
            _req("POST", b"/api/rag/query", [*json_h, b"Content-Length: 500"], b"{}"),
        )
    )
    out.append(
        Case("negative content-length", _req("POST", b"/api/rag/query", [*json_h, b"Content-Length: -1"], b"{}"))
    )
    out.append(
        Case(
            "two content-lengths",
            _req("POST", b"/api/rag/query", [*json_h, b"Content-Length: 2", b"Content-Length: 3"], b"{}"),
        )
    )
    out.append(
        Case(
            "huge content-length",
            _req("POST", b"/api/rag/query", [*json_h, b"Content-Length: 99999999999999999999"], b"{}"),
        )
    )
    chunked = [*json_h, b"Transfer-Encoding: chunked"]
    for name, body in (
        ("bad hex size", b"zz\r\n{}\r\n0\r\n\r\n"),
        ("negative size", b"-5\r\n{}\r\n0\r\n\r\n"),
        ("overflowing size", b"ffffffffffffffffffffffff\r\n{}\r\n0\r\n\r\n"),
        ("size larger than data", b"100\r\n{}\r\n0\r\n\r\n"),
        ("no final chunk", b"2\r\n{}\r\n"),
        ("missing crlf", b"2{}0\r\n\r\n"),
        ("extension flood", b"2;" + b"e=v;" * 5000 + b"\r\n{}\r\n0\r\n\r\n"),
        ("trailer flood", b"2\r\n{}\r\n0\r\n" + b"".join(b"T%d: v\r\n" % i for i in range(500)) + b"\r\n"),
        ("bare lf", b"2\n{}\n0\n\n"),
        ("1 MiB of tiny chunks", b"1\r\n \r\n" * 150_000 + b"0\r\n\r\n"),
    ):
        out.append(Case(f"chunked {name}", _req("POST", b"/api/rag/query", chunked, body)))
    out.append(
        Case(
            "chunked with content-length",
            _req("POST", b"/api/rag/query", [*chunked, b"Content-Length: 4"], b"2\r\n{}\r\n0\r\n\r\n"),
        )
    )
    out.append(
        Case("chunked twice", _req("POST", b"/api/rag/query", [*chunked, b"Transfer-Encoding: chunked"], b"0\r\n\r\n"))
    )
    out.append(
        Case("transfer-encoding gzip", _req("POST", b"/api/rag/query", [*json_h, b"Transfer-Encoding: gzip"], b"{}"))
    )
    out.append(
        Case(
            "chunked upload no final chunk",
            _req(
                "POST",
                b"/api/documents?collection=raw",
                [b"Content-Type: multipart/form-data; boundary=b", b"Transfer-Encoding: chunked"],
                b"5\r\n--b\r\n\r\n",
            ),
        )
    )
    for line in (
        b"GET",
        b"GET /\r\n",
        b"\xff\xff\xff /x HTTP/1.1",
        b"GET / HTTP/9.9",
        b"GET / HTTP/1.1 extra",
        b"GET  / HTTP/1.1",
    ):
        out.append(Case(f"bad request line {line[:20]!r}", line + b"\r\nHost: x\r\n\r\n"))
    out.append(Case("slowloris head", _req("GET", b"/healthz"), trickle_s=0.5))
    out.append(
        Case(
            "slowloris body",
            _req("POST", b"/api/rag/query", [*json_h, b"Content-Length: 50"], b'{"q": "x", "collection": "d'),
            trickle_s=0.5,
        )
    )
    return out


async def send(port: int, case: Case) -> str:
    """The status the gateway answered ("200", "400"...), "closed", or "hang"."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if case.trickle_s:
            # A slowloris sends a byte at a time and never finishes; the gateway must drop it
            # (DDNRAG_GATEWAY_KEEPALIVE_TIMEOUT_S), never wait for a client forever.
            end = time.monotonic() + TRICKLE_LIMIT_S
            i = 0
            while time.monotonic() < end:
                writer.write(case.data[i : i + 1] if i < len(case.data) - 4 else b"a")
                i += 1
                try:
                    await writer.drain()
                    got = await asyncio.wait_for(reader.read(65536), case.trickle_s)
                except TimeoutError:
                    continue
                except ConnectionError:
                    return "closed"
                return _status(got)
            return "hang"
        writer.write(case.data)
        try:
            await writer.drain()
        except ConnectionError:
            return "closed"
        try:
            got = await asyncio.wait_for(reader.read(65536), ANSWER_S)
        except TimeoutError:
            return "hang"
        except ConnectionError:
            return "closed"
        return _status(got)
    finally:
        writer.close()


def _status(got: bytes) -> str:
    if not got:
        return "closed"
    parts = got.split(b" ", 2)
    return parts[1].decode("latin-1") if len(parts) > 1 and parts[0].startswith(b"HTTP/") else "garbage"


def open_sockets(proc: psutil.Process, port: int) -> int:
    return sum(1 for c in proc.net_connections("tcp") if c.laddr.port == port and c.status != psutil.CONN_LISTEN)


@pytest.fixture
async def gateway_port(stack: RunningStack) -> AsyncIterator[int]:
    cfg = load_env(
        GatewayConfig,
        {},
        port=0,
        auth="open",
        storage_addr=stack.addr("DDNRAG_STORAGE_PORT"),
        retriever_addr=stack.addr("DDNRAG_RETRIEVER_PORT"),
        llm_gateway_addr=stack.addr("DDNRAG_LLM_GATEWAY_PORT"),
        embedder_addr=stack.addr("DDNRAG_EMBEDDER_PORT"),
        keepalive_timeout_s=KEEPALIVE_S,
        body_timeout_s=BODY_S,
    )
    runner, port = await start(cfg)
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_raw_http_abuse_gets_4xx_or_close(gateway_port: int) -> None:
    port = gateway_port
    proc = psutil.Process()
    before = open_sockets(proc, port)
    all_cases = cases()
    t0 = time.monotonic()
    results = await asyncio.gather(*(send(port, c) for c in all_cases))
    outcomes = dict(zip((c.name for c in all_cases), results, strict=True))
    bad = {n: r for n, r in outcomes.items() if r in ("hang", "garbage") or r.startswith("5")}
    await asyncio.sleep(1.0)
    leaked = open_sockets(proc, port) - before
    harness.record(
        "raw_http",
        {
            "raw_http_cases": len(all_cases),
            "raw_http_5xx": sum(1 for r in results if r.startswith("5")),
            "raw_http_hangs": sum(1 for r in results if r == "hang"),
            "raw_http_sockets_leaked": max(0, leaked),
            "outcomes": dict(Counter(results)),
            "seconds": round(time.monotonic() - t0, 1),
        },
    )
    assert bad == {}, (bad, outcomes)
    assert leaked <= 0, f"{leaked} sockets still open after every case ended"
    assert await send(port, Case("healthz", _req("GET", b"/healthz"))) == "200"
