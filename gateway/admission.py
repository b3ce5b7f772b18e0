"""The gateway's admission of answer streams: the front door's adaptive limit (kernel/admission.py).

The client's time to first token is the gateway's to keep low, so the limit is measured here:
each answer stream holds a permit from its request until its end, and the time from the permit to
the first token event is the limiter's sample (the llm_gateway's work and every hop and queue
behind it). Two pools, each with its own limit and no-load baseline:

- `light`: a question this gateway recently saw answered from the cache (`HitHints`, keyed by what
  was asked; learned from the `start` event's `cache_hit`). Hits cost little and never wait behind
  generation; they are bounded by their own latency, so a flood of hits is refused early too
  rather than queued on the CPU;
- `full`: every other question (retrieval and generation).

With every permit of its pool taken a request waits at most `answer_queue_timeout_s` (0, the
default: not at all) and is then refused with 429, reason GATEWAY_BUSY and `Retry-After`, before
any call upstream: a refusal costs the gateway one small JSON response and nothing else. The
llm_gateway keeps its own admission for its other callers (its limit sits above what this one
lets through).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kernel.admission import GradientLimit, HitHints, Permit, Pool
from kernel.errors import ServiceError

from .config import GatewayConfig
from .errors import ApiError

# Windows between two probes of the no-load latency (kernel/admission.py).
PROBE_EVERY = 50


@dataclass
class AnswerAdmission:
    full: Pool
    light: Pool
    hints: HitHints = field(default_factory=HitHints)


def build_admission(cfg: GatewayConfig) -> AnswerAdmission | None:
    """None when `max_concurrent_answers` (the pools' ceiling) is 0: no limit."""
    ceiling = cfg.max_concurrent_answers
    if ceiling <= 0:
        return None

    def pool(what: str) -> Pool:
        lim = GradientLimit(limit=min(8, ceiling), min_limit=min(2, ceiling), ceiling=ceiling, probe_every=PROBE_EVERY)
        return Pool(lim, max_wait_s=cfg.answer_queue_timeout_s, what=what, who="the gateway")

    return AnswerAdmission(pool("answer streams"), pool("cache hits"))


def hint_key(*parts: object) -> str:
    """What was asked, as a `HitHints` key."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).hexdigest()


@dataclass
class Slot:
    """One answer stream's admission: its permit (None without admission) and its wait."""

    permit: Permit | None = None
    queue_ms: float = 0.0
    hint: str = ""
    admission: AnswerAdmission | None = None

    def first_token(self) -> None:
        if self.permit is not None:
            self.permit.first_token()

    def started(self, cache_hit: bool) -> None:
        """The `start` event: remember (or forget) that this question is answered from the cache."""
        if self.admission is None or not self.hint:
            return
        if cache_hit:
            self.admission.hints.add(self.hint)
        else:
            self.admission.hints.discard(self.hint)


@contextlib.asynccontextmanager
async def answer_slot(admission: AnswerAdmission | None, hint: str) -> AsyncIterator[Slot]:
    """A permit for one answer stream, held until the stream ends; ApiError 429 (GATEWAY_BUSY,
    `retry_after_s`) when its pool is full."""
    if admission is None:
        yield Slot()
        return
    pool = admission.light if hint and hint in admission.hints else admission.full
    t0 = time.perf_counter()
    try:
        permit = await pool.acquire()
    except ServiceError as err:
        raise ApiError(
            429, err.message, "GATEWAY_BUSY", retry_after_s=int(err.metadata.get("retry_after_s", "1"))
        ) from None
    try:
        yield Slot(permit, (time.perf_counter() - t0) * 1000, hint, admission)
    finally:
        permit.release()


class AdmissionCollector:
    """Prometheus, read at scrape time (nothing per request): `gateway_admission_limit`,
    `_inflight`, `_baseline_seconds` and `_admitted_total` / `_refused_total`, by `pool`."""

    def __init__(self, admission: AnswerAdmission) -> None:
        self.admission = admission

    def collect(self) -> Iterator[Metric]:
        pools = (("full", self.admission.full), ("light", self.admission.light))
        gauges = {
            "limit": ("Permits allowed now", lambda p: p.limit),
            "inflight": ("Permits held now", lambda p: p.inflight),
            "baseline_seconds": ("No-load time to first token, as last probed", lambda p: p.limiter.baseline or 0.0),
        }
        for name, (doc, read) in gauges.items():
            g = GaugeMetricFamily(f"gateway_admission_{name}", doc, labels=["pool"])
            for label, pool in pools:
                g.add_metric([label], read(pool))
            yield g
        for name, doc in (("admitted", "Answer streams admitted"), ("refused", "Answer streams refused with 429")):
            c = CounterMetricFamily(f"gateway_admission_{name}", doc, labels=["pool"])
            for label, pool in pools:
                c.add_metric([label], getattr(pool, name))
            yield c


def admission_json(admission: AnswerAdmission | None) -> dict[str, object] | None:
    """The pools' state for the metrics page and tests."""
    if admission is None:
        return None
    return {
        name: {
            "limit": p.limit,
            "inflight": p.inflight,
            "admitted": p.admitted,
            "refused": p.refused,
            "baseline_ms": round(p.limiter.baseline * 1000, 1) if p.limiter.baseline else None,
            "probes": p.limiter.probes,
        }
        for name, p in (("full", admission.full), ("light", admission.light))
    }
