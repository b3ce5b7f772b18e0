"""Prometheus metrics every service shares: the per-service RPC counters, the gRPC semantic
convention histograms (server and client side), and a hook that lets a service turn the
`Timings` of its responses into stage histograms.

Names follow the Prometheus forms of OpenTelemetry's gRPC conventions:
`grpc.server.call.duration` -> `grpc_server_call_duration_seconds{grpc_method,grpc_status}` and
`grpc.client.attempt.duration` -> `grpc_client_attempt_duration_seconds{grpc_method,grpc_status,
grpc_target}`, where `grpc_method` is the full method (`ddnrag.retriever.v1.RetrieverService/Search`)
and `grpc_status` the status code's name (`OK`, `UNAVAILABLE`). The service is the scrape job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Latency buckets in seconds, from sub-millisecond RPCs to minute-long streams.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

ResponseHook = Callable[[str, Any], None]


class Metrics:
    """One service's registry: `<svc>_requests_total{method,code}`,
    `<svc>_request_duration_seconds{method}`, `grpc_server_call_duration_seconds`, and the
    process's client-side histogram. Services add their own metrics to `registry` and may
    register response hooks: `hook(method, message)` runs for every response message sent
    (each item of a stream), so stage timings already measured for the caller become metrics
    without a second clock."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(f"{service}_requests", "RPCs handled", ["method", "code"], registry=self.registry)
        self.duration = Histogram(
            f"{service}_request_duration_seconds",
            "RPC duration (whole stream for streaming RPCs)",
            ["method"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.grpc_server = Histogram(
            "grpc_server_call_duration_seconds",
            "gRPC server call duration by full method and status (OpenTelemetry grpc.server.call.duration)",
            ["grpc_method", "grpc_status"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.response_hooks: dict[str, list[ResponseHook]] = {}
        self.registry.register(ClientCollector())

    def observe(self, method: str, code: grpc.StatusCode, seconds: float, full_method: str = "") -> None:
        self.requests.labels(method, code.name).inc()
        self.duration.labels(method).observe(seconds)
        self.grpc_server.labels(full_method.lstrip("/") or method, code.name).observe(seconds)

    def on_response(self, method: str, hook: ResponseHook) -> None:
        """Calls `hook(method, message)` for each response message of `method` (short name)."""
        self.response_hooks.setdefault(method, []).append(hook)

    def see(self, method: str, message: Any) -> None:
        """Runs the hooks for one response message; a failing hook is logged, never raised."""
        for hook in self.response_hooks.get(method, ()):
            try:
                hook(method, message)
            except Exception:
                log.exception("metrics hook failed", extra={"method": method})


def stage_seconds(message: Any) -> Iterator[tuple[Any, float]]:
    """(StageTiming, seconds) for each stage in a response's `timings`, if it has any."""
    timings = getattr(message, "timings", None)
    if timings is None:
        return
    for st in timings.stages:
        yield st, st.duration_ns / 1e9


class _ClientMetrics:
    """The client side of every channel in this process."""

    def __init__(self) -> None:
        # Not in any registry of its own: ClientCollector exposes it through each service's.
        self.attempt = Histogram(
            "grpc_client_attempt_duration_seconds",
            "gRPC client attempt duration by full method, status and target "
            "(OpenTelemetry grpc.client.attempt.duration; a server stream counts until its end)",
            ["grpc_method", "grpc_status", "grpc_target"],
            registry=None,
            buckets=LATENCY_BUCKETS,
        )


# One per process, deliberately: client channels are opened in many places (service adapters,
# the gateway's upstreams, the CLI), and a call's duration belongs to the process that made it,
# whichever object opened the channel. Each Metrics registry (and the gateway's) exposes
# it through a ClientCollector, so it is scraped from the process's one metrics endpoint.
_CLIENT = _ClientMetrics()


class ClientCollector(Collector):
    """Exposes this process's client-side gRPC histogram in a registry."""

    def collect(self):  # type: ignore[no-untyped-def]
        return _CLIENT.attempt.collect()


def observe_client_attempt(full_method: str, code: grpc.StatusCode, target: str, seconds: float) -> None:
    _CLIENT.attempt.labels(full_method.lstrip("/"), code.name, target).observe(seconds)


@contextmanager
def client_attempt(full_method: str, target: str) -> Iterator[None]:
    """Times one client attempt (a whole stream for streaming calls); the status is OK, the
    code of the `grpc.aio.AioRpcError` that ended it, or CANCELLED when the caller stopped."""
    t0 = time.perf_counter()
    code = grpc.StatusCode.OK
    try:
        yield
    except grpc.aio.AioRpcError as err:
        code = err.code()
        raise
    except BaseException:
        code = grpc.StatusCode.CANCELLED
        raise
    finally:
        observe_client_attempt(full_method, code, target, time.perf_counter() - t0)


@asynccontextmanager
async def stream_attempt(full_method: str, target: str, call: Any) -> AsyncIterator[None]:
    """Times a server stream read in the body. When the reader stops early (a consumer that
    returns at its terminal event), the status is the call's own if it had already ended, else
    CANCELLED -- what the client really did to the call."""
    t0 = time.perf_counter()
    code = grpc.StatusCode.OK
    try:
        yield
    except grpc.aio.AioRpcError as err:
        code = err.code()
        raise
    except BaseException:
        code = grpc.StatusCode.CANCELLED
        if call.done():
            with suppress(Exception):
                code = await call.code()
        raise
    finally:
        observe_client_attempt(full_method, code, target, time.perf_counter() - t0)


def method_of(multicallable: Any) -> str:
    """The full method name of a stub's multicallable (`/pkg.Service/Method` -> `pkg.Service/Method`)."""
    raw = getattr(multicallable, "_method", b"")
    return (raw.decode() if isinstance(raw, bytes) else str(raw)).lstrip("/")
