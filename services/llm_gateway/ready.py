"""Ready answers: a cached answer's whole stream, replayed without retrieval while the index stands.

The answer cache (cache.py) is keyed by the passages found, so a hit still costs a retrieval (a
Search: query embedding or the retrieval cache, a BatchGet of the chunks through storage), the
prompt, a SQLite read, the guardrails and the groundedness check: about as much CPU as the answer
itself on this stack. `ReadyAnswers` keeps, in memory, the events an answer served *from the
cache* was sent as (retrieval, start, tokens, citations, verify, done: after the checks), under a
key of what the caller asked (`admission.ask_key`) and the collection's index version. Asked
again, the same question is answered from them at once: a fresh `start` (flagged `cache_hit`), the
same text, citations and verification, and a `done` whose timings show the one `ready_answer`
stage.

Only answers that came from the answer cache are kept (so what is replayed is what the cache
would have given), never a conversation's (its question is rewritten from the history), never one
asked with `no_cache`, never a refusal or an error.

Freshness: an entry is served only while its index version is the collection's live version as
seen within the last `fresh_s` (1 s): by a Search of this llm_gateway, or by the retriever's
ListCollections, asked at most once per `fresh_s` and only when a ready answer is wanted. A new
index version therefore stops the replay within about a second (plus the retriever's own
follow delay): answers are never served from an index older than that. When the retriever
cannot be asked, nothing is replayed: the question takes the ordinary path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from kernel.errors import ServiceError
from kernel.timing import Stage

from .domain import CitationEvent, DoneEvent, Passage, RetrievalEvent, StartEvent, TokenEvent

log = logging.getLogger(__name__)

# Collection name -> its live index version.
Lister = Callable[[], Awaitable[dict[str, str]]]


class IndexVersions:
    """The live index version of each collection as last seen, and when; refreshed from `lister`
    (the retriever's ListCollections) at most once per `fresh_s`, in the background."""

    def __init__(
        self, lister: Lister | None, fresh_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lister = lister
        self.fresh_s = fresh_s
        self.clock = clock
        self._seen: dict[str, tuple[str, float]] = {}
        self._refresh: asyncio.Task[None] | None = None
        self._asked = float("-inf")
        self.refreshes = 0

    def saw(self, collection: str, version: str) -> None:
        self._seen[collection] = (version, self.clock())

    def current(self, collection: str) -> str | None:
        """The version seen within `fresh_s`, else None (and a refresh starts)."""
        seen = self._seen.get(collection)
        now = self.clock()
        if seen is not None and now - seen[1] <= self.fresh_s:
            return seen[0]
        if self.lister is not None and self._refresh is None and now - self._asked >= self.fresh_s:
            self._asked = now
            self._refresh = asyncio.get_running_loop().create_task(self._list())
        return None

    async def _list(self) -> None:
        try:
            versions = await self.lister()  # type: ignore[misc]
            for name, version in versions.items():
                self.saw(name, version)
            self.refreshes += 1
        except (ServiceError, TimeoutError) as err:
            log.info("index versions not refreshed", extra={"error": str(err)})
        finally:
            self._refresh = None

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(BaseException):
                await self._refresh


@dataclass(frozen=True)
class Ready:
    """One answer's events as sent, and the index version it was found in."""

    collection: str
    version: str
    events: tuple[object, ...]


class ReadyAnswers:
    """Bounded (`size` answers, least recently used out first), in memory."""

    def __init__(self, versions: IndexVersions, size: int = 1024) -> None:
        self.versions = versions
        self.size = size
        self._entries: OrderedDict[str, Ready] = OrderedDict()
        self.hits = 0
        self.stale = 0

    def clear(self) -> int:
        """Forgets every ready answer (the answer cache was purged); returns how many."""
        n = len(self._entries)
        self._entries.clear()
        return n

    def get(self, key: str, collection: str) -> Ready | None:
        ready = self._entries.get(key)
        if ready is None:
            return None
        live = self.versions.current(collection)
        if live is None or live != ready.version:
            if live is not None:  # a new index: this answer may no longer be the one it gives
                del self._entries[key]
            self.stale += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return ready

    def put(self, key: str, collection: str, events: Sequence[object]) -> None:
        """Keeps `events` when they are a whole answer served from the cache (see the module
        docstring); anything else is ignored."""
        retrieval = next((e for e in events if isinstance(e, RetrievalEvent)), None)
        start = next((e for e in events if isinstance(e, StartEvent)), None)
        if retrieval is None or start is None or not start.cache_hit or not isinstance(events[-1], DoneEvent):
            return
        version = retrieval.result.index_version
        self.versions.saw(collection, version)
        self._entries[key] = Ready(collection, version, tuple(_lean(e) for e in events))
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def _no_vectors(p: Passage) -> Passage:
    return p if p.sentence_vectors is None else dataclasses.replace(p, sentence_vectors=None)


def _lean(ev: object) -> object:
    """`ev` without the passages' sentence vectors (the generator's input, never sent on)."""
    if isinstance(ev, RetrievalEvent):
        chunks = tuple(dataclasses.replace(c, passage=_no_vectors(c.passage)) for c in ev.result.chunks)
        return dataclasses.replace(ev, result=dataclasses.replace(ev.result, chunks=chunks))
    if isinstance(ev, CitationEvent):
        return CitationEvent(dataclasses.replace(ev.citation, passage=_no_vectors(ev.citation.passage)))
    if isinstance(ev, DoneEvent):
        cites = tuple(dataclasses.replace(c, passage=_no_vectors(c.passage)) for c in ev.citations)
        return dataclasses.replace(ev, citations=cites)
    return ev


async def replay(ready: Ready) -> AsyncIterator[object]:
    """The events of `ready`: `start` anew (a cache hit), the `done` timed now, the rest as sent."""
    t0 = time.perf_counter_ns()
    first_ns = 0
    for ev in ready.events:
        if isinstance(ev, RetrievalEvent):
            ev = dataclasses.replace(ev, result=dataclasses.replace(ev.result, cache_hit=True))
        elif isinstance(ev, StartEvent):
            ev = StartEvent(ev.backend, ev.model, True)
        elif isinstance(ev, TokenEvent) and not first_ns:
            first_ns = time.perf_counter_ns()
        elif isinstance(ev, DoneEvent):
            total = time.perf_counter_ns() - t0
            ttft = (first_ns - t0) if first_ns else 0
            ev = dataclasses.replace(
                ev,
                ttft_ns=ttft,
                rag_ttft_ns=ttft,
                generation_ns=total - ttft,
                stages=(Stage("ready_answer", total),),
                total_ns=total,
            )
        yield ev


async def ready_or(
    ready: ReadyAnswers | None, key: str, collection: str, stream: AsyncIterator[object]
) -> AsyncIterator[object]:
    """The ready answer for `key` when there is one (`stream` is then closed unread), else
    `stream`'s events, kept as a ready answer when they qualify. An empty `key`: `stream` as is."""
    hit = ready.get(key, collection) if ready is not None and key else None
    if hit is not None:
        await stream.aclose()  # type: ignore[attr-defined]
        async for ev in replay(hit):
            yield ev
        return
    events: list[object] = []
    async with contextlib.aclosing(stream) as src:  # type: ignore[type-var]
        async for ev in src:
            if ready is not None:
                if isinstance(ev, RetrievalEvent) and ev.result.index_version:
                    ready.versions.saw(collection, ev.result.index_version)
                if key:
                    events.append(ev)
            yield ev
    if ready is not None and key and events:
        ready.put(key, collection, events)
