"""Token events that are ready together leave in one message.

Every message costs the same on each hop whatever it carries: a protobuf built and sent here, one
received and converted in the gateway, one SSE event written. The extractive generator makes its
whole answer at once, and an LLM under load is read faster than the gateway can take it, so tokens
pile up between two sends. `coalesced` runs the event stream in a task of its own and sends, each
time the caller is ready for the next message, every token event queued behind the first one
(consecutive, at most `max_pieces` of them) as one `TokenEvent` -- the pieces joined, `index` of
the first, `count` the sum -- so nothing waits for company: a token that arrives alone leaves
alone, at once. The first token is no exception (it used to leave alone): joining what is
already queued behind it does not delay it, and an answer made at once (extractive, or replayed
from the cache) then leaves in one message. Other events pass unchanged and in order. An error
raised by the stream is raised here; closing this generator cancels the task, which closes the
stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from .domain import TokenEvent

# Pieces joined into one message at most. Pieces that are ready together reach the client at
# the same moment however they are split, so the cap only bounds one message's size: 64 word
# pieces (a few hundred bytes). It was 8: an extractive answer (~45 pieces, all ready at once)
# then left in ~7 messages, each a protobuf here, a gRPC read and an SSE event in the gateway;
# per-message work is most of what a replayed answer costs on both sides (bench/gateway_load.py).
MAX_PIECES = 64


class _Raised:
    def __init__(self, err: BaseException) -> None:
        self.err = err


_END = object()


async def coalesced(stream: AsyncIterator[Any], max_pieces: int = MAX_PIECES) -> AsyncIterator[Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for ev in stream:
                queue.put_nowait(ev)
        except Exception as err:  # noqa: BLE001 - handed to the reader, which raises it
            queue.put_nowait(_Raised(err))
        finally:
            queue.put_nowait(_END)
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]

    task = asyncio.create_task(pump())
    held: Any = None
    try:
        while True:
            ev = held if held is not None else await queue.get()
            held = None
            if ev is _END:
                return
            if isinstance(ev, _Raised):
                raise ev.err
            if isinstance(ev, TokenEvent) and not queue.empty():
                parts, count = [ev.text], ev.count
                while len(parts) < max_pieces and not queue.empty():
                    nxt = queue.get_nowait()
                    if not isinstance(nxt, TokenEvent):
                        held = nxt
                        break
                    parts.append(nxt.text)
                    count += nxt.count
                if len(parts) > 1:
                    ev = TokenEvent("".join(parts), ev.index, count)
            yield ev
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
