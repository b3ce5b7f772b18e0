"""A real OTLP trace receiver in-process: the OpenTelemetry collector's gRPC `TraceService`,
served with `opentelemetry-proto`'s generated stubs on a free loopback port. Point a process at it
with `receiver.env` (the standard OTEL_* variables); its exporter's spans land in `spans`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


def _value(v: common_pb2.AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    replica: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    links: tuple[str, ...] = ()  # linked span ids
    raw: bytes = field(default=b"", repr=False)  # the span and its resource as exported, for scans


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any) -> Any:
        # Kept as received and decoded only when read, so a receiver sharing a process with a
        # benchmark's client costs it as little as possible.
        with self.receiver.lock:
            self.receiver.requests.append(request)
            self.receiver.exports += 1
        return trace_service_pb2.ExportTraceServiceResponse()


def _decode(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    got: list[ReceivedSpan] = []
    for rs in request.resource_spans:
        res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                got.append(
                    ReceivedSpan(
                        service=str(res.get("service.name", "")),
                        replica=str(res.get("service.instance.id", "")),
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        name=s.name,
                        kind=s.kind,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        attributes={kv.key: _value(kv.value) for kv in s.attributes},
                        links=tuple(link.span_id.hex() for link in s.links),
                        raw=s.SerializeToString() + rs.resource.SerializeToString(),
                    )
                )
    return got


class OtlpReceiver:
    """Start with `start()`, stop with `stop()`; thread-safe."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._decoded: list[ReceivedSpan] = []
        self.exports = 0
        self.lock = threading.Lock()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def start(self) -> OtlpReceiver:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(0)

    @property
    def env(self) -> dict[str, str]:
        """OTEL_* variables that send a process's spans here quickly (100 ms batches): for tests."""
        return self.env_with(schedule_delay_ms=100)

    def env_with(self, schedule_delay_ms: int) -> dict[str, str]:
        """OTEL_* variables that send every span here, in batches every `schedule_delay_ms`."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": str(schedule_delay_ms),
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        }

    def snapshot(self) -> list[ReceivedSpan]:
        """Every span received so far (decoded on first read)."""
        with self.lock:
            fresh, self.requests = self.requests, []
        decoded = [span for request in fresh for span in _decode(request)]
        with self.lock:
            self._decoded.extend(decoded)
            return list(self._decoded)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.snapshot() if s.trace_id == trace_id]

    def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], trace_id: str, timeout_s: float = 60
    ) -> list[ReceivedSpan]:
        """Polls until `done(spans of trace_id)` holds (the exporters flush in batches); returns
        the spans, or raises with what arrived by the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.trace(trace_id)
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted(f"{s.service}:{s.name}" for s in spans)
                raise TimeoutError(f"trace {trace_id} incomplete after {timeout_s}s: {names}")
            time.sleep(0.05)
