"""kernel/tracing.py and kernel/logs.py without a network: the modes chosen from OTEL_*
variables, the log line's one shape with the current trace and span ids, and the Timer's stage
spans (an SDK provider of its own, never the process-wide one)."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from kernel import timing, tracing
from kernel.logs import JsonFormatter
from kernel.timing import Stage, Timer


@pytest.mark.parametrize(
    ("env", "exported"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_spans_are_exported_only_with_an_endpoint(env: dict[str, str], exported: bool) -> None:
    assert tracing.export_configured(env) is exported


def test_an_unknown_protocol_fails_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"):
        tracing._exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    # gRPC: the kernel's own encoder (kernel/otlp_wire.py, byte-identical to the SDK's, half the CPU).
    assert type(tracing._exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})).__name__ == "FastOtlpGrpcExporter"
    assert type(tracing._exporter({})).__module__.endswith("http.trace_exporter")


def _line(formatter: JsonFormatter, msg: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("svc.core", logging.INFO, __file__, 1, msg, None, None)
    record.__dict__.update(extra)
    return json.loads(formatter.format(record))


def test_log_lines_have_one_shape_and_carry_the_current_trace() -> None:
    fmt = JsonFormatter("retriever", replica="retriever-1")
    outside = _line(fmt, "idle")
    assert list(outside) == [
        "time",
        "level",
        "service",
        "replica",
        "trace_id",
        "span_id",
        "message",
        "logger",
        "fields",
    ]
    assert outside["trace_id"] == "" and outside["fields"] == {}
    ctx = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, TraceFlags(1))
    with trace.use_span(NonRecordingSpan(ctx)):
        line = _line(fmt, "search done", hits=5, collection="default")
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and line["span_id"] == "00f067aa0ba902b7"
    assert line["service"] == "retriever" and line["replica"] == "retriever-1" and line["message"] == "search done"
    assert line["fields"] == {"hits": 5, "collection": "default"}


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """A private SDK provider behind the Timer's tracer, for this test only."""
    mem = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mem))
    monkeypatch.setattr(timing, "TRACER", provider.get_tracer("test"))
    return mem


def test_timer_stages_become_child_spans_with_their_figures(exporter: InMemorySpanExporter) -> None:
    tracer = timing.TRACER
    with tracer.start_as_current_span("request") as request:
        timer = Timer()
        with timer.stage("fetch", backend="ddn", count=3) as st:
            st.bytes, st.ttfb_ns = 1200, 5000
            st.attrs["ddnrag.object_keys"] = ["chunks/a", "chunks/b", "chunks/c"]
        timer.add(Stage("bm25", 2_000_000, attrs={"ddnrag.candidates": 7}))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    rid = request.get_span_context().span_id
    assert spans["fetch"].parent.span_id == rid and spans["bm25"].parent.span_id == rid
    assert dict(spans["fetch"].attributes) == {
        "ddnrag.object_keys": ("chunks/a", "chunks/b", "chunks/c"),
        "ddnrag.backend": "ddn",
        "ddnrag.ttfb_ns": 5000,
        "ddnrag.bytes": 1200,
        "ddnrag.count": 3,
    }
    assert spans["bm25"].end_time - spans["bm25"].start_time == 2_000_000
    assert [s.name for s in timer.stages] == ["fetch", "bm25"]


def test_timer_makes_no_spans_outside_a_recording_trace(exporter: InMemorySpanExporter) -> None:
    timer = Timer()
    with timer.stage("prompt"):
        pass
    timer.add(Stage("queue", 10))
    assert exporter.get_finished_spans() == () and [s.name for s in timer.stages] == ["prompt", "queue"]
