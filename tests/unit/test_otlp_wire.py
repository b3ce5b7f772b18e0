"""kernel/otlp_wire.py writes the same ExportTraceServiceRequest as the SDK's OTLP encoder."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from kernel.otlp_wire import encode_request


def _spans() -> list:
    memory = InMemorySpanExporter()
    spans = []
    for service in ("storage", "retriever"):  # two resources in one batch
        provider = TracerProvider(resource=Resource.create({"service.name": service, "service.instance.id": "r-1"}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("ddnrag", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.30.0")
        remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
        parent_ctx = trace.set_span_in_context(NonRecordingSpan(remote))
        with tracer.start_as_current_span(
            "ddnrag.storage.v1.StorageService/BatchGet",
            context=parent_ctx,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.grpc.status_code": 0, "empty": "", "naïve": "ünïcode"},
        ) as server:
            with tracer.start_as_current_span("S3.GetObject", kind=SpanKind.CLIENT) as get:
                get.set_attributes(
                    {
                        "aws.s3.key": "chunks/default/" + "a" * 200,
                        "ddnrag.ttfb_ns": 1_234_567,
                        "negative": -5,
                        "big": 2**62,
                        "ratio": 0.25,
                        "zero": 0.0,
                        "ok": True,
                        "no": False,
                        "ddnrag.object_keys": ["chunks/a", "chunks/b"],
                        "ints": [1, -2, 3],
                        "bools": [True, False],
                    }
                )
                get.add_event("retry", {"attempt": 2})
                get.set_status(Status(StatusCode.ERROR, "SlowDown"))
            server.add_event("sse.open")
        batch = tracer.start_span("ingest.batch", links=[Link(remote, {"why": "job"}), Link(server.get_span_context())])
        batch.set_status(Status(StatusCode.OK))
        batch.end()
        tracer.start_span("plain", kind=SpanKind.PRODUCER).end()
        provider.get_tracer("").start_span("no scope name", kind=SpanKind.CONSUMER).end()
        spans = list(memory.get_finished_spans())
    return spans


def test_the_bytes_parse_to_the_sdk_encoders_request() -> None:
    spans = _spans()
    assert len(spans) == 10
    mine = ExportTraceServiceRequest.FromString(encode_request(spans))
    theirs = encode_spans(spans)
    assert mine == theirs
    assert encode_request(spans) == theirs.SerializeToString()  # byte for byte, even
    assert (
        len(mine.resource_spans) == 2 and sum(len(ss.spans) for r in mine.resource_spans for ss in r.scope_spans) == 10
    )


def test_values_the_sdk_encoder_leaves_out_are_left_out() -> None:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    span = provider.get_tracer("t").start_span("s")
    # Set past the SDK's own attribute checks, as an instrumentation could.
    span._attributes._dict["huge"] = 2**70  # type: ignore[attr-defined]
    span._attributes._dict["kept"] = "yes"  # type: ignore[attr-defined]
    span.end()
    got = ExportTraceServiceRequest.FromString(encode_request(memory.get_finished_spans()))
    assert got == encode_spans(memory.get_finished_spans())
    assert [kv.key for kv in got.resource_spans[0].scope_spans[0].spans[0].attributes] == ["kept"]


def test_no_spans_is_an_empty_request() -> None:
    assert encode_request([]) == b"" == encode_spans([]).SerializeToString()
