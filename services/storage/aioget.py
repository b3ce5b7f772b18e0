"""Small-object GETs on the event loop: keep-alive sockets, no executor thread, no HTTP library.

Every answer reads its top-k chunks, so a 4 KiB GET is the storage service's hot path. Through
an executor thread and urllib3 it cost about 1.7 ms of CPU here (thread hand-offs, urllib3 and
http.client's header parsing, botocore's signer), more than the store spent serving it. This
client sends the request and parses the response itself, on non-blocking sockets driven by the
event loop, and signs with `sigv4.GetSigner`. Measured side by side in the README (Performance).

What it keeps, so that callers see no difference:
- Timing, as wire.py defines it: the request's start is the kernel's software send stamp
  (`SO_TIMESTAMPING`), the response's arrival the kernel's receive stamp of the first segment
  (`SO_TIMESTAMPNS`, read with the data by `recvmsg`), and TTFB runs to the first body byte (the
  stamp of the segment that carried it), not the end of the download.
- Errors: a store error is raised as the botocore `ClientError` boto3 would raise (status and
  `<Code>`), transport failures as `ConnectionError` / `TimeoutError`, so errors.py maps and
  retries them exactly as before.
- Tracing: `traceparent` on the request and the store's request id on the span (s3trace.py).

Scope: plain-HTTP, path-style backends with static credentials (the local SeaweedFS, an emulated
backend's loopback proxy, an appliance on a trusted network). TLS endpoints keep fastget.py's
pooled urllib3 GETs and anything else boto3 (backends.py decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from . import s3trace
from .fastget import headers_to_resp
from .model import BackendSpec, Credentials, Kind
from .sigv4 import GetSigner, object_path
from .wire import MSG_ERRQUEUE, SO_TIMESTAMPING, SO_TIMESTAMPNS, TX_FLAGS

_CODE_RE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_CMSG = socket.CMSG_SPACE(16)
_ERRQ = 512
_READ = 65536
_MAX_HEAD = 64 * 1024


class Unsupported(Exception):
    """A response this client does not parse (chunked encoding): the caller uses another path."""


class _Conn:
    """One keep-alive connection; `tx` when the kernel stamps its sends."""

    __slots__ = ("sock", "tx", "used")

    def __init__(self, sock: socket.socket, tx: bool) -> None:
        self.sock = sock
        self.tx = tx
        self.used = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Reply:
    """One response: status, headers (lower-case names), body and the measured instants
    (perf_counter ns): `sent_ns` (request left), `first_ns` (first body byte, or the response
    when it has no body), `end_ns` (last byte)."""

    __slots__ = ("body", "end_ns", "first_ns", "headers", "sent_ns", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, sent: int, first: int, end: int) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.sent_ns, self.first_ns, self.end_ns = sent, first, end

    def fields(self) -> dict[str, Any]:
        """boto3's GetObject fields (fastget.headers_to_resp)."""
        return headers_to_resp(self.headers)


def _stamp(anc: list[tuple[int, int, bytes]]) -> int:
    """The wall-clock ns of a SO_TIMESTAMPNS / SO_TIMESTAMPING control message, or 0."""
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind in (SO_TIMESTAMPNS, SO_TIMESTAMPING) and len(raw) >= 16:
            sec, nsec = struct.unpack_from("qq", raw)
            return sec * 1_000_000_000 + nsec
    return 0


def _drain_tx(sock: socket.socket) -> int:
    """The earliest send stamp waiting in the socket's error queue (draining it), or 0."""
    best = 0
    for _ in range(16):
        try:
            _d, anc, _f, _a = sock.recvmsg(0, _ERRQ, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        ts = _stamp(anc)
        if ts and (not best or ts < best):
            best = ts
    return best


class AsyncGetter:
    def __init__(
        self,
        spec: BackendSpec,
        creds: Credentials | None,
        endpoint: str,
        pool_size: int,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        u = urlsplit(endpoint)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        # The Host header as botocore sends and signs it: no port when it is the default one.
        self.host_header = u.netloc.rsplit("@", 1)[-1] if u.port not in (None, 80) else (u.hostname or "")
        self.signer = (
            GetSigner(creds.access_key_id, creds.secret_access_key, creds.session_token, spec.region)
            if creds is not None
            else None
        )
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(max(1, pool_size))
        self._closed = False

    @staticmethod
    def supports(spec: BackendSpec, creds: Credentials | None, endpoint: str, proxies: object) -> bool:
        return bool(
            endpoint
            and urlsplit(endpoint).scheme == "http"
            and spec.effective_addressing == "path"
            and proxies is None
            and (creds is not None or spec.kind is not Kind.AWS_S3)
        )

    def _request(self, bucket: str, key: str, rng: str) -> bytes:
        path = object_path(bucket, key)
        extra = {"Range": rng} if rng else {}
        headers = self.signer.headers(self.host_header, path, extra) if self.signer is not None else extra
        s3trace.add_traceparent(headers)  # after signing: unsigned, as for boto3 (s3trace.py)
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host_header}", "Accept-Encoding: identity"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def get(self, bucket: str, key: str, rng: str = "") -> Reply:
        """One GET: the whole response. A store error raises `ClientError`; a transport failure
        `ConnectionError` or `TimeoutError`."""
        req = self._request(bucket, key, rng)
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                reply, reusable = await self._exchange(conn, req)
            except _Stale:
                # A kept-alive connection the store had closed meanwhile: nothing was answered,
                # so the (idempotent) GET goes once more on a new connection.
                conn.close()
                conn = await self._connect()
                try:
                    reply, reusable = await self._exchange(conn, req)
                except _Stale as err:
                    conn.close()
                    raise ConnectionResetError(f"the store closed the connection: {err}") from None
                except BaseException:
                    conn.close()
                    raise
            except BaseException:
                conn.close()
                raise
            if reusable and not self._closed:
                self._idle.append(conn)
            else:
                conn.close()
        s3trace.record_headers(reply.headers, reply.status)
        if reply.status >= 300:
            m = _CODE_RE.search(reply.body)
            code = m.group(1).decode() if m else str(reply.status)
            meta = {"HTTPStatusCode": reply.status, "RequestId": reply.headers.get("x-amz-request-id", "")}
            raise ClientError({"Error": {"Code": code, "Message": ""}, "ResponseMetadata": meta}, "GetObject")
        return reply

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tx = True
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TX_FLAGS)
        except OSError:
            tx = False
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await loop.sock_connect(sock, (self.host, self.port))
        except TimeoutError:
            sock.close()
            raise TimeoutError(
                f"connecting to {self.host}:{self.port} took over {self.connect_timeout_s:g} s"
            ) from None
        except BaseException:
            sock.close()
            raise
        return _Conn(sock, tx)

    async def _exchange(self, conn: _Conn, req: bytes) -> tuple[Reply, bool]:
        """Sends `req`, reads the response. Raises `_Stale` when a reused connection turns out
        closed before any response byte."""
        sock, reused = conn.sock, conn.used
        conn.used = True
        sent_wall = time.time_ns()
        sent = time.perf_counter_ns()
        try:
            n = sock.send(req)
        except BlockingIOError:
            n = 0  # a full send buffer: the loop sends it below
        except (BrokenPipeError, ConnectionResetError) as err:
            if reused:
                raise _Stale(str(err)) from None
            raise
        if n < len(req):
            await asyncio.get_running_loop().sock_sendall(sock, req[n:])
        if conn.tx:
            tx = _drain_tx(sock)
            if tx and tx >= sent_wall:
                sent, sent_wall = sent + (tx - sent_wall), tx
        buf = bytearray()
        head_end = -1
        arrivals: list[tuple[int, int]] = []  # (offset in buf, perf ns the segment arrived)
        while head_end < 0:
            data, when = await self._recv(conn, sent, sent_wall)
            if not data:
                if not buf and reused:
                    raise _Stale("end of stream before the response")
                raise ConnectionResetError("the store closed the connection in the middle of a response")
            arrivals.append((len(buf), when))
            buf += data
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0 and len(buf) > _MAX_HEAD:
                raise ConnectionError("the store sent response headers over 64 KiB")
        status, headers = _parse_head(bytes(buf[:head_end]))
        body_at = head_end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise Unsupported("chunked response")
        length = int(headers["content-length"]) if "content-length" in headers else -1
        reusable = length >= 0 and headers.get("connection", "").lower() != "close"
        while length < 0 or len(buf) - body_at < length:
            data, when = await self._recv(conn, sent, sent_wall)
            if not data:
                if length < 0:
                    break
                raise ConnectionResetError(
                    f"the store closed the connection after {len(buf) - body_at} of {length} bytes"
                )
            arrivals.append((len(buf), when))
            buf += data
        end = time.perf_counter_ns()
        body = bytes(buf[body_at : body_at + length] if length >= 0 else buf[body_at:])
        if len(buf) > body_at + max(length, 0) and length >= 0:
            reusable = False  # more than was announced: do not trust the connection
        # The first body byte arrived with the segment holding offset `body_at` (the headers'
        # segment for a small object); a response without a body has its arrival instead.
        first = arrivals[0][1]
        if body:
            for off, when in arrivals:
                if off <= body_at:
                    first = when
                else:
                    break
        return Reply(status, headers, body, sent, first, end), reusable

    async def _recv(self, conn: _Conn, sent: int, sent_wall: int) -> tuple[bytes, int]:
        """The next bytes and when they reached the host (perf_counter ns: the kernel's receive
        stamp, mapped through the send stamp, else when they were read)."""
        try:
            data, anc = self._try_recv(conn)
        except BlockingIOError:
            data, anc = await self._wait_recv(conn)
        now = time.perf_counter_ns()
        ts = _stamp(anc)
        when = now
        if ts:
            at = sent + (ts - sent_wall)
            if sent <= at <= now:
                when = at
        return data, when

    def _try_recv(self, conn: _Conn) -> tuple[bytes, list[tuple[int, int, bytes]]]:
        try:
            data, anc, _f, _a = conn.sock.recvmsg(_READ, _CMSG)
        except (ConnectionResetError, BrokenPipeError):
            return b"", []
        return data, anc

    async def _wait_recv(self, conn: _Conn) -> tuple[bytes, list[tuple[int, int, bytes]]]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[bytes, list[tuple[int, int, bytes]]]] = loop.create_future()
        fd = conn.sock.fileno()

        def ready() -> None:
            if fut.done():
                return
            if conn.tx:
                _drain_tx(conn.sock)  # a late send stamp raises POLLERR: take it off the queue
            try:
                fut.set_result(self._try_recv(conn))
            except BlockingIOError:
                return
            except OSError as err:
                fut.set_exception(err)

        def expire() -> None:
            if not fut.done():
                fut.set_exception(TimeoutError(f"the store sent nothing for {self.read_timeout_s:g} s"))

        loop.add_reader(fd, ready)
        timer = loop.call_later(self.read_timeout_s, expire)
        try:
            return await fut
        finally:
            timer.cancel()
            loop.remove_reader(fd)

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for c in idle:
            c.close()


class _Stale(Exception):
    """A reused keep-alive connection was found closed before any response byte."""


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"the store sent a malformed status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers
