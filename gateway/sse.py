"""Server-sent events made from gRPC streams (STYLE.md, "The gateway's SSE").

A route hands `stream_events` an async iterator of `Event`s that wraps one upstream gRPC stream.
`stream_events`:
- pulls the first event before sending a byte, so an upstream that fails at once (down, bad
  argument) gets a proper HTTP status and a JSON error, not a 200 with an error event;
- then sends named events with ids and JSON data through aiohttp-sse, which adds `: ping` every
  `ping_interval_s`;
- always ends with a terminal event (`done`, `error`, or `refused` when a guard refused): an
  upstream failure, an iterator that stops early, and a server shutdown all become an `error` event;
- closes the iterator in `finally`, which cancels the upstream call when the client went away
  (aiohttp cancels the handler on disconnect: `handler_cancellation=True`);
- registers itself in the app's `OPEN_STREAMS` WeakSet, so shutdown can end every stream with a
  terminal event and wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from kernel import tracing
from kernel.tracing import current_trace_id

from .access import CALLER
from .errors import ApiError, dumps, error_payload, json_error, json_error_payload
from .state import CONFIG, METRICS, OPEN_STREAMS

log = logging.getLogger(__name__)

TERMINAL = frozenset({"done", "error", "refused"})


@dataclass
class Event:
    """One SSE event: a name, JSON-able data and an optional id (a counter when None)."""

    name: str
    data: Any
    id: str | None = None
    # `data` already encoded, when the route has it (sent as is; `data` stays for other readers).
    raw: str | None = None


@dataclass(eq=False)
class OpenStream:
    """Handle on one open SSE response, kept in `OPEN_STREAMS` for shutdown."""

    task: asyncio.Task[Any]
    path: str
    caller: str = ""
    shutting_down: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def shutdown(self) -> None:
        """Ends the stream: the handler sends an `error` event (SHUTTING_DOWN) and returns."""
        if not self.finished.is_set():
            self.shutting_down = True
            self.task.cancel()


async def stream_events(
    request: web.Request,
    events: AsyncIterator[Event],
    *,
    terminal: frozenset[str] = TERMINAL,
    named: bool = True,
    wrap_error: Callable[[dict[str, Any]], Any] | None = None,
    status_from_first_error: bool = False,
) -> web.StreamResponse:
    """Serves `events` as SSE; see the module docstring for the guarantees.

    `named=False` sends bare `data:` lines with no event name or id (the OpenAI streaming
    format); a `str` data is then sent as is (`[DONE]`). `wrap_error` shapes the data of the
    error events this function makes itself. With `status_from_first_error`, a stream whose very
    first event is an `error` with a `status` becomes a JSON error with that HTTP status."""
    cfg = request.app[CONFIG]
    metrics = request.app[METRICS]
    task = asyncio.current_task()
    assert task is not None
    caller = request.get(CALLER, "")
    if cfg.max_streams_per_key > 0 and caller:
        held = sum(1 for h in request.app[OPEN_STREAMS] if h.caller == caller and not h.finished.is_set())
        if held >= cfg.max_streams_per_key:
            return json_error(
                ApiError(
                    429,
                    f"this caller already holds {held} open streams (the limit is {cfg.max_streams_per_key}); "
                    "close one and retry",
                    "TOO_MANY_STREAMS",
                )
            )
    handle = OpenStream(task, request.path, caller)
    trace_id = current_trace_id()
    stream_span: tracing.Span | None = None  # the request's, once the stream starts
    shape = wrap_error or (lambda payload: payload)
    request.app[OPEN_STREAMS].add(handle)
    counter = 0
    try:
        # The status is chosen here, before the first byte.
        try:
            first: Event | None = await anext(events)
        except StopAsyncIteration:
            first = None
        except asyncio.CancelledError:
            if handle.shutting_down:
                return json_error(ApiError(503, "the gateway is shutting down; retry", "SHUTTING_DOWN"))
            raise
        except Exception as err:  # noqa: BLE001 - any failure before the first byte picks the status
            # A refusal of the gateway's own (429 GATEWAY_BUSY, bad input) is in the access metrics;
            # a log line for each would be the hot path's biggest cost under overload.
            if not isinstance(err, ApiError):
                log.info("stream refused before start", extra={"path": request.path, "err": repr(err)})
            return json_error(err)

        if status_from_first_error and first is not None and first.name == "error" and isinstance(first.data, dict):
            status = first.data.get("status")
            if isinstance(status, int) and status >= 400:  # failed before anything was produced
                return json_error_payload(first.data)

        # The request's span (gateway/tracing.py) lasts until the terminal event; it gets the
        # stream's figures too (a span of its own would cost more than it tells).
        stream_span = tracing.current_span()
        stream_span.add_event("sse.open")
        async with sse_response(request, ping_interval=cfg.ping_interval_s, allow_all_methods=True) as sse:

            async def send(ev: Event) -> None:
                nonlocal counter
                counter += 1
                if ev.name == "done" and isinstance(ev.data, dict) and trace_id:
                    ev.data.setdefault("trace_id", trace_id)
                    if cfg.trace_url:
                        ev.data.setdefault("trace_url", cfg.trace_url.replace("{trace_id}", trace_id))
                if ev.name in terminal:
                    stream_span.set_attribute("ddnrag.sse.terminal_event", ev.name)
                if named:
                    data = ev.raw if ev.raw is not None else dumps(ev.data)
                    await sse.send(data, id=ev.id if ev.id is not None else str(counter), event=ev.name)
                else:
                    await sse.send(ev.data if isinstance(ev.data, str) else dumps(ev.data))
                metrics.sse_event(ev.name)
                if ev.name in ("done", "lane_done") and isinstance(ev.data, dict) and ev.data.get("ttft_ms"):
                    metrics.ttft.observe(ev.data["ttft_ms"] / 1000)

            ended = False
            try:
                if first is not None:
                    await send(first)
                    ended = first.name in terminal
                    while not ended:
                        try:
                            ev = await anext(events)
                        except StopAsyncIteration:
                            break
                        await send(ev)
                        ended = ev.name in terminal
                if not ended:
                    await send(
                        Event(
                            "error",
                            shape(
                                {
                                    "status": 502,
                                    "reason": "STREAM_ENDED",
                                    "message": "the upstream stream ended without a result",
                                }
                            ),
                        )
                    )
            except asyncio.CancelledError:
                if not handle.shutting_down:
                    raise  # the client went away: nothing more can be sent
                task.uncancel()
                await send(
                    Event(
                        "error",
                        shape({"status": 503, "reason": "SHUTTING_DOWN", "message": "the gateway is shutting down"}),
                    )
                )
            except (ConnectionResetError, ConnectionError):
                raise
            except Exception as err:
                if not isinstance(err, ApiError) and not hasattr(err, "http_status"):
                    log.exception("stream failed", extra={"path": request.path})
                await send(Event("error", shape(error_payload(err))))
        return sse
    finally:
        if stream_span is not None:
            stream_span.set_attribute("ddnrag.sse.events", counter)
        handle.finished.set()
        request.app[OPEN_STREAMS].discard(handle)
        with contextlib.suppress(BaseException):
            await events.aclose()  # type: ignore[attr-defined]


async def close_open_streams(app: web.Application) -> None:
    """on_shutdown: ends every open stream with a terminal event and waits for it (bounded)."""
    handles = list(app[OPEN_STREAMS])
    if not handles:
        return
    log.info("closing open streams", extra={"count": len(handles)})
    for h in handles:
        h.shutdown()
    waits = [asyncio.ensure_future(h.finished.wait()) for h in handles]
    _, pending = await asyncio.wait(waits, timeout=app[CONFIG].shutdown_grace_s)
    for p in pending:
        p.cancel()
