"""Admission control: an adaptive concurrency limit on costly work, a bounded wait, early refusal.

Used at the HTTP gateway (the front door, where the latency the client sees is measured) and in
the llm_gateway (for every gRPC caller). The number of permits is not fixed: `GradientLimit` moves
it with the latency it measures (after Netflix's concurrency-limits Gradient2, with a no-load
baseline in place of a long average):

- each sample is the time from taking a permit to the first token (retrieval included),
  averaged over a window of `max(limit, min_window)` samples;
- `baseline` is the latency with the work not queueing. With `probe_every` > 0 it is measured:
  after every `probe_every` windows in which the demand filled the limit (so a stack that is not
  overloaded is never probed), the limit drops to `min_limit` for one window (the samples of
  permits taken at that concurrency), and that window's average is the new baseline; between
  probes a lower window average replaces it. So the baseline follows the machine (other load on the same
  cores raises it, a quieter machine lowers it) and never ratchets up with the limit. This is
  TCP Vegas' and BBR's ProbeRTT idea: latency measured at high concurrency says nothing about
  the latency without a queue. With `probe_every` = 0 the lowest window average is let to rise
  `baseline_drift` per window instead (no probe; a stale, lucky low does not hold the limit down
  forever, but a steady overload drags the baseline up with it);
- the new limit is `limit * gradient + sqrt(limit)`, with `gradient = tolerance * baseline /
  average` clamped to [0.5, 1]; smoothed (`smoothing` per window), and clamped to [min_limit,
  ceiling]. While latency stays within `tolerance` of the baseline the limit grows by about
  sqrt(limit); when the work queues (CPU, a backend) the average rises and the limit falls. On a
  CPU-bound stack, latency grows about linearly with the work admitted past the cores, so the
  limit settles a little above the cores' count and admitted requests see a few times the no-load
  latency, not seconds of queue. A window in which fewer than half the permits were in use does
  not grow the limit (the demand, not the capacity, was measured).

`Pool` holds `limit` permits. A request that finds every permit taken waits in a FIFO queue of at
most `queue_factor * limit` requests for at most `max_wait_s` (0: no wait); beyond either it is
refused at once with RESOURCE_EXHAUSTED (reason OVERLOADED) and `retry_after_s` in its metadata,
the time the queue and the callers refused just before would take to drain. So overload is
answered in milliseconds instead of by queueing for seconds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ServiceError, exhausted

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
    # Windows between two baseline probes; 0: no probe (the baseline drifts up instead).
    probe_every: int = 0

    def __post_init__(self) -> None:
        self.limit = float(max(self.min_limit, min(self.ceiling, self.limit)))
        self.baseline: float | None = None
        self._sum = 0.0
        self._n = 0
        self._max_inflight = 0
        self.windows = 0
        self.probes = 0
        self.probing = False
        self._since_probe = 0

    @property
    def current(self) -> int:
        """The permits allowed now: `min_limit` during a probe, else the limit."""
        return self.min_limit if self.probing else int(self.limit)

    def sample(self, latency_s: float, inflight: int) -> None:
        """One measured latency, with the permits in use when its permit was taken."""
        if self.probing and inflight > self.min_limit:
            return  # taken before the probe, at the old concurrency: not a no-load sample
        self._sum += latency_s
        self._n += 1
        self._max_inflight = max(self._max_inflight, inflight)
        if self._n >= max(self.min_window, self.current):
            self._update(self._sum / self._n, self._max_inflight)
            self._sum, self._n, self._max_inflight = 0.0, 0, 0

    def _update(self, avg: float, max_inflight: int) -> None:
        self.windows += 1
        if self.probing:
            self.baseline = avg  # the latency at min_limit permits: the machine's no-load latency now
            self.probing = False
            self.probes += 1
            return
        if self.baseline is None or avg < self.baseline:
            self.baseline = avg
        elif self.probe_every <= 0:
            self.baseline = min(avg, self.baseline * (1 + self.baseline_drift))
        saturated = max_inflight >= int(self.limit)
        gradient = max(0.5, min(1.0, self.tolerance * self.baseline / avg)) if avg > 0 else 1.0
        target = self.limit * gradient + math.sqrt(self.limit)
        if not (max_inflight < self.limit / 2 and target > self.limit):  # else demand-limited: no news
            new = (1 - self.smoothing) * self.limit + self.smoothing * target
            self.limit = max(float(self.min_limit), min(float(self.ceiling), new))
        if self.probe_every > 0 and saturated:
            # Counted only in windows whose demand filled the limit: a probe refuses what is past
            # min_limit for one window, which a stack that is not overloaded should never see.
            self._since_probe += 1
            if self._since_probe >= self.probe_every:
                self._since_probe = 0
                self.probing = self.limit > self.min_limit  # nothing to learn at the floor


class Pool:
    """Permits, `GradientLimit.current` of them at a time, a bounded queue, early refusal."""

    def __init__(
        self,
        limit: GradientLimit,
        *,
        queue_factor: float = 1.0,
        max_wait_s: float = 1.0,
        what: str = "answers",
        who: str = "the llm_gateway",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limit
        self.clock = clock
        self.what = what
        self.who = who
        self.queue_factor = queue_factor
        self.max_wait_s = max_wait_s
        self.inflight = 0
        self.refused = 0
        self.admitted = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Mean seconds a permit is held (exponential average), and recent refusals, for Retry-After.
        self._hold_s = 0.5
        self._refusals: deque[float] = deque()
        self._last_retry_after = 1

    @property
    def limit(self) -> int:
        return self.limiter.current

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

    def refusal(self, why: str) -> ServiceError:
        """RESOURCE_EXHAUSTED (OVERLOADED) with `retry_after_s`, counted as a refusal."""
        self.refused += 1
        wait = self.retry_after_s()
        self._refusals.append(self.clock())
        return exhausted(
            f"{self.who} is at capacity ({self.inflight} {self.what} running, {self.queued} waiting; {why}); "
            f"retry in {wait} s",
            reason="OVERLOADED",
            retry_after_s=wait,
            limit=self.limit,
        )

    def try_acquire(self) -> Permit | None:
        """A permit if one is free now (and nobody waits), else None."""
        if self.inflight < self.limit and not self._waiters:
            self.inflight += 1
            self.admitted += 1
            return Permit(self, waited=False)
        return None

    async def acquire(self) -> Permit:
        """A permit: at once when one is free, else after a bounded wait; ServiceError
        (RESOURCE_EXHAUSTED, OVERLOADED, `retry_after_s`) when the queue is full or the wait
        runs out."""
        permit = self.try_acquire()
        if permit is not None:
            return permit
        if self.queued >= max(1, int(self.queue_factor * self.limit)) or self.max_wait_s <= 0:
            raise self.refusal("the queue is full" if self.max_wait_s > 0 else "no queue")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(self.max_wait_s):
                await fut
        except TimeoutError:
            raise self.refusal(f"no permit freed within {self.max_wait_s:g} s") from None
        except BaseException:
            if fut.done() and not fut.cancelled():  # granted just as we were cancelled: pass it on
                self._release()
            raise
        finally:
            if not fut.done():
                fut.cancel()
            if fut in self._waiters:
                self._waiters.remove(fut)
        self.admitted += 1
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
    """One running request's share of the limit; `first_token()` gives the limiter its sample."""

    def __init__(self, pool: Pool, *, waited: bool) -> None:
        self.pool = pool
        self.waited = waited
        self.t0 = time.perf_counter()
        self.inflight = pool.inflight
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
        self.pool._release()
        if self._latency is not None:
            self.pool._record(self._latency, held, self.inflight)


class HitHints:
    """Recent questions whose answer came from a cache, by a key of what the caller asked (not of
    the passages found): such a question takes a permit of the light pool, never waiting behind
    generation. Bounded, least recently used out first."""

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
