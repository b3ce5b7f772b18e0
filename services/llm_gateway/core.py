"""The LLM gateway's work in plain Python: Generate and Answer as async iterators of events.

Error rule: a failure before the first event raises `ServiceError` (the RPC ends with its status,
so the HTTP gateway can still pick an HTTP code); a failure after the first event is yielded as an
`ErrorEvent`, the stream's last event.

Failover: candidates are the pinned backend, or every backend in failover order. A candidate at
its concurrency limit is skipped; RESOURCE_EXHAUSTED when all are. Before the first token a
retryable failure (connect error, HTTP 429/5xx, first-token timeout) is retried with backoff up to
`retries` times, then the next candidate is tried. After the first token nothing is retried.
A backend that failed (other than by rejecting the request) is tried last by unpinned requests
for its `cooldown_s`, so a dead first choice does not cost every request a timeout.

Answer cache: the key (see `cache_key`) names the first candidate backend and its model. Only
complete answers from that first choice are stored, so a fallback's answer given during an outage
is not served from the cache once the first choice is back. A hit streams at once, flagged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.common.errors import ErrorKind, ServiceError, exhausted, invalid, not_found, unavailable
from services.common.timing import Stage, Timer

from .backend import Backend, BackendError, BackendRequest, Delta
from .cache import AnswerCache, CachedAnswer
from .domain import (
    DEFAULT_TOP_K,
    MAX_MAX_TOKENS,
    MAX_PASSAGES,
    MAX_QUESTION_CHARS,
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
)
from .prompt import Prompt, build_prompt, citations_for
from .tokens import TokenCounter

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


@dataclass
class _Slots:
    """A non-blocking concurrency limit."""

    limit: int
    used: int = 0

    def try_acquire(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def release(self) -> None:
        self.used -= 1


class StreamStats:
    """Arrival times of tokens: TTFT, generation time, inter-token percentiles."""

    def __init__(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns
        self.times: list[int] = []

    def mark(self, count: int = 1) -> None:
        now = time.perf_counter_ns()
        self.times.extend([now] * max(1, count))

    @property
    def ttft_ns(self) -> int:
        return self.times[0] - self.t0_ns if self.times else 0

    @property
    def generation_ns(self) -> int:
        return self.times[-1] - self.times[0] if len(self.times) > 1 else 0

    def inter_token(self) -> tuple[int, int]:
        gaps = sorted(b - a for a, b in zip(self.times, self.times[1:], strict=False))
        if not gaps:
            return 0, 0
        return _pct(gaps, 50), _pct(gaps, 99)

    def tokens_per_s(self, completion_tokens: int) -> float:
        """Decode rate: tokens after the first over first token -> last token."""
        gen = self.generation_ns
        if gen <= 0 or completion_tokens <= 1:
            return 0.0
        return (completion_tokens - 1) / (gen / 1e9)


def _pct(sorted_values: list[int], p: float) -> int:
    k = round((p / 100) * (len(sorted_values) - 1))
    return sorted_values[min(len(sorted_values) - 1, max(0, k))]


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
    ) -> None:
        if not backends:
            raise ValueError("at least one backend is required")
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"backend names must be unique: {names}")
        self.backends = list(backends)
        self.by_name = {b.name: b for b in backends}
        self.slots = {b.name: _Slots(b.limits.max_concurrency) for b in backends}
        self.counter = counter
        self.searcher = searcher
        self.cache = cache
        self.context_budget_tokens = context_budget_tokens
        self.retrieval_timeout_s = retrieval_timeout_s
        # Peers' clients (encoder, searcher) closed with the gateway.
        self.closers: list[Any] = []
        # backend name -> time.monotonic() until which it counts as unhealthy.
        self.down_until: dict[str, float] = {}
        # Called as on_backend_failure(backend, reason) for each failed attempt (metrics).
        self.on_backend_failure: Callable[[str, str], None] | None = None

    # ---- listing and cache -------------------------------------------------------------------
    def list_models(self) -> list[ModelInfo]:
        out = []
        for prio, b in enumerate(self.backends):
            out.extend(ModelInfo(m, b.name, b.kind, prio) for m in b.models())
        return out

    async def close(self) -> None:
        for b in self.backends:
            with contextlib.suppress(Exception):
                await b.close()
        if self.cache is not None:
            await self.cache.close()
        for c in self.closers:
            with contextlib.suppress(Exception):
                await c.close()

    # ---- validation -------------------------------------------------------------------------
    def _validate(self, question: str, params: GenParams) -> list[Backend]:
        if not question.strip():
            raise invalid("the question is empty; send 1 to 4096 characters", reason="EMPTY_QUESTION")
        if len(question) > MAX_QUESTION_CHARS:
            raise invalid(
                f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}",
                reason="QUESTION_TOO_LONG",
            )
        if not 0.0 <= params.temperature <= 2.0:
            raise invalid(f"temperature must be within 0..2, got {params.temperature}", reason="BAD_TEMPERATURE")
        if not 0 <= params.max_tokens <= MAX_MAX_TOKENS:
            raise invalid(
                f"max_tokens must be within 0..{MAX_MAX_TOKENS} (0 means 512), got {params.max_tokens}",
                reason="BAD_MAX_TOKENS",
            )
        if params.backend:
            b = self.by_name.get(params.backend)
            if b is None:
                raise not_found(
                    f"no backend named {params.backend!r}; configured: {', '.join(self.by_name)}",
                    reason="UNKNOWN_BACKEND",
                )
            if params.model and params.model not in b.models():
                raise not_found(
                    f"backend {b.name!r} does not serve model {params.model!r}; it serves: {', '.join(b.models())}",
                    reason="UNKNOWN_MODEL",
                )
            return [b]
        if params.model:
            cands = [b for b in self.backends if params.model in b.models()]
            if not cands:
                raise not_found(f"no backend serves model {params.model!r}", reason="UNKNOWN_MODEL")
            return self._healthy_first(cands)
        return self._healthy_first(self.backends)

    def _healthy_first(self, backends: Sequence[Backend]) -> list[Backend]:
        """Failover order with backends in their cooldown moved to the end (still tried last)."""
        now = time.monotonic()
        healthy = [b for b in backends if self.down_until.get(b.name, 0.0) <= now]
        return healthy + [b for b in backends if b not in healthy]

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
        async with contextlib.aclosing(self._generate(question, passages, params, timer, started=False)) as it:
            async for ev in it:
                yield ev

    async def _generate(
        self,
        question: str,
        passages: Sequence[Passage],
        params: GenParams,
        timer: Timer,
        *,
        started: bool,
        rag_t0_ns: int = 0,
    ) -> AsyncIterator[GenerateEvent]:
        t0 = time.perf_counter_ns()
        try:
            candidates = self._validate(question, params)
            with timer.stage("prompt") as st:
                if sum(len(p.text) for p in passages) <= INLINE_PROMPT_CHARS:
                    # Tokenizing a few KB takes well under a millisecond: cheaper than a thread hop.
                    prompt = build_prompt(question, passages, self.counter, self.context_budget_tokens)
                else:
                    prompt = await asyncio.to_thread(
                        build_prompt, question, passages, self.counter, self.context_budget_tokens
                    )
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
                async for ev in self._replay(hit, prompt, timer, t0, rag_t0_ns):
                    yield ev
                return

        try:
            backend, agen, first_delta, slot = await self._open(candidates, prompt, params, timer)
        except ServiceError as err:
            if not started:
                raise
            yield ErrorEvent(err)
            return

        req_model = params.model or backend.default_model
        stats = StreamStats(t0)
        parts: list[str] = []
        counts: list[int] = []
        usage: Usage | None = None
        finish = ""
        index = 0
        # Arrival times are taken when a delta arrives from the backend, before it is sent on.
        marked = first_delta is not None and bool(first_delta.text)
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
                        parts.append(delta.text)
                        counts.append(delta.count)
                        yield TokenEvent(delta.text, index, delta.count)
                        index += delta.count
                    if delta.usage is not None:
                        usage = delta.usage
                    if delta.finish_reason:
                        finish = delta.finish_reason
                    delta = await _next(agen, backend, backend.limits.idle_timeout_s, "between tokens")
                gen_stage.count = index
        except ServiceError as err:
            # Mid-stream failure: the partial answer stays with the caller; nothing is cached.
            log.warning("backend failed mid-stream", extra={"backend": backend.name, "reason": err.reason})
            yield ErrorEvent(err)
            return
        finally:
            if slot:
                self.slots[backend.name].release()
            await agen.aclose()

        text = "".join(parts)
        citations = citations_for(text, prompt)
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
            citation_numbers=tuple(c.number for c in citations),
        )
        if self.cache is not None and backend is first and not params.no_cache and finish in ("stop", "length"):
            with timer.stage("cache_store"):
                await self.cache.put(key, cached)
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

    async def _replay(
        self, hit: CachedAnswer, prompt: Prompt, timer: Timer, t0: int, rag_t0_ns: int
    ) -> AsyncIterator[GenerateEvent]:
        """A cache hit streams at once, flagged `cache_hit`."""
        stats = StreamStats(t0)
        counts = hit.counts or (1,) * len(hit.pieces)
        if hit.pieces:
            stats.mark(counts[0])  # the first token is ready now
        yield StartEvent(hit.backend, hit.model, True)
        index = 0
        for i, (piece, count) in enumerate(zip(hit.pieces, counts, strict=True)):
            if i:
                stats.mark(count)
            yield TokenEvent(piece, index, count)
            index += count
        cmap = prompt.citation_map
        citations = tuple(Citation(n, cmap[n]) for n in hit.citation_numbers if n in cmap)
        for c in citations:
            yield CitationEvent(c)
        p50, p99 = stats.inter_token()
        yield DoneEvent(
            usage=hit.usage,
            ttft_ns=stats.ttft_ns,
            rag_ttft_ns=(stats.times[0] - rag_t0_ns) if (rag_t0_ns and stats.times) else 0,
            generation_ns=stats.generation_ns,
            tokens_per_s=stats.tokens_per_s(hit.usage.completion_tokens),
            inter_token_p50_ns=p50,
            inter_token_p99_ns=p99,
            finish_reason=hit.finish_reason,
            citations=citations,
            text="".join(hit.pieces),
            stages=tuple(timer.stages),
            total_ns=timer.total_ns(),
        )

    async def _open(
        self, candidates: list[Backend], prompt: Prompt, params: GenParams, timer: Timer
    ) -> tuple[Backend, AsyncIterator[Delta], Delta | None, bool]:
        """Finds a backend that produces a first delta. Returns it with its open stream and its
        concurrency slot held (the caller releases it)."""
        busy: list[str] = []
        failures: list[BackendError] = []
        for backend in candidates:
            slots = self.slots[backend.name]
            if not slots.try_acquire():
                busy.append(backend.name)
                continue
            ok = False
            try:
                req = BackendRequest(
                    prompt=prompt,
                    model=params.model or backend.default_model,
                    max_tokens=params.effective_max_tokens,
                    temperature=params.temperature,
                )
                for attempt in range(backend.limits.retries + 1):
                    agen = backend.stream(req)
                    t_first = time.perf_counter_ns()
                    try:
                        first = await _first(agen, backend)
                    except BackendError as err:
                        await agen.aclose()
                        timer.add(Stage("backend_attempt", time.perf_counter_ns() - t_first, backend=backend.name))
                        failures.append(err)
                        if self.on_backend_failure is not None:
                            self.on_backend_failure(backend.name, err.reason)
                        log.warning(
                            "backend attempt failed",
                            extra={"backend": backend.name, "attempt": attempt, "reason": err.reason},
                        )
                        if not err.retryable or attempt == backend.limits.retries:
                            break
                        await asyncio.sleep(backend.limits.backoff_s * 2**attempt)
                        continue
                    except BaseException:
                        await agen.aclose()
                        raise
                    timer.add(Stage("first_token", time.perf_counter_ns() - t_first, backend=backend.name))
                    self.down_until.pop(backend.name, None)
                    ok = True
                    return backend, agen, first, True
            finally:
                if not ok:
                    slots.release()
                    last = failures[-1] if failures else None
                    if last is not None and last.backend == backend.name and last.kind != ErrorKind.INVALID_ARGUMENT:
                        # The backend is unwell (not the request): others go first for a while.
                        self.down_until[backend.name] = time.monotonic() + backend.limits.cooldown_s
        if not failures and busy:
            raise exhausted(
                f"every candidate backend is at its concurrency limit ({', '.join(busy)}); retry later",
                reason="BACKEND_BUSY",
                backends=",".join(busy),
            )
        last = failures[-1]
        if len(failures) == 1 and not busy:
            raise last
        tried = "; ".join(f"{f.backend}: {f.message}" for f in failures)
        if busy:
            tried += f"; busy: {', '.join(busy)}"
        raise ServiceError(
            last.kind if last.kind != ErrorKind.INVALID_ARGUMENT else ErrorKind.UNAVAILABLE,
            f"no backend could answer ({tried})",
            reason="ALL_BACKENDS_FAILED",
            metadata={"backends": ",".join(f.backend for f in failures)},
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
    ) -> AsyncIterator[AnswerEvent]:
        """Retrieve-then-generate: a `retrieval` event, then the events of Generate."""
        params = params or GenParams()
        rag_t0 = time.perf_counter_ns()
        timer = Timer()
        self._validate(question, params)
        if not 0 <= top_k <= MAX_TOP_K:
            raise invalid(f"top_k must be within 1..{MAX_TOP_K} (0 means 5), got {top_k}", reason="BAD_TOP_K")
        if self.searcher is None:
            raise unavailable("no retriever is configured", reason="NO_RETRIEVER")
        timeout = min(timeout_s, self.retrieval_timeout_s) if timeout_s else self.retrieval_timeout_s
        with timer.stage("retrieve") as st:
            result = await self.searcher.search(
                collection or "default",
                question,
                top_k=top_k or DEFAULT_TOP_K,
                backend=storage_backend,
                filters=filters or {},
                timeout=timeout,
            )
            st.count = len(result.chunks)
        yield RetrievalEvent(result)
        passages = [c.passage for c in result.chunks if c.ok]
        async with contextlib.aclosing(
            self._generate(question, passages, params, timer, started=True, rag_t0_ns=rag_t0)
        ) as it:
            async for ev in it:
                yield ev


async def _first(agen: AsyncIterator[Delta], backend: Backend) -> Delta | None:
    """The first delta with text or a finish (role-only deltas are skipped), within the first
    token timeout."""
    limit = backend.limits.first_token_timeout_s
    try:
        async with asyncio.timeout(limit):
            async for d in agen:
                if d.text or d.finish_reason:
                    return d
                if d.usage is not None:
                    return d
            return None
    except TimeoutError:
        raise BackendError(
            ErrorKind.DEADLINE_EXCEEDED,
            f"backend {backend.name!r} sent no token within {limit:g} s",
            reason="BACKEND_FIRST_TOKEN_TIMEOUT",
            backend=backend.name,
            retryable=True,
        ) from None


async def _next(agen: AsyncIterator[Delta], backend: Backend, limit: float, where: str) -> Delta | None:
    try:
        async with asyncio.timeout(limit):
            return await anext(agen)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise BackendError(
            ErrorKind.DEADLINE_EXCEEDED,
            f"backend {backend.name!r} stalled: nothing for {limit:g} s {where}",
            reason="BACKEND_IDLE_TIMEOUT",
            backend=backend.name,
            retryable=False,
        ) from None


def cache_key(question: str, prompt: Prompt, backend: str, model: str, params: GenParams) -> str:
    """sha256 over the question, each context chunk's content hash, the backend and model the
    request goes to first, and the sampling parameters."""
    doc = {
        "q": question.strip(),
        "chunks": [[p.chunk_id, hashlib.sha256(p.text.encode("utf-8")).hexdigest()] for p in prompt.passages],
        "backend": backend,
        "model": model,
        "max_tokens": params.effective_max_tokens,
        "temperature": round(params.temperature, 4),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()
