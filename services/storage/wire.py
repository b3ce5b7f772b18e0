"""Wire-level stamps for S3 requests: when the kernel sent the request, and when it received
the first byte of the response.

botocore's request building, signing and response parsing cost hundreds of microseconds of
Python per call, and a busy process may not run a thread for milliseconds (the GIL, a loaded
machine); on a store with sub-millisecond TTFB either would drown the number the product exists
to show. So both ends are kernel timestamps, as tcpdump would see them: the request's from the
socket error queue (`SO_TIMESTAMPING`, software TX stamps), the response's from the receive
queue (`SO_TIMESTAMPNS`, read with `MSG_PEEK`, nothing consumed). Where a kernel stamp is
missing, the request falls back to a stamp taken just before the write (a thread switch can only
lengthen the TTFB, never shorten it) and the response to when the socket became readable.
Stamps are per thread; `reset()` starts an operation.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from typing import Any

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux values where Python lacks the names
SO_TIMESTAMPING = getattr(socket, "SO_TIMESTAMPING", 37)
# SOF_TIMESTAMPING_TX_SOFTWARE | _SOFTWARE | _OPT_ID | _OPT_TSONLY: software send stamps, no payload.
TX_FLAGS = (1 << 1) | (1 << 4) | (1 << 7) | (1 << 11)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_CMSG_SPACE = socket.CMSG_SPACE(16) if hasattr(socket, "CMSG_SPACE") else 0
_ERRQ_SPACE = 512
_stamps = threading.local()
_installed = False
_lock = threading.Lock()


def reset() -> None:
    _stamps.tx_wall = 0
    _stamps.sent_ns = 0
    _stamps.sent_wall = 0
    _stamps.resp_ns = 0
    _stamps.body_early = False


def sent_ns() -> int:
    """perf_counter ns when this thread's request (first `send` since `reset`) left: the
    kernel's send stamp once the response was awaited, else just before the write; 0 if none."""
    return getattr(_stamps, "sent_ns", 0)


def response_ns() -> int:
    """perf_counter ns when the first byte of this thread's response reached the host, or 0."""
    return getattr(_stamps, "resp_ns", 0)


def body_came_with_headers() -> bool:
    """True when body bytes arrived together with the response headers."""
    return getattr(_stamps, "body_early", False)


def _wait_readable(sock: socket.socket, timeout: float | None) -> None:
    """poll(), not select(): a busy benchmark has far more than FD_SETSIZE (1024) sockets open."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    poller.poll(None if timeout is None else max(0, int(timeout * 1000)))


def _nonblocking(fn: Any) -> Any:
    """Runs `fn(sock, ...)` with the socket non-blocking: with a timeout set, Python would first
    wait for POLLIN, which neither an error queue nor MSG_DONTWAIT satisfies."""

    def run(sock: socket.socket, *args: Any) -> Any:
        timeout = sock.gettimeout()
        sock.settimeout(0)
        try:
            return fn(sock, *args)
        finally:
            sock.settimeout(timeout)

    return run


@_nonblocking
def _kernel_arrival(sock: socket.socket) -> tuple[int, bytes] | None:
    """(wall-clock ns the kernel received the first queued segment, the queued bytes)."""
    if not _CMSG_SPACE:
        return None
    data, anc, _flags, _addr = socket.socket.recvmsg(sock, 16384, _CMSG_SPACE, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
            sec, nsec = struct.unpack("qq", raw[:16])
            return sec * 1_000_000_000 + nsec, data
    return None


@_nonblocking
def _kernel_sent(sock: socket.socket, not_before: int) -> int:
    """Drains the socket's error queue; the earliest software TX stamp at or after
    `not_before` (wall ns), or 0."""
    best = 0
    for _ in range(64):
        try:
            _data, anc, _flags, _addr = socket.socket.recvmsg(sock, 0, _ERRQ_SPACE, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return best
        for level, kind, raw in anc:
            # The stamp comes as SO_TIMESTAMPING (when still switched on) and as SO_TIMESTAMPNS
            # (always on for these sockets): the same software send time either way.
            if level == socket.SOL_SOCKET and kind in (SO_TIMESTAMPING, SO_TIMESTAMPNS) and len(raw) >= 16:
                sec, nsec = struct.unpack("qq", raw[:16])
                ts = sec * 1_000_000_000 + nsec
                if ts >= not_before and (not best or ts < best):
                    best = ts
    return best


def _before_send(conn: Any) -> bool:
    """Stamps the first write of a request; True when TX timestamping was switched on for it
    (the caller switches it off again with `_after_send`)."""
    if getattr(_stamps, "sent_ns", 0):
        return False
    sock = getattr(conn, "sock", None)
    if sock is None and getattr(conn, "auto_open", False):
        conn.connect()  # what http.client's send() would do first; now the socket can be stamped
        sock = getattr(conn, "sock", None)
    tx = False
    if sock is not None:
        if getattr(conn, "_ddnrag_ts", None) is not sock:
            conn._ddnrag_tx = False
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                conn._ddnrag_ts = sock
                conn._ddnrag_tx = True
            except OSError:
                pass
        # botocore waits up to 1 s for "100 Continue" by polling the socket; a pending error-queue
        # entry would wake that poll early and leave it blocked on a read, so such requests are
        # not TX-stamped (their start falls back to the stamp below).
        if getattr(conn, "_ddnrag_tx", False) and not getattr(conn, "_expect_header_set", False):
            # Only this write is TX-stamped: stamps of every body write would pile up in the
            # error queue (charged to the receive buffer) during a large upload.
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TX_FLAGS)
                tx = True
            except OSError:
                conn._ddnrag_tx = False
    _stamps.sent_wall = time.time_ns()
    _stamps.sent_ns = time.perf_counter_ns()
    return tx


def _after_send(conn: Any, tx: bool) -> None:
    if tx:
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, 0)
                _stamps.tx_wall = _kernel_sent(sock, _stamps.sent_wall)  # usually there already
            except OSError:
                pass


def _before_getresponse(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None or not getattr(_stamps, "sent_ns", 0):
        return
    kernel = getattr(conn, "_ddnrag_ts", None) is sock
    tx_on = kernel and getattr(conn, "_ddnrag_tx", False)
    timeout = sock.gettimeout()
    try:
        pending = getattr(sock, "pending", None)
        tx = getattr(_stamps, "tx_wall", 0) or (_kernel_sent(sock, _stamps.sent_wall) if tx_on else 0)
        got = None
        for _ in range(8):
            if not (pending and pending()):
                _wait_readable(sock, timeout)
            if tx_on:  # a late TX stamp also wakes the poll (POLLERR): drain it, then look again
                tx = tx or _kernel_sent(sock, _stamps.sent_wall)
            if not kernel:
                break
            try:
                got = _kernel_arrival(sock)
                break
            except BlockingIOError:
                continue
        now = time.perf_counter_ns()
        if tx and _stamps.sent_ns + (tx - _stamps.sent_wall) <= now:
            _stamps.sent_ns += tx - _stamps.sent_wall
            _stamps.sent_wall = tx
        _stamps.resp_ns = now
        if got is not None:
            arrival_wall, head = got
            delta = arrival_wall - _stamps.sent_wall
            if 0 < delta and _stamps.sent_ns + delta <= now:
                _stamps.resp_ns = _stamps.sent_ns + delta
            if pending is None:  # plain HTTP: the bytes are readable as they are
                end = head.find(b"\r\n\r\n")
                _stamps.body_early = end >= 0 and len(head) > end + 4
    except (OSError, ValueError, NotImplementedError):
        pass


class TimedConnectionMixin:
    """For urllib3 connection classes: the same stamps as botocore's patched connection."""

    def send(self, data: Any) -> Any:
        tx = _before_send(self)
        try:
            return super().send(data)  # type: ignore[misc]
        finally:
            _after_send(self, tx)

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _before_getresponse(self)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


def install() -> None:
    """Wraps botocore's AWSConnection.send/getresponse once per process."""
    global _installed
    with _lock:
        if _installed:
            return
        from botocore.awsrequest import AWSConnection

        orig_send = AWSConnection.send

        def send(self: Any, data: Any) -> Any:
            tx = _before_send(self)
            try:
                return orig_send(self, data)
            finally:
                _after_send(self, tx)

        def getresponse(self: Any, *args: Any, **kwargs: Any) -> Any:
            _before_getresponse(self)
            return super(AWSConnection, self).getresponse(*args, **kwargs)

        AWSConnection.send = send  # type: ignore[method-assign]
        AWSConnection.getresponse = getresponse  # type: ignore[attr-defined]
        _installed = True
