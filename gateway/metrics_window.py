"""Windowed figures for the demo's Metrics page, from the services' own Prometheus metrics.

The gateway scrapes each peer's metrics endpoint (DDNRAG_GATEWAY_METRICS_PEERS) and its own
registry every few seconds and keeps the samples the page needs for `HISTORY_S`. A window's
figure is computed as Prometheus would: the increase of each counter (and histogram bucket) from
the first snapshot in the window to the last (a restart -- a counter that went down -- counts from
zero), then `histogram_quantile` over the summed bucket increases, with the same linear
interpolation inside a bucket. No Prometheus is needed; with `rag up --monitoring` one runs beside
the stack for PromQL and longer history, and reads the same metrics.

Plain Python: parsing, history and arithmetic; `routes/metrics_view.py` does the HTTP.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

HISTORY_S = 1800.0  # the longest window the page offers: 30 minutes

# Families kept per snapshot (the page's figures only; everything else is dropped at parse time).
HISTOGRAMS = {
    "llm_gateway_rag_ttft_seconds": "rag_ttft",
    "gen_ai_server_time_to_first_token_seconds": "model_ttft",
    "gateway_ttft_seconds": "gateway_ttft",
    "retriever_request_duration_seconds": "search",
    "retriever_stage_duration_seconds": "stage",
    "storage_backend_ttfb_seconds": "ttfb",
}
COUNTS = ("grpc_server_call_duration_seconds_count", "gateway_requests_total")
# gRPC statuses that count as errors of the service (the caller's mistakes -- NOT_FOUND,
# INVALID_ARGUMENT, FAILED_PRECONDITION... -- and CANCELLED do not); the alerts use the same set.
ERROR_STATUSES = frozenset({"UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS", "UNIMPLEMENTED"})

Key = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


@dataclass
class Snapshot:
    """The kept samples of every scraped endpoint at one moment (unix seconds)."""

    at: float
    samples: dict[Key, float] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


_WANTED = frozenset(COUNTS) | {f"{f}_{suffix}" for f in HISTOGRAMS for suffix in ("bucket", "count", "sum")}


def _wanted(name: str) -> bool:
    return name in _WANTED


def _wanted_lines(text: str) -> str:
    """Only the sample lines of wanted series (no comments): parsing every family of a peer's
    exposition was an eighth of the gateway's CPU under load; untyped lines keep their names."""
    keep = []
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        end = line.find("{")
        if end < 0:
            end = line.find(" ")
        if _wanted(line[:end] if end >= 0 else line):
            keep.append(line)
    return "\n".join(keep) + "\n"


def parse(text: str, job: str, instance: str) -> dict[Key, float]:
    """The wanted samples of one Prometheus text exposition, labelled with job and instance."""
    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(_wanted_lines(text)):
        for s in family.samples:
            if _wanted(s.name):
                labels = {**s.labels, "job": job, "instance": instance}
                out[(s.name, tuple(sorted(labels.items())))] = float(s.value)
    return out


def increases(first: Snapshot | None, last: Snapshot) -> dict[Key, float]:
    """Per series, how much it grew from `first` to `last` (from zero without `first`, or when
    the series went down: the process restarted and counts from zero again)."""
    base = first.samples if first is not None else {}
    out = {}
    for key, value in last.samples.items():
        before = base.get(key, 0.0)
        out[key] = value - before if value >= before else value
    return out


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative bucket counts {le: count}; None without
    observations. Linear inside the bucket; the +Inf bucket answers the largest finite bound."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0 or not math.isinf(bounds[-1]):
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if math.isinf(b):
                return bounds[-2] if len(bounds) > 1 else None
            if count == prev_count:
                return b
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = b, count
    return bounds[-2] if len(bounds) > 1 else None


def _labels(key: Key) -> dict[str, str]:
    return dict(key[1])


def buckets_by(
    inc: Mapping[Key, float], family: str, group: Iterable[str] = (), where: Mapping[str, str] | None = None
) -> dict[tuple[str, ...], dict[float, float]]:
    """Bucket increases of `family` summed over every series, grouped by the `group` labels."""
    out: dict[tuple[str, ...], dict[float, float]] = {}
    group = tuple(group)
    for key, value in inc.items():
        if key[0] != f"{family}_bucket":
            continue
        labels = _labels(key)
        if where and any(labels.get(k) != v for k, v in where.items()):
            continue
        g = tuple(labels.get(name, "") for name in group)
        le = float(labels["le"])
        per = out.setdefault(g, {})
        per[le] = per.get(le, 0.0) + value
    return out


def quantiles(buckets: Mapping[float, float]) -> dict[str, Any]:
    """p50 and p99 in milliseconds, and the count, of one histogram's bucket increases."""
    count = buckets.get(math.inf, 0.0)
    p50, p99 = histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets)
    return {
        "count": round(count),
        "p50_ms": None if p50 is None else round(p50 * 1000, 3),
        "p99_ms": None if p99 is None else round(p99 * 1000, 3),
    }


def request_rates(inc: Mapping[Key, float], seconds: float) -> dict[str, dict[str, Any]]:
    """Per service: calls/s and the share of them that failed, over `seconds`. gRPC services
    from `grpc_server_call_duration_seconds_count`; the gateway from its HTTP codes (5xx)."""
    calls: dict[str, float] = {}
    errors: dict[str, float] = {}
    for key, value in inc.items():
        labels = _labels(key)
        if key[0] == "grpc_server_call_duration_seconds_count":
            job = labels["job"]
            failed = labels.get("grpc_status", "") in ERROR_STATUSES
        elif key[0] == "gateway_requests_total":
            job = "gateway"
            failed = labels.get("code", "").startswith("5")
        else:
            continue
        calls[job] = calls.get(job, 0.0) + value
        if failed:
            errors[job] = errors.get(job, 0.0) + value
    return {
        job: {
            "requests": round(n),
            "rate_per_s": round(n / seconds, 4) if seconds > 0 else None,
            "errors": round(errors.get(job, 0.0)),
            "error_ratio": round(errors.get(job, 0.0) / n, 4) if n else None,
        }
        for job, n in sorted(calls.items())
    }


class History:
    """Snapshots of the last HISTORY_S seconds, oldest first."""

    def __init__(self, keep_s: float = HISTORY_S) -> None:
        self.keep_s = keep_s
        self.snapshots: deque[Snapshot] = deque()

    def add(self, snap: Snapshot) -> None:
        self.snapshots.append(snap)
        while self.snapshots and self.snapshots[0].at < snap.at - self.keep_s - 60:
            self.snapshots.popleft()

    def first_since(self, since: float) -> Snapshot | None:
        """The oldest snapshot at or after `since`, or None when the first one kept is later
        than that (the history is shorter than the window)."""
        if not self.snapshots or self.snapshots[0].at > since:
            return None
        for s in self.snapshots:
            if s.at >= since:
                return s
        return self.snapshots[-1]

    def window(self, seconds: float, points: int = 30) -> dict[str, Any]:
        """Every figure of the page over the last `seconds`, plus per-backend TTFB series."""
        if not self.snapshots:
            return {"window_s": seconds, "measured_s": 0.0, "snapshots": 0}
        last = self.snapshots[-1]
        first = self.first_since(last.at - seconds)
        partial = first is None
        if first is None and len(self.snapshots) > 1:
            first = self.snapshots[0]  # the history is shorter than the window: all of it
        inc = increases(first, last)
        measured = last.at - first.at if first is not None else 0.0
        ttfb = buckets_by(inc, "storage_backend_ttfb_seconds", ["backend", "operation"])
        return {
            "window_s": seconds,
            "measured_s": round(measured, 3),
            "partial": partial,
            "snapshots": len(self.snapshots),
            "at": last.at,
            "scrape_failures": last.failed,
            "ttft": {
                "rag": quantiles(buckets_by(inc, "llm_gateway_rag_ttft_seconds").get((), {})),
                "model": quantiles(buckets_by(inc, "gen_ai_server_time_to_first_token_seconds").get((), {})),
                # The same answer TTFT as reported to the gateway in each `done` event: there even
                # when the llm_gateway is not scraped (a cluster, where the peers list is empty).
                "gateway": quantiles(buckets_by(inc, "gateway_ttft_seconds").get((), {})),
            },
            "retrieval": {
                "search": quantiles(
                    buckets_by(inc, "retriever_request_duration_seconds", where={"method": "Search"}).get((), {})
                ),
                "stages": {
                    g[0]: quantiles(b)
                    for g, b in sorted(buckets_by(inc, "retriever_stage_duration_seconds", ["stage"]).items())
                },
            },
            "requests": request_rates(inc, measured),
            "storage_ttfb": [{"backend": g[0], "operation": g[1], **quantiles(b)} for g, b in sorted(ttfb.items())],
            "storage_ttfb_series": self.ttfb_series(last.at - seconds, last.at, points),
        }

    def ttfb_series(self, start: float, end: float, points: int) -> dict[str, list[dict[str, Any]]]:
        """Per backend, GET TTFB p50/p99 in each of `points` steps of [start, end] (a step with no
        GET has null quantiles): what the page draws as a chart."""
        snaps = [s for s in self.snapshots if s.at >= start]
        if len(snaps) < 2:
            return {}
        step = max((end - start) / points, 1e-9)
        # One snapshot per step boundary: the last one at or before it.
        marks: list[Snapshot] = [snaps[0]]
        for s in snaps[1:]:
            if s.at - marks[-1].at >= step or s is snaps[-1]:
                marks.append(s)
        out: dict[str, list[dict[str, Any]]] = {}
        for a, b in itertools.pairwise(marks):
            per = buckets_by(increases(a, b), "storage_backend_ttfb_seconds", ["backend"], {"operation": "get"})
            for (backend,), buckets in per.items():
                out.setdefault(backend, []).append({"at": round(b.at, 3), **quantiles(buckets)})
        return out


def now() -> float:
    return time.time()
