"""The rerank stage: score the first `top_n` fused candidates, reorder them, and on failure
either keep fusion order (fail mode "fallback") or fail the search ("error"). Whatever happens
is returned as a `RerankOutcome`, logged, and shown in the search response."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kernel.errors import unavailable
from kernel.timing import Stage, Timer

from .base import Reranker, RerankError

log = logging.getLogger(__name__)

FAIL_MODES = ("fallback", "error")


@dataclass(frozen=True)
class RerankOutcome:
    """What the stage did. `status`: "ok" (reordered), "fallback" (failed, fusion order kept),
    "error" (failed, the search fails), "skipped" (nothing to score). `order` lists the input
    positions best first; `scores[i]` is the rerank score of input i (None when not scored)."""

    backend: str
    status: str
    message: str
    order: tuple[int, ...]
    scores: tuple[float | None, ...]
    duration_ns: int
    scored: int = 0


class RerankStage:
    def __init__(self, reranker: Reranker, *, top_n: int = 20, fail_mode: str = "fallback", timeout_s: float = 5.0):
        if fail_mode not in FAIL_MODES:
            raise ValueError(f"rerank fail mode must be one of {FAIL_MODES}, got {fail_mode!r}")
        if top_n < 1:
            raise ValueError(f"rerank top_n must be >= 1, got {top_n}")
        self.reranker = reranker
        self.top_n = top_n
        self.fail_mode = fail_mode
        self.timeout_s = timeout_s

    @property
    def name(self) -> str:
        return self.reranker.name

    async def run(self, query: str, texts: Sequence[str | None]) -> RerankOutcome:
        """Scores the first `top_n` texts. A None or empty text (a chunk that could not be read)
        is not sent and sorts after every scored one, keeping its fusion order; so does everything
        past `top_n`."""
        t0 = time.perf_counter_ns()
        n = len(texts)
        head = [i for i in range(min(n, self.top_n)) if texts[i]]
        identity = tuple(range(n))
        if not head:
            return RerankOutcome(self.name, "skipped", "no candidate text to rerank", identity, (None,) * n, 0)
        try:
            async with asyncio.timeout(self.timeout_s):
                got = await self.reranker.score(query, [texts[i] or "" for i in head])
            if len(got) != len(head):
                raise RerankError(f"reranker {self.name} returned {len(got)} scores for {len(head)} texts")
        except (RerankError, TimeoutError) as err:
            msg = (
                str(err)
                if isinstance(err, RerankError)
                else f"reranker {self.name} did not answer within {self.timeout_s:g} s"
            )
            status = "fallback" if self.fail_mode == "fallback" else "error"
            log.warning(
                "rerank failed",
                extra={"backend": self.name, "fail_mode": self.fail_mode, "outcome": status, "error": msg},
            )
            shown = f"{msg}; {'kept fusion order' if status == 'fallback' else 'search failed'} (fail mode {self.fail_mode})"
            return RerankOutcome(self.name, status, shown, identity, (None,) * n, time.perf_counter_ns() - t0)
        scores: list[float | None] = [None] * n
        for i, s in zip(head, got, strict=True):
            scores[i] = s
        ranked = sorted(head, key=lambda i: (-(scores[i] or 0.0), i))
        scored = set(head)
        rest = [i for i in range(n) if i not in scored]
        return RerankOutcome(
            self.name, "ok", "", tuple(ranked + rest), tuple(scores), time.perf_counter_ns() - t0, len(head)
        )

    async def close(self) -> None:
        await self.reranker.close()


async def rerank_hits(
    stage: RerankStage, query: str, hits: list[Any], top_k: int, timer: Timer
) -> tuple[list[Any], RerankOutcome]:
    """Reorders search hits (objects with `text`, `error` and `rerank_score`) by the stage and
    keeps `top_k`; adds the `rerank` stage to `timer`. Returns the hits and the outcome. With fail
    mode "error" a failure raises UNAVAILABLE (reason RERANK_FAILED)."""
    out = await stage.run(query, [None if h.error else h.text for h in hits])
    timer.add(Stage("rerank", out.duration_ns, backend=stage.name, count=out.scored))
    if out.status == "error":
        raise unavailable(out.message, reason="RERANK_FAILED", backend=stage.name)
    for h, s in zip(hits, out.scores, strict=True):
        h.rerank_score = s
    return [hits[i] for i in out.order[:top_k]], out
