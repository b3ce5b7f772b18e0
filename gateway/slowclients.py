"""Bounds on clients that stop sending: a request body that stalls gets 408, never a handler
waiting on it forever (a slowloris on the body).

aiohttp has no server-side body-read timeout. Its request StreamReader waits for each piece of
body inside `with self._timer:`, and on a server that timer is a no-op; `body_timeout_middleware`
puts a per-wait timer there instead. A wait longer than `body_timeout_s` ends with
`HTTPRequestTimeout` raised from the read itself, so every reader (JSON, multipart uploads,
even one running in another task such as an upload's Put stream) sees a plain error, not a
cancellation. The request head is bounded by the server's keep-alive timeout (server.py).
tests/fuzz/test_raw_http.py sends stalled bodies and fails if this stops working.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from aiohttp import web
from aiohttp.typedefs import Handler

from .state import CONFIG


class BodyReadTimer:
    """A context manager around one wait for more body: past `timeout_s` it interrupts the
    waiting task and turns that into HTTPRequestTimeout."""

    __slots__ = ("_fired", "_handle", "_spent", "_task", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._fired = False
        self._spent = False

    def __enter__(self) -> BodyReadTimer:
        self._task = asyncio.current_task()
        self._fired = False
        # Once it has fired the request is over; aiohttp's own lingering read of what is left of
        # the body (bounded by its lingering_time) must not be interrupted again.
        if self._task is not None and not self._spent:
            self._handle = asyncio.get_running_loop().call_later(self.timeout_s, self._fire)
        return self

    def _fire(self) -> None:
        if self._task is not None and not self._task.done():
            self._fired = True
            self._task.cancel()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fired and exc_type is asyncio.CancelledError and self._task is not None:
            self._fired, self._spent = False, True
            self._task.uncancel()
            raise web.HTTPRequestTimeout(
                text=f"the request body stalled for {self.timeout_s:g} s; send it without pauses",
                headers={"Connection": "close"},
            )

    def assert_timeout(self) -> None:  # aiohttp's BaseTimerContext interface
        return None


@web.middleware
async def body_timeout_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.body_exists:
        request.content._timer = BodyReadTimer(request.app[CONFIG].body_timeout_s)  # type: ignore[attr-defined]
    return await handler(request)
