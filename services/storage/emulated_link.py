"""The emulated link of "emulated" backends: a network-shaping TCP proxy on loopback, in front of a real store.

It adds round-trip time (half on each direction), jitter (uniform 0..jitter, split the same
way) and a bandwidth cap shared by every connection through it, as a link would. Chunks keep
their order and are stamped on arrival, so the delay does not add up along a transfer: a long
body arrives one RTT late, at the capped rate. Backends behind it are labelled "emulated".

Two modes: plain forwarding to `host:port` (http endpoints; boto3 connects to the proxy), and
`tunnel=True`, an HTTP CONNECT proxy (https endpoints; TLS stays end to end, so certificate
checks still hold). In tunnel mode only the configured target may be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from .model import Shaping

log = logging.getLogger(__name__)
READ_BYTES = 64 * 1024


class _Link:
    """One direction of the shaped link: serialisation at the capped rate, shared by all
    connections."""

    def __init__(self, mbps: float) -> None:
        self.bytes_per_s = mbps * 1e6 / 8 if mbps > 0 else 0.0
        self.free_at = 0.0

    def reserve(self, n: int, now: float) -> float:
        """When `n` bytes arriving `now` have left the link."""
        if not self.bytes_per_s:
            return now
        start = max(now, self.free_at)
        self.free_at = start + n / self.bytes_per_s
        return self.free_at


class ShapingProxy:
    def __init__(self, host: str, port: int, shaping: Shaping, *, tunnel: bool = False) -> None:
        self.host = host
        self.port_target = port
        self.shaping = shaping
        self.tunnel = tunnel
        self.port = 0
        self._server: asyncio.Server | None = None
        self._up = _Link(shaping.bandwidth_mbps)
        self._down = _Link(shaping.bandwidth_mbps)
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "shaping proxy started",
            extra={"port": self.port, "target": f"{self.host}:{self.port_target}", "shaping": self.shaping.label()},
        )
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
                await self._server.wait_closed()
            self._server = None

    def _one_way_s(self) -> float:
        s = self.shaping
        return (s.rtt_ms + random.uniform(0, s.jitter_ms)) / 2000.0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        self._writers.add(writer)
        try:
            if self.tunnel:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
                if len(line) < 2 or line[0].upper() != "CONNECT" or line[1] != f"{self.host}:{self.port_target}":
                    writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    return
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port_target)
            self._writers.add(up_writer)
            if self.tunnel:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            await asyncio.gather(
                self._pipe(reader, up_writer, self._up),
                self._pipe(up_reader, writer, self._down),
            )
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
                    self._writers.discard(w)
            if task is not None:
                self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        """Copies one direction with delay and cap: a reader stamps chunks, a writer releases them."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def pump() -> None:
            last = 0.0
            try:
                while True:
                    data = await reader.read(READ_BYTES)
                    now = time.monotonic()
                    due = max(last, now + self._one_way_s())
                    last = due
                    await queue.put((due, data))
                    if not data:
                        return
            except OSError:
                await queue.put((time.monotonic(), b""))

        feeder = asyncio.create_task(pump())
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                due = link.reserve(len(data), due)
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
