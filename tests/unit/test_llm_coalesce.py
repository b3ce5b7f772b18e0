"""Token events that are ready together leave as one message (services/llm_gateway/coalesce.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kernel.errors import ServiceError, unavailable
from services.llm_gateway.coalesce import coalesced
from services.llm_gateway.domain import StartEvent, TokenEvent


async def test_tokens_ready_together_are_joined_in_order_up_to_the_limit() -> None:
    async def stream() -> AsyncIterator[object]:
        yield StartEvent("a", "m", False)
        for i in range(20):  # all ready at once, as the extractive generator makes them
            yield TokenEvent(f"w{i} ", i, 1)
        yield "done"

    out = [ev async for ev in coalesced(stream(), max_pieces=8)]
    assert out[0] == StartEvent("a", "m", False) and out[-1] == "done"
    toks = [ev for ev in out if isinstance(ev, TokenEvent)]
    assert "".join(t.text for t in toks) == "".join(f"w{i} " for i in range(20))
    assert len(toks) < 20 and all(t.count <= 8 for t in toks)
    assert toks[0].text.startswith("w0 ") and toks[0].count == 8  # the first joins what is queued behind it
    assert [t.index for t in toks] == [sum(x.count for x in toks[:k]) for k in range(len(toks))]
    assert sum(t.count for t in toks) == 20


async def test_a_token_that_arrives_alone_leaves_alone() -> None:
    gate = asyncio.Event()

    async def stream() -> AsyncIterator[object]:
        yield TokenEvent("one ", 0, 1)
        await gate.wait()
        yield TokenEvent("two", 1, 1)

    it = coalesced(stream())
    assert await anext(it) == TokenEvent("one ", 0, 1)  # sent before the next token exists
    gate.set()
    assert [ev async for ev in it] == [TokenEvent("two", 1, 1)]


async def test_an_error_is_raised_and_closing_early_closes_the_stream() -> None:
    async def failing() -> AsyncIterator[object]:
        raise unavailable("down", reason="DOWN")
        yield  # pragma: no cover

    with pytest.raises(ServiceError, match="down"):
        await anext(coalesced(failing()))

    closed = asyncio.Event()
    forever = asyncio.Event()

    async def endless() -> AsyncIterator[object]:
        try:
            yield TokenEvent("a", 0, 1)
            await forever.wait()
        finally:
            closed.set()

    it = coalesced(endless())
    await anext(it)
    await it.aclose()
    assert closed.is_set()
