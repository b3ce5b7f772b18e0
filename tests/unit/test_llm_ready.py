"""Ready answers (services/llm_gateway/ready.py): an answer served from the cache is answered again
without retrieval, without a permit, while the collection's index version stands; a new version,
`no_cache` or a conversation take the ordinary path. The clock is a counter: no timing is asserted."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from kernel.sentences import SentenceVectors
from services.llm_gateway.admission import Admission, GradientLimit, Pool
from services.llm_gateway.cache import AnswerCache
from services.llm_gateway.core import LlmGateway
from services.llm_gateway.domain import DoneEvent, Passage, RetrievalEvent, RetrievedChunk, SearchResult, StartEvent
from services.llm_gateway.ready import IndexVersions, ReadyAnswers
from services.llm_gateway.tokens import TokenCounter, default_counter
from tests.unit.test_llm_admission import Backend


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class VersionedSearcher:
    """Search over one chunk in index `version`; ListCollections reports the same version."""

    def __init__(self) -> None:
        self.version = "v1"
        self.queries: list[str] = []
        self.listed = 0

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
        vectors = SentenceVectors("m", ("k1",), np.ones((1, 4), dtype=np.float16))
        p = Passage("It is so.", chunk_id="c1", document_name="d.md", sentence_vectors=vectors)
        return SearchResult((RetrievedChunk(p),), index_version=self.version)

    async def index_versions(self) -> dict[str, str]:
        self.listed += 1
        return {"default": self.version}


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return default_counter()


def start_of(events: list[object]) -> StartEvent:
    return next(e for e in events if isinstance(e, StartEvent))


async def test_a_cached_answer_is_served_again_without_retrieval_or_permit(
    counter: TokenCounter, tmp_path: Path
) -> None:
    searcher, clock = VersionedSearcher(), Clock()
    ready = ReadyAnswers(IndexVersions(searcher.index_versions, fresh_s=1.0, clock=clock))
    full = Pool(GradientLimit(limit=1, min_limit=1, ceiling=1), max_wait_s=0)
    gw = LlmGateway(
        [Backend()],
        counter,
        searcher=searcher,
        cache=AnswerCache(tmp_path / "c.sqlite", 1 << 20),
        admission=Admission(full),
        ready=ready,
    )
    try:
        generated = [ev async for ev in gw.answer("What is so?")]  # generated and cached: not kept
        assert not start_of(generated).cache_hit and not ready._entries
        hit = [ev async for ev in gw.answer("What is so?")]  # from the answer cache: kept
        assert start_of(hit).cache_hit and len(ready._entries) == 1
        entry = next(iter(ready._entries.values()))
        retrieval = next(e for e in entry.events if isinstance(e, RetrievalEvent))
        assert retrieval.result.chunks[0].passage.sentence_vectors is None  # not kept in memory
        searched = len(searcher.queries)

        held = await full.acquire()  # generation saturated: a ready answer needs no permit
        again = [ev async for ev in gw.answer("What is so?")]
        held.release()
        assert len(searcher.queries) == searched and ready.hits == 1
        assert start_of(again).cache_hit
        done, first = again[-1], hit[-1]
        assert isinstance(done, DoneEvent) and isinstance(first, DoneEvent)
        assert done.text == first.text and done.citations == first.citations
        assert [s.name for s in done.stages] == ["ready_answer"]
        assert [type(e) for e in again] == [type(e) for e in hit]
        assert ready.clear() == 1 and not ready._entries  # what a purge of the answer cache does
    finally:
        await gw.close()


async def test_a_new_index_version_ends_the_replay(counter: TokenCounter, tmp_path: Path) -> None:
    searcher, clock = VersionedSearcher(), Clock()
    ready = ReadyAnswers(IndexVersions(searcher.index_versions, fresh_s=1.0, clock=clock))
    gw = LlmGateway(
        [Backend()], counter, searcher=searcher, cache=AnswerCache(tmp_path / "c.sqlite", 1 << 20), ready=ready
    )
    try:
        for _ in range(3):
            [ev async for ev in gw.answer("What is so?")]
        assert ready.hits == 1
        searcher.version = "v2"  # a new index goes live
        clock.now = 5.0  # the version seen is no longer fresh: the retriever is asked again
        searched = len(searcher.queries)
        [ev async for ev in gw.answer("What is so?")]  # the ordinary path meanwhile
        assert len(searcher.queries) == searched + 1
        while searcher.listed == 0:
            await asyncio.sleep(0)
        assert ready.versions.current("default") == "v2"
        # That answer came from the answer cache again (the same passages in v2): kept for v2.
        assert [r.version for r in ready._entries.values()] == ["v2"]
        [ev async for ev in gw.answer("What is so?")]
        assert ready.hits == 2 and len(searcher.queries) == searched + 1
    finally:
        await gw.close()


async def test_no_cache_and_conversations_are_never_replayed(counter: TokenCounter, tmp_path: Path) -> None:
    from services.llm_gateway.domain import GenParams

    searcher = VersionedSearcher()
    ready = ReadyAnswers(IndexVersions(searcher.index_versions, clock=Clock()))
    gw = LlmGateway(
        [Backend()], counter, searcher=searcher, cache=AnswerCache(tmp_path / "c.sqlite", 1 << 20), ready=ready
    )
    try:
        for _ in range(3):
            [ev async for ev in gw.answer("What is so?")]
        searched = len(searcher.queries)
        [ev async for ev in gw.answer("What is so?", params=GenParams(no_cache=True))]
        [ev async for ev in gw.answer("What is so?", history=[("user", "Hello?"), ("assistant", "Hi.")])]
        assert len(searcher.queries) == searched + 2 and ready.hits == 1
    finally:
        await gw.close()
