"""The caller's deadline, passed on to every downstream call made while serving it.

A servicer calls `adopt(context)` first; every typed client (clients/base.py) then caps the
timeout of each call it makes from that task, and from the tasks it starts, at what is left.
So a Search given 50 ms never leaves an Embed or BatchGet running downstream for 30 s: the
peer gets the same deadline, and gRPC ends the call there too.

Only request paths adopt it (Search, Answer): a long job started from an RPC must not inherit
the short deadline of the call that started it. grpc.aio runs each RPC in its own task, so the
value set here never outlives the call's task and the tasks it spawns.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Protocol

_DEADLINE: ContextVar[float | None] = ContextVar("ddnrag_deadline", default=None)

# Never hand a peer less than this: a call with a 0 s deadline fails before it is sent, which
# reads the same as an expired one but costs nothing.
MIN_TIMEOUT_S = 0.001


class HasTimeRemaining(Protocol):
    def time_remaining(self) -> float | None: ...


def adopt(context: HasTimeRemaining | None) -> float | None:
    """Makes the incoming call's deadline the bound of every outgoing call from this task.
    Returns the seconds left (None when the caller set no deadline)."""
    left = None if context is None else context.time_remaining()
    _DEADLINE.set(None if left is None else time.monotonic() + left)
    return left


def remaining() -> float | None:
    """Seconds left of the adopted deadline, or None when there is none."""
    at = _DEADLINE.get()
    return None if at is None else max(MIN_TIMEOUT_S, at - time.monotonic())


def cap(timeout: float) -> float:
    """`timeout`, shortened to the adopted deadline when that comes first."""
    left = remaining()
    return timeout if left is None else min(timeout, left)
