"""Wire-level stamps for boto3 requests: when the request was handed to the socket, and when
the kernel received the first byte of the response.

botocore's request building, signing and response parsing cost hundreds of microseconds of
Python per call, and a busy process may not look at a socket for a while after data arrived; on
a store with sub-millisecond TTFB either would drown the number the product exists to show. So
the request is stamped just before its first write (a thread switch after the stamp can only
lengthen the TTFB, never shorten it), and the response with the kernel's receive timestamp of
its first segment (`SO_TIMESTAMPNS`, read with `MSG_PEEK`, nothing consumed), as tcpdump would
see it. Where the kernel stamp is unavailable (not Linux, TLS peeking refused) the stamp is the
moment the socket became readable. Stamps are per thread; `reset()` starts an operation.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from typing import Any

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value where Python lacks the name
_CMSG_SPACE = socket.CMSG_SPACE(16) if hasattr(socket, "CMSG_SPACE") else 0
_stamps = threading.local()
_installed = False
_lock = threading.Lock()


def reset() -> None:
    _stamps.sent_ns = 0
    _stamps.sent_wall = 0
    _stamps.resp_ns = 0
    _stamps.body_early = False


def sent_ns() -> int:
    """perf_counter ns just before this thread's request was written (first `send` since
    `reset`), or 0."""
    return getattr(_stamps, "sent_ns", 0)


def response_ns() -> int:
    """perf_counter ns when the first byte of this thread's response reached the host, or 0."""
    return getattr(_stamps, "resp_ns", 0)


def body_came_with_headers() -> bool:
    """True when body bytes arrived together with the response headers."""
    return getattr(_stamps, "body_early", False)


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


def _before_send(conn: Any) -> None:
    if not getattr(_stamps, "sent_ns", 0):
        sock = getattr(conn, "sock", None)
        if sock is not None and getattr(conn, "_ddnrag_ts", None) is not sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                conn._ddnrag_ts = sock
            except OSError:
                pass
        _stamps.sent_wall = time.time_ns()
        _stamps.sent_ns = time.perf_counter_ns()


def _before_getresponse(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None or not getattr(_stamps, "sent_ns", 0):
        return
    try:
        pending = getattr(sock, "pending", None)
        if not (pending and pending()):
            select.select([sock], [], [], sock.gettimeout())
        now = time.perf_counter_ns()
        _stamps.resp_ns = now
        got = _kernel_arrival(sock) if getattr(conn, "_ddnrag_ts", None) is sock else None
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
        _before_send(self)
        return super().send(data)  # type: ignore[misc]

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
            _before_send(self)
            return orig_send(self, data)

        def getresponse(self: Any, *args: Any, **kwargs: Any) -> Any:
            _before_getresponse(self)
            return super(AWSConnection, self).getresponse(*args, **kwargs)

        AWSConnection.send = send  # type: ignore[method-assign]
        AWSConnection.getresponse = getresponse  # type: ignore[attr-defined]
        _installed = True
