"""A fault-injecting TCP proxy on loopback, for network faults between services.

Point a service's `*_ADDR` at `proxy.addr`; the proxy forwards bytes both ways to the target and,
as set at run time, adds latency to every forwarded chunk, resets connections (TCP RST, at once
or after some bytes), or black-holes them (accepts and reads, never forwards nor answers).
Works for any TCP protocol (gRPC over HTTP/2 here). Only loopback targets are accepted.
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


def _rst(writer: asyncio.StreamWriter) -> None:
    """Closes with SO_LINGER 0, so the peer gets a TCP RST rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
