"""The LLM gateway's work in plain Python: Generate and Answer as async iterators of events.

Error rule: a failure before the first event raises `ServiceError` (the RPC ends with its status,
so the HTTP gateway can still pick an HTTP code); a failure after the first event is yielded as an
`ErrorEvent`, the stream's last event.

Which backend answers (failover, retries, concurrency limits, cooldowns) is `router.Router`'s
business.

Answer cache: the key (see `cache_key`) names the first candidate backend and its model. Only
complete answers from that first choice are stored, so a fallback's answer given during an outage
is not served from the cache once the first choice is back. A hit streams at once, flagged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from kernel.errors import ServiceError, invalid, unavailable
from kernel.timing import Timer

from .admission import Admission, Ticket, ask_key
from .backend import Backend, Delta
from .cache import AnswerCache, CachedAnswer, cache_key, replay
from .checks import RefusedEvent, VerifyEvent, regenerate_with, search_with
from .citations import Renumberer
from .conversations import ConversationStore
from .domain import (
    DEFAULT_TOP_K,
    MAX_PASSAGES,
    MAX_TOP_K,
    AnswerEvent,
    Citation,
    CitationEvent,
    DoneEvent,
    ErrorEvent,
    GenerateEvent,
    GenParams,
    ModelInfo,
    Passage,
    RetrievalEvent,
    SearchResult,
    StartEvent,
    TokenEvent,
    Usage,
    check_question,
)
from .followup import history_turns, standalone_question
from .prompt import build_prompt
from .ready import ReadyAnswers, ready_or
from .rewrite import (
    HistoryTurn,
    trim_history,
)
from .router import Router
from .stats import StreamStats
from .tokens import TokenCounter
from .turns import recorded

log = logging.getLogger(__name__)

# Contexts up to this many characters are tokenized on the event loop (about 0.1 ms per KB);
# larger ones on a worker thread.
INLINE_PROMPT_CHARS = 16_000


class Searcher(Protocol):
    """The retriever's Search, as the core needs it."""

    async def search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int,
        backend: str,
        filters: Mapping[str, str],
        timeout: float | None,
    ) -> SearchResult: ...


class LlmGateway:
    """Generate / Answer over a list of backends in failover order."""

    def __init__(
        self,
        backends: Sequence[Backend],
        counter: TokenCounter,
        *,
        searcher: Searcher | None = None,
        cache: AnswerCache | None = None,
        context_budget_tokens: int = 3072,
        retrieval_timeout_s: float = 30.0,
        conversations: ConversationStore | None = None,
        history_budget_tokens: int = 1024,
        rewrite_timeout_s: float = 15.0,
        admission: Admission | None = None,
        ready: ReadyAnswers | None = None,
    ) -> None:
        self.router = Router(backends)
        # Permits for answers that run the pipeline; cache hits run without one (admission.py).
        self.admission = admission
        # Answers served from the cache, replayed while the index stands (ready.py).
        self.ready = ready
        self.counter = counter
        self.searcher = searcher
        self.cache = cache
        self.context_budget_tokens = context_budget_tokens
        self.retrieval_timeout_s = retrieval_timeout_s
        self.conversations = conversations
        self.history_budget_tokens = history_budget_tokens
        self.rewrite_timeout_s = rewrite_timeout_s
        # Peers' clients (encoder, searcher) closed with the gateway.
        self.closers: list[Any] = []
        # Guardrails and the groundedness check (checks.AnswerChecks), set by the server.
        self.checks: Any = None

    @property
    def backends(self) -> list[Backend]:
        return self.router.backends

    # ---- listing and cache -------------------------------------------------------------------
    def list_models(self) -> list[ModelInfo]:
        return self.router.list_models()

    async def close(self) -> None:
        await self.router.close()
        if self.ready is not None:
            await self.ready.versions.close()
        if self.cache is not None:
            await self.cache.close()
        for c in self.closers:
            with contextlib.suppress(Exception):
                await c.close()

    # ---- validation -------------------------------------------------------------------------
    def _validate(self, question: str, params: GenParams) -> list[Backend]:
        check_question(question, params)
        return self.router.candidates(params)

    # ---- Generate ---------------------------------------------------------------------------
    async def generate(
        self, question: str, passages: Sequence[Passage], params: GenParams | None = None
    ) -> AsyncIterator[GenerateEvent]:
        """Streams start, tokens, citations and done for `question` over `passages`."""
        params = params or GenParams()
        if len(passages) > MAX_PASSAGES:
            raise invalid(f"{len(passages)} passages given; the limit is {MAX_PASSAGES}", reason="TOO_MANY_PASSAGES")
        for i, p in enumerate(passages, start=1):
            if not p.text.strip():
                raise invalid(f"passage {i} has no text", reason="EMPTY_PASSAGE")
        timer = Timer()
        ticket = Ticket(self.admission)
        try:
            async with contextlib.aclosing(
                self._generate(question, passages, params, timer, started=False, ticket=ticket)
            ) as it:
                async for ev in it:
                    yield ev
        finally:
            ticket.release()

    async def _generate(
        self,
        question: str,
        passages: Sequence[Passage],
        params: GenParams,
        timer: Timer,
        *,
        started: bool,
        rag_t0_ns: int = 0,
        history: Sequence[HistoryTurn] = (),
        ticket: Ticket | None = None,
    ) -> AsyncIterator[GenerateEvent]:
        t0 = time.perf_counter_ns()
        ticket = ticket or Ticket(None)
        try:
            candidates = self._validate(question, params)
            with timer.stage("prompt") as st:
                args = (question, passages, self.counter, self.context_budget_tokens, history)
                if sum(len(p.text) for p in passages) <= INLINE_PROMPT_CHARS:
                    # Tokenizing a few KB takes well under a millisecond: cheaper than a thread hop.
                    prompt = build_prompt(*args)
                else:
                    prompt = await asyncio.to_thread(build_prompt, *args)
                st.count = len(prompt.passages)
        except ServiceError as err:
            if not started:
                raise
            yield ErrorEvent(err)
            return

        first = candidates[0]
        model = params.model or first.default_model
        key = cache_key(question, prompt, first.name, model, params)
        if self.cache is not None and not params.no_cache:
            with timer.stage("cache_lookup"):
                hit = await self.cache.get(key)
            if hit is not None:
                ticket.hit()  # a full permit goes back now; a light one is kept to the end
                async for ev in replay(hit, prompt, timer, t0, rag_t0_ns):
                    yield ev
                return

        try:
            ticket.miss()
            await ticket.take(timer)  # generation runs under a full permit (waits briefly, or OVERLOADED)
            opened = await self.router.open(candidates, prompt, params, timer)
        except ServiceError as err:
            if not started:
                raise
            yield ErrorEvent(err)
            return

        backend, first_delta = opened.backend, opened.first
        req_model = params.model or backend.default_model
        stats = StreamStats(t0)
        parts: list[str] = []
        counts: list[int] = []
        usage: Usage | None = None
        finish = ""
        index = 0
        renumber = Renumberer(len(prompt.passages))
        held = 0  # backend tokens whose text the renumberer still holds (an open "[..")
        # Arrival times are taken when a delta arrives from the backend, before it is sent on.
        marked = first_delta is not None and bool(first_delta.text)
        ticket.first_token()
        if marked:
            stats.mark(first_delta.count)  # type: ignore[union-attr]
        try:
            yield StartEvent(backend.name, req_model, False)
            delta: Delta | None = first_delta
            with timer.stage("generate", backend=backend.name) as gen_stage:
                while delta is not None:
                    if delta.text:
                        if marked:
                            marked = False
                        else:
                            stats.mark(delta.count)
                        out = renumber.feed(delta.text)
                        held += delta.count
                        if out:
                            parts.append(out)
                            counts.append(held)
                            yield TokenEvent(out, index, held)
                            index += held
                            held = 0
                    if delta.usage is not None:
                        usage = delta.usage
                    if delta.finish_reason:
                        finish = delta.finish_reason
                    delta = await opened.next()
                tail = renumber.flush()
                if tail:
                    parts.append(tail)
                    counts.append(held)
                    yield TokenEvent(tail, index, held)
                    index += held
                gen_stage.count = index
                # OpenTelemetry GenAI semantic conventions, on the generate stage's span.
                gen_stage.attrs.update(
                    stats.genai_attrs(backend.name, req_model, finish, usage, prompt.prompt_tokens, index)
                )
        except ServiceError as err:
            # Mid-stream failure: the partial answer stays with the caller; nothing is cached.
            log.warning("backend failed mid-stream", extra={"backend": backend.name, "reason": err.reason})
            yield ErrorEvent(err)
            return
        finally:
            await opened.aclose()

        text = "".join(parts)
        cmap = prompt.citation_map
        citations = tuple(Citation(i + 1, cmap[n]) for i, n in enumerate(renumber.order))
        for c in citations:
            yield CitationEvent(c)
        if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
            usage = Usage(prompt.prompt_tokens, self.counter.count(text), "tokenizer")
        p50, p99 = stats.inter_token()
        cached = CachedAnswer(
            backend=backend.name,
            model=req_model,
            pieces=tuple(parts),
            counts=tuple(counts),
            finish_reason=finish or "stop",
            usage=usage,
            citation_numbers=tuple(renumber.order),
        )
        if self.cache is not None and backend is first and not params.no_cache and finish in ("stop", "length"):
            with timer.stage("cache_store"):
                await self.cache.put(key, cached)
            ticket.remember()  # asked again, this question will likely be a hit
        yield DoneEvent(
            usage=usage,
            ttft_ns=stats.ttft_ns,
            rag_ttft_ns=(stats.times[0] - rag_t0_ns) if (rag_t0_ns and stats.times) else 0,
            generation_ns=stats.generation_ns,
            tokens_per_s=stats.tokens_per_s(usage.completion_tokens),
            inter_token_p50_ns=p50,
            inter_token_p99_ns=p99,
            finish_reason=finish or "stop",
            citations=citations,
            text=text,
            stages=tuple(timer.stages),
            total_ns=timer.total_ns(),
        )

    # ---- Answer -----------------------------------------------------------------------------
    async def answer(
        self,
        question: str,
        *,
        collection: str = "",
        storage_backend: str = "",
        top_k: int = 0,
        params: GenParams | None = None,
        filters: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        conversation_id: str = "",
        history: Sequence[tuple[str, str]] = (),
    ) -> AsyncIterator[AnswerEvent | VerifyEvent | RefusedEvent]:
        """Retrieve-then-generate: a `retrieval` event, then the events of Generate, through the
        guardrails and the groundedness check (`checks`, when set).

        With a conversation (or `history`, (role, content) pairs), retrieval searches the
        standalone question rewritten from the history (trimmed oldest first to the history
        budget). The turn is stored in the conversation after the checks, before `done`: the text
        as sent (redacted, guarded) with its verify score; an output refusal stores the question
        with the refusal's message; an input refusal stores nothing."""
        params = params or GenParams()
        stream: AsyncIterator[Any] = self._answer(
            question,
            collection=collection,
            storage_backend=storage_backend,
            top_k=top_k,
            params=params,
            filters=filters,
            timeout_s=timeout_s,
            conversation_id=conversation_id,
            history=history,
        )
        if self.checks is not None:
            search = search_with(self, collection, top_k, storage_backend, filters or {}, timeout_s)
            stream = self.checks.wrap(
                question,
                stream,
                kinds={b.name: b.kind for b in self.backends},
                search=search,
                regenerate=regenerate_with(self, question, params),
            )
        # A question answered from the cache a moment ago is answered again without retrieval.
        key = (
            ""
            if conversation_id or history or params.no_cache
            else ask_key(question, collection, storage_backend, top_k, filters, params)
        )
        served = ready_or(self.ready, key, collection or "default", recorded(self.conversations, question, stream))
        async with contextlib.aclosing(served) as events:  # type: ignore[type-var]
            async for ev in events:
                yield ev

    async def _answer(
        self,
        question: str,
        *,
        collection: str,
        storage_backend: str,
        top_k: int,
        params: GenParams,
        filters: Mapping[str, str] | None,
        timeout_s: float | None,
        conversation_id: str,
        history: Sequence[tuple[str, str]],
    ) -> AsyncIterator[AnswerEvent]:
        """Answer's retrieval and generation, before any check (`conversation_id` is checked and
        named in the `retrieval` event; `recorded` stores the turn)."""
        rag_t0 = time.perf_counter_ns()
        timer = Timer()
        candidates = self._validate(question, params)
        if not 0 <= top_k <= MAX_TOP_K:
            raise invalid(f"top_k must be within 1..{MAX_TOP_K} (0 means 5), got {top_k}", reason="BAD_TOP_K")
        if self.searcher is None:
            raise unavailable("no retriever is configured", reason="NO_RETRIEVER")
        # A question that was recently answered from the cache runs without a permit; any other
        # takes one now, before retrieval, so overload is refused before any work is done.
        hint = (
            ""
            if (conversation_id or history or params.no_cache)
            else ask_key(question, collection, storage_backend, top_k, filters, params)
        )
        ticket = Ticket(self.admission, hint)
        await ticket.enter(timer)
        try:
            conv_id, turns = await history_turns(self.conversations, conversation_id, history, timer)
            trimmed = trim_history(turns, self.counter, self.history_budget_tokens)
            search_query, method = await standalone_question(
                self.router, self.counter, question, trimmed, candidates, params, timer, self.rewrite_timeout_s
            )
            timeout = min(timeout_s, self.retrieval_timeout_s) if timeout_s else self.retrieval_timeout_s
            with timer.stage("retrieve") as st:
                result = await self.searcher.search(
                    collection or "default",
                    search_query,
                    top_k=top_k or DEFAULT_TOP_K,
                    backend=storage_backend,
                    filters=filters or {},
                    timeout=timeout,
                )
                st.count = len(result.chunks)
            yield RetrievalEvent(
                result,
                search_query=search_query,
                rewrite=method,
                history_turns=len(trimmed.turns),
                history_turns_trimmed=trimmed.dropped,
                conversation_id=conv_id,
            )
            passages = [c.passage for c in result.chunks if c.ok]
            async with contextlib.aclosing(
                self._generate(
                    search_query,
                    passages,
                    params,
                    timer,
                    started=True,
                    rag_t0_ns=rag_t0,
                    history=trimmed.turns,
                    ticket=ticket,
                )
            ) as it:
                async for ev in it:
                    yield ev
        finally:
            ticket.release()
