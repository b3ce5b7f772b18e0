"""The storage service's own Prometheus metrics, beside the shared `storage_requests_total`,
`storage_request_duration_seconds` and `grpc_server_call_duration_seconds`: every request to an
object store, per backend and operation.

`S3Store.run` (s3.py) reports each operation once, retries included, to the `StoreMetrics` the
backend manager hands every store it builds. Benchmark runs use dedicated stores without one:
their load is the benchmark's own result, not the service's traffic.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from kernel.metrics import LATENCY_BUCKETS


class StoreMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "storage_backend_request_duration_seconds",
            "Duration of one object-store operation (retries and backoff included), by backend and operation",
            ["backend", "operation"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.ttfb = Histogram(
            "storage_backend_ttfb_seconds",
            "Object-store time to first byte (request sent -> first body byte, or response headers for "
            "operations without a body), by backend and operation",
            ["backend", "operation"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.errors = Counter(
            "storage_backend_errors",
            "Object-store operations that failed, by backend, operation and kind (the ErrorInfo reason, "
            "for example OBJECT_NOT_FOUND, BACKEND_UNAVAILABLE, ACCESS_DENIED)",
            ["backend", "operation", "kind"],
            registry=registry,
        )
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def record(self, backend: str, operation: str, seconds: float, ttfb_s: float, error_kind: str = "") -> None:
        # The labelled children, looked up once per (backend, operation): `labels()` validates
        # and locks on every call, a measurable share of a small GET's CPU.
        children = self._children.get((backend, operation))
        if children is None:
            children = self._children[(backend, operation)] = (
                self.duration.labels(backend, operation),
                self.ttfb.labels(backend, operation),
            )
        children[0].observe(seconds)
        if error_kind:
            self.errors.labels(backend, operation, error_kind).inc()
        elif ttfb_s > 0:
            children[1].observe(ttfb_s)
