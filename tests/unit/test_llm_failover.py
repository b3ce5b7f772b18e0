"""The LLM gateway core's rules over scripted backends (test doubles defined here): the stream of
start, tokens, citations and done; retries, failover and cooldowns; concurrency limits; bad
input; the answer cache's hit and a mid-stream failure that is never cached."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kernel.errors import ErrorKind, ServiceError
from services.llm_gateway.backend import BackendError, BackendLimits, BackendRequest, Delta
from services.llm_gateway.cache import AnswerCache
from services.llm_gateway.core import LlmGateway
from services.llm_gateway.domain import (
    CitationEvent,
    DoneEvent,
    ErrorEvent,
    GenParams,
    Passage,
    StartEvent,
    TokenEvent,
    Usage,
)
from services.llm_gateway.tokens import TokenCounter, default_counter, pieces


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return default_counter()


# ---- core failover over scripted backends ---------------------------------------------------
class ScriptedBackend:
    """Test double: fails `fail_times` times with `error`, then streams `text` word by word,
    optionally holding after the first word until `release` is set."""

    kind = "scripted"
    default_model = "scripted-1"

    def __init__(
        self,
        name: str,
        text: str = "Answer [1].",
        *,
        error: BackendError | None = None,
        fail_times: int = 0,
        limits: BackendLimits | None = None,
        hold: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self.text = text
        self.error = error
        self.fail_times = fail_times
        self.limits = limits or BackendLimits(retries=1, backoff_s=0.001)
        self.hold = hold
        self.calls = 0

    def models(self) -> list[str]:
        return [self.default_model]

    async def close(self) -> None:
        return None

    async def stream(self, request: BackendRequest) -> AsyncIterator[Delta]:
        self.calls += 1
        if self.error is not None and self.calls <= self.fail_times:
            raise self.error
        for i, p in enumerate(pieces(self.text)):
            yield Delta(text=p)
            if i == 0 and self.hold is not None:
                await self.hold.wait()
        yield Delta(finish_reason="stop")


def _err(name: str, retryable: bool, kind: ErrorKind = ErrorKind.UNAVAILABLE) -> BackendError:
    return BackendError(kind, f"{name} failed", reason="X", backend=name, retryable=retryable)


async def _collect(it: AsyncIterator[object]) -> list[object]:
    return [ev async for ev in it]


PASSAGES = [Passage("Some passage text.", chunk_id="c1", document_name="d.md")]


async def test_core_streams_start_tokens_citations_done(counter: TokenCounter) -> None:
    gw = LlmGateway([ScriptedBackend("a", "It is so [1].")], counter)
    evs = await _collect(gw.generate("q?", PASSAGES))
    assert evs[0] == StartEvent("a", "scripted-1", False)
    toks = [e for e in evs if isinstance(e, TokenEvent)]
    assert "".join(t.text for t in toks) == "It is so [1]." and [t.index for t in toks] == [0, 1, 2, 3]
    cites = [e for e in evs if isinstance(e, CitationEvent)]
    assert [c.citation.number for c in cites] == [1] and cites[0].citation.passage.chunk_id == "c1"
    done = evs[-1]
    assert isinstance(done, DoneEvent)
    assert done.usage == Usage(done.usage.prompt_tokens, counter.count("It is so [1]."), "tokenizer")
    assert done.usage.prompt_tokens > 0 and done.ttft_ns > 0 and done.finish_reason == "stop"
    assert [s.name for s in done.stages] == ["prompt", "first_token", "generate"]


async def test_core_retries_then_fails_over(counter: TokenCounter) -> None:
    a = ScriptedBackend("a", error=_err("a", True), fail_times=99)
    b = ScriptedBackend("b", error=_err("b", True), fail_times=1)
    gw = LlmGateway([a, b], counter)
    evs = await _collect(gw.generate("q?", PASSAGES))
    assert evs[0] == StartEvent("b", "scripted-1", False)
    assert (a.calls, b.calls) == (2, 2)  # a: first try + 1 retry; b: fails once, then answers


async def test_core_does_not_retry_a_non_retryable_failure(counter: TokenCounter) -> None:
    a = ScriptedBackend("a", error=_err("a", False, ErrorKind.INVALID_ARGUMENT), fail_times=99)
    gw = LlmGateway([a], counter)
    with pytest.raises(ServiceError) as info:
        await _collect(gw.generate("q?", PASSAGES))
    assert info.value.kind == ErrorKind.INVALID_ARGUMENT and a.calls == 1


async def test_core_all_failed_names_every_backend(counter: TokenCounter) -> None:
    gw = LlmGateway(
        [
            ScriptedBackend("a", error=_err("a", False), fail_times=9),
            ScriptedBackend("b", error=_err("b", False), fail_times=9),
        ],
        counter,
    )
    with pytest.raises(ServiceError) as info:
        await _collect(gw.generate("q?", PASSAGES))
    assert info.value.reason == "ALL_BACKENDS_FAILED" and info.value.kind == ErrorKind.UNAVAILABLE
    assert "a: a failed" in info.value.message and "b: b failed" in info.value.message


async def test_core_concurrency_limit_skips_then_exhausts(counter: TokenCounter) -> None:
    hold = asyncio.Event()
    a = ScriptedBackend("a", limits=BackendLimits(max_concurrency=1), hold=hold)
    b = ScriptedBackend("b", limits=BackendLimits(max_concurrency=1), hold=hold)
    gw = LlmGateway([a, b], counter)
    s1, s2 = gw.generate("q?", PASSAGES), gw.generate("q?", PASSAGES)
    assert (await anext(s1)).backend == "a"
    assert (await anext(s2)).backend == "b"  # a is full: failover to b
    assert [(m.in_flight, m.max_concurrency) for m in gw.list_models()] == [(1, 1), (1, 1)]
    with pytest.raises(ServiceError) as info:
        await _collect(gw.generate("q?", PASSAGES))
    assert info.value.kind == ErrorKind.RESOURCE_EXHAUSTED and info.value.reason == "BACKEND_BUSY"
    pinned = gw.generate("q?", PASSAGES, GenParams(backend="a"))
    with pytest.raises(ServiceError, match="concurrency limit"):
        await anext(pinned)
    hold.set()
    await _collect(s1)
    await _collect(s2)
    assert gw.router.slots["a"].used == 0 and gw.router.slots["b"].used == 0
    assert isinstance((await _collect(gw.generate("q?", PASSAGES)))[-1], DoneEvent)


async def test_core_releases_slot_when_caller_stops_early(counter: TokenCounter) -> None:
    hold = asyncio.Event()
    gw = LlmGateway([ScriptedBackend("a", limits=BackendLimits(max_concurrency=1), hold=hold)], counter)
    s = gw.generate("q?", PASSAGES)
    await anext(s)
    await anext(s)
    await s.aclose()
    assert gw.router.slots["a"].used == 0


@pytest.mark.parametrize(
    ("question", "params", "reason"),
    [
        ("  ", GenParams(), "EMPTY_QUESTION"),
        ("x" * 4097, GenParams(), "QUESTION_TOO_LONG"),
        ("q", GenParams(temperature=2.5), "BAD_TEMPERATURE"),
        ("q", GenParams(max_tokens=-1), "BAD_MAX_TOKENS"),
        ("q", GenParams(backend="nope"), "UNKNOWN_BACKEND"),
        ("q", GenParams(model="nope"), "UNKNOWN_MODEL"),
    ],
)
async def test_core_rejects_bad_input(counter: TokenCounter, question: str, params: GenParams, reason: str) -> None:
    gw = LlmGateway([ScriptedBackend("a")], counter)
    with pytest.raises(ServiceError) as info:
        await _collect(gw.generate(question, PASSAGES, params))
    assert info.value.reason == reason


async def test_core_rejects_empty_passage(counter: TokenCounter) -> None:
    gw = LlmGateway([ScriptedBackend("a")], counter)
    with pytest.raises(ServiceError, match="passage 2 has no text"):
        await _collect(gw.generate("q", [PASSAGES[0], Passage("  ")]))


async def test_core_cache_hit_replays_and_is_flagged(counter: TokenCounter, tmp_path: Path) -> None:
    a = ScriptedBackend("a", "Cached answer [1].")
    cache = AnswerCache(tmp_path / "c.sqlite", 1 << 20)
    gw = LlmGateway([a], counter, cache=cache)
    try:
        first = await _collect(gw.generate("q?", PASSAGES))
        second = await _collect(gw.generate("q?", PASSAGES))
        assert a.calls == 1
        assert second[0] == StartEvent("a", "scripted-1", True)
        d1, d2 = first[-1], second[-1]
        assert isinstance(d1, DoneEvent) and isinstance(d2, DoneEvent)
        assert d2.text == d1.text and d2.usage == d1.usage and d2.citations == d1.citations
        assert [s.name for s in d2.stages] == ["prompt", "cache_lookup"]
        await _collect(gw.generate("q?", PASSAGES, GenParams(no_cache=True)))
        assert a.calls == 2
    finally:
        await gw.close()


async def test_core_mid_stream_failure_is_an_error_event_and_not_cached(counter: TokenCounter, tmp_path: Path) -> None:
    class Breaking(ScriptedBackend):
        async def stream(self, request: BackendRequest) -> AsyncIterator[Delta]:
            self.calls += 1
            yield Delta(text="Partial ")
            raise _err(self.name, True)

    b = Breaking("a")
    gw = LlmGateway([b], counter, cache=AnswerCache(tmp_path / "c.sqlite", 1 << 20))
    try:
        evs = await _collect(gw.generate("q?", PASSAGES))
        assert isinstance(evs[0], StartEvent) and isinstance(evs[1], TokenEvent)
        assert isinstance(evs[-1], ErrorEvent) and b.calls == 1  # no retry after the first token
        assert (await gw.cache.stats()).entries == 0  # type: ignore[union-attr]
    finally:
        await gw.close()


async def test_core_failed_backend_goes_last_during_its_cooldown(counter: TokenCounter) -> None:
    a = ScriptedBackend("a", error=_err("a", False), fail_times=1, limits=BackendLimits(retries=0, cooldown_s=60))
    b = ScriptedBackend("b")
    gw = LlmGateway([a, b], counter)
    assert (await _collect(gw.generate("q?", PASSAGES)))[0].backend == "b"
    assert (await _collect(gw.generate("q?", PASSAGES)))[0].backend == "b"
    assert a.calls == 1  # in its cooldown, a was not tried first again
    assert [(m.backend, m.healthy) for m in gw.list_models()] == [("a", False), ("b", True)]
    assert [x.name for x in gw.router.candidates(GenParams())] == ["b", "a"]
    pinned = await _collect(gw.generate("q?", PASSAGES, GenParams(backend="a")))
    assert pinned[0].backend == "a"  # pinned requests still go to it; its success clears the cooldown
    assert [x.name for x in gw.router.candidates(GenParams())] == ["a", "b"]


async def test_core_rejected_request_does_not_cool_the_backend_down(counter: TokenCounter) -> None:
    a = ScriptedBackend("a", error=_err("a", False, ErrorKind.INVALID_ARGUMENT), fail_times=1)
    gw = LlmGateway([a, ScriptedBackend("b")], counter)
    with pytest.raises(ServiceError):
        await _collect(gw.generate("q?", PASSAGES, GenParams(backend="a")))
    assert "a" not in gw.router.down_until
