"""Answer checks around the core's streams: guardrails before and after generation, redaction
of the streamed text, and the groundedness check with its one repair pass.

`AnswerChecks.wrap(question, stream, ...)` takes a Generate or Answer event stream of the core
and yields the same events, plus:
- `RefusedEvent` (the stream's last event) when an input guard refuses the question (before any
  retrieval) or an output guard refuses the answer (instead of `done`);
- `VerifyEvent` after the citations and before `done`: each answer sentence with its support
  score, the answer's score, and, below `threshold`, the repair that ran;
- `done` carrying the guard report (every verdict and the fail mode), so a guard that was down
  and let the request through is visible, never silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kernel.errors import ServiceError

from .domain import (
    DEFAULT_TOP_K,
    MAX_QUESTION_CHARS,
    DoneEvent,
    GenParams,
    Passage,
    RetrievalEvent,
    StartEvent,
    TokenEvent,
)
from .extractive import NOT_ANSWERED, split_sentences
from .guards.base import Guardrails, GuardReport, Verdict
from .guards.redact import StreamRedactor, redact
from .verify.grounding import Verification, Verifier

log = logging.getLogger(__name__)

Search = Callable[[str], Awaitable[list[Passage]]]
Regenerate = Callable[[list[Passage]], AsyncIterator[object]]


@dataclass(frozen=True)
class RefusedEvent:
    """A guard refused: the stream ends here with the reason (never an empty answer)."""

    verdict: Verdict
    report: GuardReport


@dataclass(frozen=True)
class Repair:
    """The repair pass: "dropped" (the built-in generator's unsupported sentences removed),
    "regenerated" (re-retrieved with the unsupported claims, then answered again), or "failed"
    (it could not run; `message` says why). `verification` checks the repaired text."""

    kind: str
    text: str
    verification: Verification | None
    added_passages: int = 0
    message: str = ""
    duration_ns: int = 0


@dataclass(frozen=True)
class VerifyEvent:
    verification: Verification
    threshold: float
    repair: Repair | None = None


class AnswerChecks:
    def __init__(
        self,
        guards: Guardrails,
        verifier: Verifier | None,
        *,
        threshold: float = 0.5,
        repair: bool = True,
        redact_pii: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        self.timeout_s = timeout_s
        self.guards = guards
        self.verifier = verifier
        self.threshold = threshold
        self.repair = repair
        self.redact_pii = redact_pii

    async def close(self) -> None:
        await self.guards.close()
        if self.verifier is not None:
            await self.verifier.close()

    async def wrap(
        self,
        question: str,
        stream: AsyncIterator[object],
        *,
        kinds: dict[str, str],
        passages: Sequence[Passage] = (),
        search: Search | None = None,
        regenerate: Regenerate | None = None,
    ) -> AsyncIterator[object]:
        """`kinds` maps backend names to kinds ("extractive", "openai"...); `passages` are the
        Generate passages (Answer's come from its retrieval event); `search` and `regenerate`
        serve the repair of an LLM answer."""
        report = self.guards.new_report()
        refusal = await self.guards.run("input", question, "", report)
        if refusal is not None:
            await stream.aclose()  # type: ignore[attr-defined]
            yield RefusedEvent(refusal, report)
            return
        context = list(passages)
        redactor = StreamRedactor() if self.redact_pii else None
        kind = ""
        last_index = 0
        async with contextlib.aclosing(stream) as events:  # type: ignore[type-var]
            async for ev in events:
                if isinstance(ev, RetrievalEvent):
                    context = [c.passage for c in ev.result.chunks if c.ok]
                elif isinstance(ev, StartEvent):
                    kind = kinds.get(ev.backend, "")
                elif isinstance(ev, TokenEvent) and redactor is not None:
                    last_index = ev.index + ev.count
                    text = redactor.feed(ev.text)
                    if text:
                        yield TokenEvent(text, ev.index, ev.count)
                    continue
                elif isinstance(ev, DoneEvent):
                    if redactor is not None:
                        rest = redactor.flush()
                        if rest:
                            yield TokenEvent(rest, last_index, 0)
                        ev = replace(ev, text=redact(ev.text)[0])
                    refusal = await self.guards.run("output", question, ev.text, report)
                    if refusal is not None:
                        yield RefusedEvent(refusal, report)
                        return
                    if self.verifier is not None:
                        yield await self._verify(question, ev, kind, context, search, regenerate)
                    yield replace(ev, guards=report)
                    return
                yield ev

    async def _verify(
        self,
        question: str,
        done: DoneEvent,
        kind: str,
        context: list[Passage],
        search: Search | None,
        regenerate: Regenerate | None,
    ) -> VerifyEvent:
        assert self.verifier is not None
        cmap = {c.number: c.passage for c in done.citations}
        try:
            async with asyncio.timeout(self.timeout_s):
                v = await self.verifier.verify(done.text, cmap)
        except (ServiceError, TimeoutError) as err:
            why = err.message if isinstance(err, ServiceError) else f"it took over {self.timeout_s:g} s"
            log.warning("verification failed", extra={"error": why})
            empty = Verification((), 0.0, f"{self.verifier.method} (failed: {why})", 0)
            return VerifyEvent(empty, self.threshold)
        if not self.repair or v.answer_score >= self.threshold or not v.sentences:
            return VerifyEvent(v, self.threshold)
        t0 = time.perf_counter_ns()
        try:
            if kind == "extractive" or regenerate is None:
                repair = await self._drop(done.text, v, cmap)
            else:
                repair = await self._regenerate(v, context, search, regenerate)
        except ServiceError as err:
            repair = Repair("failed", "", None, message=err.message)
        log.info(
            "answer repaired",
            extra={
                "kind": repair.kind,
                "before": v.answer_score,
                "after": getattr(repair.verification, "answer_score", None),
            },
        )
        return VerifyEvent(v, self.threshold, replace(repair, duration_ns=time.perf_counter_ns() - t0))

    async def _drop(self, text: str, v: Verification, cmap: dict[int, Passage]) -> Repair:
        assert self.verifier is not None
        bad = {s.index for s in v.sentences if not s.supported}
        kept = [s for i, s in enumerate(split_sentences(text)) if i not in bad]
        new = " ".join(kept) if kept else NOT_ANSWERED
        return Repair("dropped", new, await self.verifier.verify(new, cmap), message=f"{len(bad)} sentence(s) dropped")

    async def _regenerate(
        self, v: Verification, context: list[Passage], search: Search | None, regenerate: Regenerate
    ) -> Repair:
        assert self.verifier is not None
        added: list[Passage] = []
        if search is not None:
            seen = {p.chunk_id for p in context}
            for p in await search(" ".join(s.text for s in v.unsupported)):
                if p.chunk_id not in seen:
                    seen.add(p.chunk_id)
                    added.append(p)
        done: DoneEvent | None = None
        async with contextlib.aclosing(regenerate([*context, *added])) as events:  # type: ignore[type-var]
            async for ev in events:
                if isinstance(ev, DoneEvent):
                    done = ev
        if done is None:
            return Repair("failed", "", None, len(added), "the second generation did not finish")
        cmap = {c.number: c.passage for c in done.citations}
        return Repair("regenerated", done.text, await self.verifier.verify(done.text, cmap), len(added))


def regenerate_with(core: object, question: str, params: GenParams) -> Regenerate:
    """The repair's second generation: the core's Generate over the given passages, uncached."""

    def run(passages: list[Passage]) -> AsyncIterator[object]:
        return core.generate(question, passages, replace(params, no_cache=True))  # type: ignore[attr-defined]

    return run


def search_with(
    core: object,
    collection: str,
    top_k: int,
    storage_backend: str,
    filters: Mapping[str, str],
    timeout_s: float | None,
) -> Search | None:
    """The repair's re-retrieval: the retriever's Search in the answer's collection."""
    searcher = getattr(core, "searcher", None)
    if searcher is None:
        return None

    async def run(query: str) -> list[Passage]:
        res = await searcher.search(
            collection or "default",
            query[:MAX_QUESTION_CHARS],
            top_k=top_k or DEFAULT_TOP_K,
            backend=storage_backend,
            filters=dict(filters),
            timeout=timeout_s,
        )
        return [c.passage for c in res.chunks if c.ok]

    return run


def build_checks(cfg: Any, encoder: Any) -> AnswerChecks:
    """Guardrails and the verifier from `LlmGatewayConfig`. Bad settings fail at start."""
    from kernel.config import ConfigError
    from kernel.httpjson import read_api_key

    from .guards.config import build_guardrails
    from .verify.grounding import EmbeddingScorer
    from .verify.judge import JudgeScorer

    guards = build_guardrails(
        cfg.guards,
        fail_mode=cfg.guard_fail_mode,
        timeout_s=cfg.guard_timeout_s,
        deny=cfg.guard_deny_list.split(","),
        max_answer_chars=cfg.guard_max_answer_chars,
    )
    verifier: Verifier | None = None
    if cfg.verify == "embedder":
        verifier = Verifier(EmbeddingScorer(encoder))
    elif cfg.verify == "judge":
        if not cfg.verify_judge_url.startswith(("http://", "https://")) or not cfg.verify_judge_model:
            raise ConfigError(
                "DDNRAG_LLM_GATEWAY_VERIFY=judge needs DDNRAG_LLM_GATEWAY_VERIFY_JUDGE_URL (http/https) and _MODEL"
            )
        key = read_api_key(cfg.verify_judge_api_key_env, what="DDNRAG_LLM_GATEWAY_VERIFY_JUDGE")
        verifier = Verifier(JudgeScorer(cfg.verify_judge_url, cfg.verify_judge_model, api_key=key))
    elif cfg.verify != "off":
        raise ConfigError(f"DDNRAG_LLM_GATEWAY_VERIFY must be embedder, judge or off, got {cfg.verify!r}")
    if not 0.0 <= cfg.verify_threshold <= 1.0:
        raise ConfigError(f"DDNRAG_LLM_GATEWAY_VERIFY_THRESHOLD must be within 0..1, got {cfg.verify_threshold}")
    return AnswerChecks(
        guards,
        verifier,
        threshold=cfg.verify_threshold,
        repair=cfg.verify_repair,
        redact_pii=cfg.redact_pii,
        timeout_s=cfg.verify_timeout_s,
    )
