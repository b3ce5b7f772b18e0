"""Admission of answers in the llm_gateway: which pool a request takes its permit from.

The limit, the pools and early refusal are `kernel/admission.py`'s (shared with the HTTP gateway).
Answers that run the pipeline (retrieval and generation) hold a permit of the `full` pool; a
question that will likely be answered from the cache (`HitHints`) holds one of the `light` pool
instead, so it never waits behind generation (it takes a full one only if its answer turns out
not to be cached after all). A refused request gets RESOURCE_EXHAUSTED (OVERLOADED) with
`retry_after_s`, which the gateway sends as 429 with `Retry-After`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping

from kernel.admission import MAX_RETRY_AFTER_S, GradientLimit, HitHints, Permit, Pool
from kernel.timing import Stage, Timer

from .domain import GenParams

__all__ = ["MAX_RETRY_AFTER_S", "Admission", "GradientLimit", "HitHints", "Permit", "Pool", "Ticket", "ask_key"]


class Admission:
    """The two pools of permits: `full` for answers that run retrieval and generation, `light` for
    questions that will likely be answered from the cache (cheap: they never wait behind the full
    ones, but are bounded by their own latency too, so a flood of hits is refused rather than
    queued on the CPU), and the hints that tell which is which."""

    def __init__(self, full: Pool, light: Pool | None = None) -> None:
        self.full = full
        self.light = light
        self.hints = HitHints()


def ask_key(
    question: str,
    collection: str,
    storage_backend: str,
    top_k: int,
    filters: Mapping[str, str] | None,
    params: GenParams,
) -> str:
    """What the caller asked, as a `HitHints` key (the answer cache's key also names the passages,
    which are known only after retrieval)."""
    parts = [question, collection, storage_backend, str(top_k), params.backend, params.model]
    parts += [str(params.max_tokens), repr(params.temperature)]
    parts += [f"{k}={v}" for k, v in sorted((filters or {}).items())]
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


class Ticket:
    """One request's admission: the permit it holds, if any. Without an `Admission` every method
    does nothing (admission off, or a core built without one)."""

    def __init__(self, admission: Admission | None, hint: str = "") -> None:
        self.admission = admission
        self.hint = hint
        self.permit: Permit | None = None
        self.likely_hit = bool(admission is not None and hint and hint in admission.hints)

    @property
    def needs_permit(self) -> bool:
        """No full permit held (a light one does not count)."""
        return self.admission is not None and (self.permit is None or self.permit.pool is not self.admission.full)

    async def enter(self, timer: Timer | None = None) -> None:
        """At the start of an answer: a light permit for a likely hit, else a full one."""
        if self.admission is None:
            return
        if self.likely_hit:
            if self.admission.light is not None:
                self.permit = await self._acquire(self.admission.light, timer)
            return
        await self.take(timer)

    async def take(self, timer: Timer | None = None) -> None:
        """Holds a full permit, giving back a light one (ServiceError OVERLOADED when none can be
        had); a wait in the queue is the `admission` stage of `timer`."""
        if self.admission is not None and self.needs_permit:
            self.release()
            self.permit = await self._acquire(self.admission.full, timer)

    @staticmethod
    async def _acquire(pool: Pool, timer: Timer | None) -> Permit:
        t0 = time.perf_counter_ns()
        permit = await pool.acquire()
        if permit.waited and timer is not None:
            timer.add(Stage("admission", time.perf_counter_ns() - t0))
        return permit

    def remember(self) -> None:
        """The answer is in the cache (found there, or just stored): remember the question."""
        if self.admission is not None and self.hint:
            self.admission.hints.add(self.hint)

    def hit(self) -> None:
        """The answer came from the cache: remember the question; a full permit goes back now
        (the rest costs little), a light one gets its latency sample and is kept to the end."""
        self.remember()
        if self.permit is not None and self.admission is not None and self.permit.pool is self.admission.full:
            self.release()
        else:
            self.first_token()

    def miss(self) -> None:
        """The answer must be generated: forget the hint."""
        if self.admission is not None and self.hint:
            self.admission.hints.discard(self.hint)

    def first_token(self) -> None:
        if self.permit is not None:
            self.permit.first_token()

    def release(self) -> None:
        if self.permit is not None:
            self.permit.release()
            self.permit = None
