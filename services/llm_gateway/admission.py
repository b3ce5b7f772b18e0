"""Admission of answers: an adaptive concurrency limit on the work that costs, and early refusal.

Answers that run the pipeline (retrieval and generation) hold a permit of the `full` pool; a
question that will likely be answered from the cache (`HitHints`) holds one of the `light` pool
instead, so it never waits behind generation (it takes a full one only if its answer turns out
not to be cached after all). The number of permits is
not fixed: `GradientLimit` moves it with the latency it measures (after Netflix's
concurrency-limits Gradient2, with a no-load baseline in place of a long average):

- each sample is the time from taking a permit to the answer's first token (retrieval included),
  averaged over a window of `max(limit, 8)` samples;
- `baseline` is the lowest window average seen, let to rise 2% per window so that a stale,
  lucky low does not hold the limit down forever;
- the new limit is `limit * gradient + sqrt(limit)`, with `gradient = tolerance * baseline /
  average` clamped to [0.5, 1]; smoothed (20% per window), and clamped to [min_limit, ceiling].
  When latency stays within `tolerance` of the baseline the limit grows by about sqrt(limit);
  when the work queues inside the stack (CPU, a backend) the average rises and the limit falls.
  A window in which fewer than half the permits were in use does not grow the limit (the
  demand, not the capacity, was measured).

A request that finds every permit taken waits in a FIFO queue of at most `queue_factor * limit`
requests for at most `max_wait_s`; beyond either it is refused at once with RESOURCE_EXHAUSTED
(reason OVERLOADED) and `retry_after_s` in its ErrorInfo metadata: the gateway answers 429 with
`Retry-After`, the time the queue and the callers refused just before would take to drain. So
overload is answered in milliseconds instead of by queueing for seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kernel.errors import ServiceError, exhausted
from kernel.timing import Stage, Timer

from .domain import GenParams

# The longest Retry-After given, in seconds.
MAX_RETRY_AFTER_S = 30


@dataclass
class GradientLimit:
    """The concurrency limit, moved by measured latency (see the module docstring)."""

    limit: float = 8.0
    min_limit: int = 2
    ceiling: int = 64
    tolerance: float = 2.0
    smoothing: float = 0.2
    baseline_drift: float = 0.02
    min_window: int = 8

    def __post_init__(self) -> None:
        self.limit = float(max(self.min_limit, min(self.ceiling, self.limit)))
        self.baseline: float | None = None
        self._sum = 0.0
        self._n = 0
        self._max_inflight = 0
        self.windows = 0

    def sample(self, latency_s: float, inflight: int) -> None:
        """One measured latency, with the permits in use when it was taken."""
        self._sum += latency_s
        self._n += 1
        self._max_inflight = max(self._max_inflight, inflight)
        if self._n >= max(self.min_window, int(self.limit)):
            self._update(self._sum / self._n, self._max_inflight)
            self._sum, self._n, self._max_inflight = 0.0, 0, 0

    def _update(self, avg: float, max_inflight: int) -> None:
        self.windows += 1
        if self.baseline is None or avg < self.baseline:
            self.baseline = avg
        else:
            self.baseline = min(avg, self.baseline * (1 + self.baseline_drift))
        gradient = max(0.5, min(1.0, self.tolerance * self.baseline / avg)) if avg > 0 else 1.0
        target = self.limit * gradient + math.sqrt(self.limit)
        if max_inflight < self.limit / 2 and target > self.limit:
            return  # demand-limited: this window says nothing about more capacity
        new = (1 - self.smoothing) * self.limit + self.smoothing * target
        self.limit = max(float(self.min_limit), min(float(self.ceiling), new))


class Admission:
    """The two pools of permits: `full` for answers that run retrieval and generation, `light` for
    questions that will likely be answered from the cache (cheap: they never wait behind the full
    ones, but are bounded by their own latency too, so a flood of hits is refused rather than
    queued on the CPU), and the hints that tell which is which."""

    def __init__(self, full: Pool, light: Pool | None = None) -> None:
        self.full = full
        self.light = light
        self.hints = HitHints()


class Pool:
    """Permits, `GradientLimit.limit` of them at a time, a bounded queue, early refusal."""

    def __init__(
        self,
        limit: GradientLimit,
        *,
        queue_factor: float = 1.0,
        max_wait_s: float = 1.0,
        what: str = "answers",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limit
        self.clock = clock
        self.what = what
        self.queue_factor = queue_factor
        self.max_wait_s = max_wait_s
        self.inflight = 0
        self.refused = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Mean seconds a permit is held (exponential average), and recent refusals, for Retry-After.
        self._hold_s = 0.5
        self._refusals: deque[float] = deque()
        self._last_retry_after = 1

    @property
    def limit(self) -> int:
        return int(self.limiter.limit)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def retry_after_s(self) -> int:
        """Seconds until the work ahead of a refused request would likely have drained: the queue
        and the callers refused within the last Retry-After (each of them is waiting out there to
        come back), at `limit` permits per mean hold time; 1 to MAX_RETRY_AFTER_S. Without the
        refused callers in it a short Retry-After brings everyone back at once, to be refused
        again: each refusal costs a request on every hop."""
        now = self.clock()
        while self._refusals and self._refusals[0] < now - self._last_retry_after:
            self._refusals.popleft()
        backlog = self.queued + 1 + len(self._refusals)
        wait = max(1, min(MAX_RETRY_AFTER_S, math.ceil(backlog * self._hold_s / max(1, self.limit))))
        self._last_retry_after = wait
        return wait

    def _refuse(self, why: str) -> ServiceError:
        self.refused += 1
        wait = self.retry_after_s()
        self._refusals.append(self.clock())
        return exhausted(
            f"the llm_gateway is at capacity ({self.inflight} {self.what} running, {self.queued} waiting; {why}); "
            f"retry in {wait} s",
            reason="OVERLOADED",
            retry_after_s=wait,
            limit=self.limit,
        )

    async def acquire(self) -> Permit:
        """A permit: at once when one is free, else after a bounded wait; ServiceError
        (RESOURCE_EXHAUSTED, OVERLOADED, `retry_after_s`) when the queue is full or the wait
        runs out."""
        if self.inflight < self.limit and not self._waiters:
            self.inflight += 1
            return Permit(self, waited=False)
        if self.queued >= max(1, int(self.queue_factor * self.limit)) or self.max_wait_s <= 0:
            raise self._refuse("the queue is full")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(self.max_wait_s):
                await fut
        except TimeoutError:
            raise self._refuse(f"no permit freed within {self.max_wait_s:g} s") from None
        except BaseException:
            if fut.done() and not fut.cancelled():  # granted just as we were cancelled: pass it on
                self._release()
            raise
        finally:
            if not fut.done():
                fut.cancel()
            if fut in self._waiters:
                self._waiters.remove(fut)
        return Permit(self, waited=True)

    def _release(self) -> None:
        self.inflight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.inflight < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.inflight += 1
                fut.set_result(None)

    def _record(self, latency_s: float, held_s: float, inflight: int) -> None:
        self.limiter.sample(latency_s, inflight)
        self._hold_s = 0.9 * self._hold_s + 0.1 * held_s
        self._wake()  # a higher limit lets waiters in now


class Permit:
    """One running answer's share of the limit; `first_token()` gives the limiter its sample."""

    def __init__(self, admission: Pool, *, waited: bool) -> None:
        self.admission = admission
        self.waited = waited
        self.t0 = time.perf_counter()
        self.inflight = admission.inflight
        self._latency: float | None = None
        self._released = False

    def first_token(self) -> None:
        if self._latency is None:
            self._latency = time.perf_counter() - self.t0

    def release(self) -> None:
        """Idempotent; a permit released before any token (a failure) gives no latency sample."""
        if self._released:
            return
        self._released = True
        held = time.perf_counter() - self.t0
        self.admission._release()
        if self._latency is not None:
            self.admission._record(self._latency, held, self.inflight)


class HitHints:
    """Recent questions whose answer came from the cache, by a key of what the caller asked (not
    of the passages found): such a question is let through without a permit, and takes one only if
    its answer turns out not to be cached after all. Bounded, least recently used out first."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        return False

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)

    def discard(self, key: str) -> None:
        self._keys.pop(key, None)


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
        return self.admission is not None and (self.permit is None or self.permit.admission is not self.admission.full)

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
        if self.permit is not None and self.admission is not None and self.permit.admission is self.admission.full:
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
