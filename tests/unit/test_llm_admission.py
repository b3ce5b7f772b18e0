"""The llm_gateway's admission (services/llm_gateway/admission.py): the adaptive limit, the bounded
queue and early refusal, and the core letting cache hits through without a permit. No timing is
asserted: latencies are fed to the limit as numbers, and waits are driven by events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from kernel.errors import ErrorKind, ServiceError
from services.llm_gateway.admission import Admission, GradientLimit, Pool, Ticket, ask_key
from services.llm_gateway.backend import BackendLimits, BackendRequest, Delta
from services.llm_gateway.cache import AnswerCache
from services.llm_gateway.core import LlmGateway
from services.llm_gateway.domain import (
    DoneEvent,
    ErrorEvent,
    GenParams,
    Passage,
    RetrievalEvent,
    RetrievedChunk,
    SearchResult,
    StartEvent,
)
from services.llm_gateway.tokens import TokenCounter, default_counter, pieces


async def collect(it: AsyncIterator[object]) -> list[object]:
    return [ev async for ev in it]


def feed(limit: GradientLimit, latency_s: float, inflight: int, windows: int) -> None:
    """`windows` full windows of the same latency at `inflight` permits in use."""
    for _ in range(windows):
        start = limit.windows
        while limit.windows == start:
            limit.sample(latency_s, inflight)


# ---- the limit ---------------------------------------------------------------------------------
def test_limit_grows_while_latency_stays_near_its_baseline() -> None:
    lim = GradientLimit(limit=8, ceiling=64)
    feed(lim, 0.050, inflight=8, windows=1)
    assert lim.baseline == pytest.approx(0.050)
    before = lim.limit
    feed(lim, 0.060, inflight=64, windows=5)  # within tolerance (2x) of the baseline, permits all used
    assert lim.limit > before


def test_limit_falls_when_latency_rises_and_recovers_after() -> None:
    lim = GradientLimit(limit=32, ceiling=64)
    feed(lim, 0.050, inflight=32, windows=1)  # the no-load baseline
    high = lim.limit
    feed(lim, 0.500, inflight=32, windows=6)  # 10x the baseline: the work queues inside the stack
    low = lim.limit
    assert low < high * 0.7
    feed(lim, 0.050, inflight=64, windows=10)
    assert lim.limit > low


def test_limit_does_not_grow_on_demand_limited_windows_and_keeps_its_bounds() -> None:
    lim = GradientLimit(limit=16, min_limit=2, ceiling=20)
    feed(lim, 0.050, inflight=16, windows=1)
    at = lim.limit
    feed(lim, 0.050, inflight=2, windows=5)  # few permits in use: demand, not capacity, was measured
    assert lim.limit == at
    feed(lim, 0.050, inflight=20, windows=50)
    assert lim.limit == 20  # the ceiling
    feed(lim, 50.0, inflight=20, windows=50)
    # 1000x the baseline: down to where halving meets the sqrt(limit) allowance (4), not below the floor
    assert 2 <= lim.limit <= 5


def test_baseline_rises_slowly_when_the_low_was_a_fluke() -> None:
    lim = GradientLimit(limit=8)
    feed(lim, 0.001, inflight=8, windows=1)
    feed(lim, 0.100, inflight=8, windows=200)
    assert lim.baseline is not None and lim.baseline > 0.05


# ---- permits, the queue, refusal ---------------------------------------------------------------
async def test_permits_queue_in_order_and_overload_is_refused_early_with_retry_after() -> None:
    adm = Pool(GradientLimit(limit=2, min_limit=2, ceiling=2), queue_factor=1.0, max_wait_s=60)
    a, b = await adm.acquire(), await adm.acquire()
    assert adm.inflight == 2
    waiters = [asyncio.create_task(adm.acquire()) for _ in range(2)]  # the queue holds 2 (= limit)
    while adm.queued < 2:
        await asyncio.sleep(0)
    with pytest.raises(ServiceError) as err:  # queue full: refused at once, not after a wait
        await adm.acquire()
    assert err.value.kind == ErrorKind.RESOURCE_EXHAUSTED and err.value.reason == "OVERLOADED"
    assert int(err.value.metadata["retry_after_s"]) >= 1 and adm.refused == 1
    a.release()
    a.release()  # idempotent
    first = await waiters[0]
    assert not waiters[1].done() and adm.inflight == 2
    b.release()
    second = await waiters[1]
    first.release()
    second.release()
    assert adm.inflight == 0 and adm.queued == 0


async def test_no_wait_refuses_when_full_and_a_cancelled_waiter_leaks_nothing() -> None:
    adm = Pool(GradientLimit(limit=2, min_limit=2, ceiling=2), max_wait_s=0)
    p = [await adm.acquire(), await adm.acquire()]
    with pytest.raises(ServiceError, match="at capacity"):
        await adm.acquire()
    adm.max_wait_s = 60
    waiter = asyncio.create_task(adm.acquire())
    while adm.queued < 1:
        await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert adm.queued == 0
    for x in p:
        x.release()
    assert adm.inflight == 0
    again = await adm.acquire()
    assert adm.inflight == 1
    again.release()


async def test_released_permits_feed_the_limit() -> None:
    lim = GradientLimit(limit=8, min_window=8)
    adm = Pool(lim)
    for _ in range(8):
        p = await adm.acquire()
        p.first_token()
        p.release()
    assert lim.windows == 1 and lim.baseline is not None
    p = await adm.acquire()
    p.release()  # no token (a failure): no sample
    assert lim._n == 0


# ---- the core: cache hits need no permit -------------------------------------------------------
class Backend:
    kind = "scripted"
    default_model = "scripted-1"
    name = "a"

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.limits = BackendLimits(retries=0)
        self.hold = hold
        self.calls = 0
        self.started = asyncio.Event()

    def models(self) -> list[str]:
        return [self.default_model]

    async def close(self) -> None:
        return None

    async def stream(self, request: BackendRequest) -> AsyncIterator[Delta]:
        self.calls += 1
        self.started.set()
        if self.hold is not None:
            await self.hold.wait()
        for p in pieces("It is so [1]."):
            yield Delta(text=p)
        yield Delta(finish_reason="stop")


class Searcher:
    def __init__(self) -> None:
        self.queries: list[str] = []

    async def search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int,
        backend: str,
        filters: Mapping[str, str],
        timeout: float | None,
    ) -> SearchResult:
        self.queries.append(query)
        return SearchResult((RetrievedChunk(Passage("It is so.", chunk_id="c1", document_name="d.md")),))


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return default_counter()


async def test_cache_hit_bypasses_a_full_admission_and_overload_is_refused_before_retrieval(
    counter: TokenCounter, tmp_path: Path
) -> None:
    hold = asyncio.Event()
    backend, searcher = Backend(), Searcher()
    admission = Admission(Pool(GradientLimit(limit=1, min_limit=1, ceiling=1), max_wait_s=0))
    gw = LlmGateway(
        [backend], counter, searcher=searcher, cache=AnswerCache(tmp_path / "c.sqlite", 1 << 20), admission=admission
    )
    try:
        cached = [ev async for ev in gw.answer("What is so?")]  # a miss: generated under a permit, cached
        assert isinstance(cached[-1], DoneEvent) and admission.full.inflight == 0
        backend.hold = hold
        backend.started.clear()
        # Takes the only permit, then holds in generation.
        busy = asyncio.create_task(collect(gw.answer("Another question?")))
        await backend.started.wait()
        assert admission.full.inflight == 1
        hit = [ev async for ev in gw.answer("What is so?")]  # served from the cache meanwhile
        start = next(ev for ev in hit if isinstance(ev, StartEvent))
        assert start.cache_hit and isinstance(hit[-1], DoneEvent) and admission.full.inflight == 1
        searched = len(searcher.queries)
        with pytest.raises(ServiceError) as err:  # a new question: refused before any work
            await anext(gw.answer("A third question?"))
        assert err.value.reason == "OVERLOADED" and int(err.value.metadata["retry_after_s"]) >= 1
        assert len(searcher.queries) == searched
        hold.set()
        assert isinstance((await busy)[-1], DoneEvent) and admission.full.inflight == 0
    finally:
        hold.set()
        await gw.close()


async def test_a_likely_hit_that_misses_takes_a_permit_after_retrieval(counter: TokenCounter) -> None:
    admission = Admission(Pool(GradientLimit(limit=1, min_limit=1, ceiling=1), max_wait_s=0))
    searcher = Searcher()
    gw = LlmGateway([Backend()], counter, searcher=searcher, admission=admission)
    try:
        admission.hints.add(ask_key("q?", "", "", 0, None, GenParams()))  # answered from the cache before
        held = await admission.full.acquire()  # and now no permit is free
        # Let in without a permit, it searches; its answer is not cached (any more), so it needs
        # one: the stream ends with an OVERLOADED error event, and the hint is forgotten.
        events = [ev async for ev in gw.answer("q?")]
        assert isinstance(events[0], RetrievalEvent) and len(searcher.queries) == 1
        assert isinstance(events[-1], ErrorEvent) and events[-1].error.reason == "OVERLOADED"
        assert not Ticket(admission, ask_key("q?", "", "", 0, None, GenParams())).likely_hit
        held.release()
        events = [ev async for ev in gw.answer("q?")]  # a permit is free again
        assert isinstance(events[-1], DoneEvent) and admission.full.inflight == 0
    finally:
        await gw.close()


async def test_likely_hits_hold_light_permits_never_full_ones_and_are_bounded_too(
    counter: TokenCounter, tmp_path: Path
) -> None:
    full = Pool(GradientLimit(limit=1, min_limit=1, ceiling=1), max_wait_s=0)
    light = Pool(GradientLimit(limit=1, min_limit=1, ceiling=1), max_wait_s=0, what="cache hits")
    admission = Admission(full, light)
    gw = LlmGateway(
        [Backend()],
        counter,
        searcher=Searcher(),
        cache=AnswerCache(tmp_path / "c.sqlite", 1 << 20),
        admission=admission,
    )
    try:
        assert isinstance((await collect(gw.answer("What is so?")))[-1], DoneEvent)  # cached, hinted
        held = await full.acquire()  # generation is saturated
        stream = gw.answer("What is so?")
        first = await anext(stream)  # a likely hit: in on a light permit, past the full pool
        assert isinstance(first, RetrievalEvent) and light.inflight == 1 and full.inflight == 1
        with pytest.raises(ServiceError) as err:  # the light pool is bounded as well
            await anext(gw.answer("What is so?"))
        assert "cache hits" in err.value.message and err.value.reason == "OVERLOADED"
        rest = [ev async for ev in stream]
        assert isinstance(rest[-1], DoneEvent) and any(isinstance(e, StartEvent) and e.cache_hit for e in rest)
        assert light.inflight == 0 and full.inflight == 1  # the hit never took the full permit
        held.release()
    finally:
        await gw.close()


async def test_retry_after_grows_with_the_callers_refused_just_before() -> None:
    # Each refused caller waits out there to come back: the next one is told to wait for them too.
    pool = Pool(GradientLimit(limit=2, min_limit=2, ceiling=2), max_wait_s=0, clock=lambda: 100.0)
    held = [await pool.acquire(), await pool.acquire()]
    waits = []
    for _ in range(6):
        with pytest.raises(ServiceError) as err:
            await pool.acquire()
        waits.append(int(err.value.metadata["retry_after_s"]))
    assert waits == sorted(waits) and waits[-1] > waits[0] >= 1
    for p in held:
        p.release()
