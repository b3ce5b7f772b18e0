"""Fault-injecting proxies on loopback, outside the product.

`FaultProxy` works on TCP bytes, for network faults between services.

Point a service's `*_ADDR` at `proxy.addr`; the proxy forwards bytes both ways to the target and,
as set at run time, adds latency to every forwarded chunk, resets connections (TCP RST, at once
or after some bytes), or black-holes them (accepts and reads, never forwards nor answers).
Works for any TCP protocol (gRPC over HTTP/2 here). Only loopback targets are accepted.

`S3FaultProxy` works on HTTP/1.1 requests, in front of a real S3 store: each client connection
carries one request; the proxy reads the request head, then either answers it itself (503
SlowDown, as S3 does when throttling) or forwards it upstream with `Connection: close` and relays
the response, optionally resetting the connection (RST) after a number of response bytes. Faults
are armed by count, optionally only for one HTTP method. Every request's method and path is
logged, so a test can tell which objects the store itself was asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field


@dataclass
class Faults:
    latency_s: float = 0.0
    reset: bool = False
    reset_after_bytes: int = 0
    blackhole: bool = False


@dataclass
class Counters:
    connections: int = 0
    resets: int = 0
    blackholed: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    open: set[asyncio.Task[None]] = field(default_factory=set)


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        if target_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fault proxy only forwards to loopback")
        self.target = (target_host, target_port)
        self.faults = Faults()
        self.counters = Counters()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut_all()
        for t in list(self.counters.open):
            t.cancel()
        await asyncio.gather(*self.counters.open, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def set(self, **faults: float | bool | int) -> None:
        """Replaces the faults (unnamed ones go back to none)."""
        self.faults = Faults(**faults)  # type: ignore[arg-type]

    def cut_all(self) -> None:
        """Resets every open connection (existing HTTP/2 channels see a broken transport)."""
        for w in list(self._writers):
            _rst(w)
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.counters.open.add(task)
        self.counters.connections += 1
        self._writers.add(writer)
        f = self.faults
        try:
            if f.reset and f.reset_after_bytes == 0:
                self.counters.resets += 1
                _rst(writer)
                return
            if f.blackhole:
                self.counters.blackholed += 1
                while await reader.read(65536):
                    pass
                return
            try:
                up_r, up_w = await asyncio.open_connection(*self.target)
            except OSError:
                _rst(writer)
                return
            self._writers.add(up_w)
            await asyncio.gather(
                self._pipe(reader, up_w, "up", writer), self._pipe(up_r, writer, "down", up_w), return_exceptions=True
            )
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
            self.counters.open.discard(task)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str, other: asyncio.StreamWriter
    ) -> None:
        sent = 0
        try:
            while data := await src.read(65536):
                f = self.faults
                if f.blackhole:
                    continue  # swallow from now on: the peer sees silence
                if f.latency_s:
                    await asyncio.sleep(f.latency_s)
                if f.reset and f.reset_after_bytes and sent + len(data) >= f.reset_after_bytes:
                    self.counters.resets += 1
                    _rst(dst)
                    _rst(other)
                    return
                dst.write(data)
                await dst.drain()
                sent += len(data)
                if direction == "up":
                    self.counters.bytes_up += len(data)
                else:
                    self.counters.bytes_down += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()


SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class _Fault:
    kind: str  # "throttle" or "reset"
    remaining: int
    method: str = ""
    after_bytes: int = 0


class S3FaultProxy:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.target_port = port
        self.port = 0
        self.requests = 0
        # (method, path) of every request received, in order: which objects the store was asked for.
        self.log: list[tuple[str, str]] = []
        self.injected: dict[str, int] = {"throttle": 0, "reset": 0}
        self._faults: list[_Fault] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def throttle(self, n: int, method: str = "") -> None:
        """The next `n` matching requests get 503 SlowDown."""
        self._faults.append(_Fault("throttle", n, method.upper()))

    def reset(self, n: int, after_bytes: int, method: str = "GET") -> None:
        """The next `n` matching responses are cut (TCP RST) after `after_bytes` bytes."""
        self._faults.append(_Fault("reset", n, method.upper(), after_bytes))

    def clear(self) -> None:
        self._faults.clear()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Closing the sockets ends every handler on its own (cancelling them trips asyncio's
            # stream callback on 3.11).
            for w in list(self._writers):
                w.close()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def _take(self, method: str) -> _Fault | None:
        for f in self._faults:
            if f.remaining > 0 and (not f.method or f.method == method):
                f.remaining -= 1
                self.injected[f.kind] += 1
                return f
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_writer: asyncio.StreamWriter | None = None
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        body_task: asyncio.Task[None] | None = None
        try:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            self.requests += 1
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0].upper()
            self.log.append((method, lines[0].split(" ")[1] if " " in lines[0] else ""))
            headers = [ln for ln in lines[1:] if ln]
            length = 0
            for ln in headers:
                name, _, value = ln.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            fault = self._take(method)
            if fault is not None and fault.kind == "throttle":
                if length:
                    await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                    + f"Content-Length: {len(SLOWDOWN_BODY)}\r\n\r\n".encode()
                    + SLOWDOWN_BODY
                )
                await writer.drain()
                return
            kept = [ln for ln in headers if ln.split(":", 1)[0].strip().lower() not in ("connection", "keep-alive")]
            new_head = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1")
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
            self._writers.add(up_writer)
            up_writer.write(new_head)
            await up_writer.drain()
            # The body flows while the response is relayed: a client sending
            # `Expect: 100-continue` waits for the store's interim answer before its body.
            body_task = asyncio.create_task(self._copy_body(reader, up_writer, length))
            sent = 0
            limit = fault.after_bytes if fault is not None else -1
            while True:
                chunk = await up_reader.read(65536)
                if not chunk:
                    break
                if limit >= 0 and sent + len(chunk) > limit:
                    writer.write(chunk[: limit - sent])
                    await writer.drain()
                    _rst(writer)
                    return
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            if body_task is not None:
                body_task.cancel()
                with contextlib.suppress(BaseException):
                    await body_task
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
                    self._writers.discard(w)
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _copy_body(reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter, length: int) -> None:
        remaining = length
        with contextlib.suppress(OSError):
            while remaining > 0:
                chunk = await reader.read(min(remaining, 65536))
                if not chunk:
                    return
                up_writer.write(chunk)
                remaining -= len(chunk)
                await up_writer.drain()


def _rst(writer: asyncio.StreamWriter) -> None:
    """Closes with SO_LINGER 0, so the peer gets a TCP RST rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
