"""The gateway's own Prometheus metrics (served at `/metrics`) and the middleware that records them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kernel.metrics import ClientCollector

from .errors import Handler
from .state import METRICS, OPEN_STREAMS

FETCH_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.2,
    0.5,
    1,
    2.5,
)


class GatewayMetrics:
    """`gateway_requests_total{route,method,code}`, `gateway_request_duration_seconds{route}`,
    `gateway_ttft_seconds`, and `gateway_open_streams`; one registry per app (no globals)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests", "HTTP requests handled", ["route", "method", "code"], registry=self.registry
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "HTTP request duration (whole stream for SSE)",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.ttft = Histogram(
            "gateway_ttft_seconds",
            "Time to first token of streamed answers, retrieval included, as the llm_gateway measured it",
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.open_streams = Gauge("gateway_open_streams", "SSE streams open now", registry=self.registry)
        self.sse_events = Counter("gateway_sse_events", "SSE events sent", ["event"], registry=self.registry)
        self._sse_event_counters: dict[str, Any] = {}
        # grpc_client_attempt_duration_seconds of this process's upstream calls (kernel/metrics.py).
        self.registry.register(ClientCollector())

    def sse_event(self, name: str) -> None:
        """Counts one SSE event; the labelled child is looked up once per name, not per token."""
        child = self._sse_event_counters.get(name)
        if child is None:
            child = self._sse_event_counters[name] = self.sse_events.labels(name)
        child.inc()

    def summary(self) -> dict[str, object]:
        """Totals for the demo's metrics page: requests by code class, answers and TTFT."""
        by_class: dict[str, float] = {}
        routes: dict[str, float] = {}
        for metric in self.requests.collect():
            for s in metric.samples:
                if s.name.endswith("_total"):
                    cls = s.labels["code"][0] + "xx"
                    by_class[cls] = by_class.get(cls, 0) + s.value
                    routes[s.labels["route"]] = routes.get(s.labels["route"], 0) + s.value
        ttft_count = ttft_sum = 0.0
        for metric in self.ttft.collect():
            for s in metric.samples:
                if s.name.endswith("_count"):
                    ttft_count = s.value
                elif s.name.endswith("_sum"):
                    ttft_sum = s.value
        return {
            "requests_by_class": by_class,
            "requests_by_route": routes,
            "answers": int(ttft_count),
            "ttft_mean_ms": round(ttft_sum / ttft_count * 1000, 2) if ttft_count else None,
        }


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    m = request.app[METRICS]
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    t0 = time.perf_counter()
    code = 500
    try:
        resp = await handler(request)
        code = resp.status
        return resp
    except web.HTTPException as err:
        code = err.status
        raise
    except asyncio.CancelledError:
        code = 499  # the client went away
        raise
    finally:
        if not route.startswith("/static"):
            m.requests.labels(route, request.method, str(code)).inc()
            m.duration.labels(route).observe(time.perf_counter() - t0)
            m.open_streams.set(len(request.app[OPEN_STREAMS]))
