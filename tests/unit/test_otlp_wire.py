"""kernel/otlp_wire.py writes an ExportTraceServiceRequest that opentelemetry-proto parses back to
every field of the spans (kernel/tracing.py), and its HTTP exporter posts it to a real OTLP/HTTP
endpoint (a loopback server in this test)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace.export import SpanExportResult

from kernel import trace_export, tracing
from kernel.otlp_wire import Batch, FastOtlpHttpExporter
from kernel.tracing import Span, SpanKind

TP = "00-00000000000000000000000000000abc-0000000000000def-01"
RESOURCE = {"service.name": "storage", "service.instance.id": "r-1", "naïve": "ünïcode"}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[Span]:
    spans: list[Span] = []
    monkeypatch.setattr(tracing, "_state", tracing._State(installed=True, exporting=True, on_end=spans.append))
    return spans


def _spans(recorded: list[Span]) -> list[Span]:
    remote = tracing.parse_traceparent(TP, trace_state="vendor=1")
    with tracing.span(
        "ddnrag.storage.v1.StorageService/BatchGet",
        parent=remote,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.grpc.status_code": 0, "empty": "", "naïve": "ünïcode"},
    ) as server:
        with tracing.span("S3.GetObject", kind=SpanKind.CLIENT) as get:
            get.set_attributes(
                {
                    "aws.s3.key": "chunks/default/" + "a" * 200,
                    "ddnrag.ttfb_ns": 1_234_567,
                    "negative": -5,
                    "big": 2**62,
                    "huge": 2**70,  # beyond int64: left out, as the SDK's encoder does
                    "ratio": 0.25,
                    "zero": 0.0,
                    "ok": True,
                    "no": False,
                    "ddnrag.object_keys": ["chunks/a", "chunks/b"],
                    "ints": (1, -2, 3),
                    "bools": [True, False],
                }
            )
            get.add_event("retry", {"attempt": 2})
            get.set_error("SlowDown")
        server.add_event("sse.open")
    with tracing.span("ingest.batch", root=True, links=[server, remote], kind=SpanKind.PRODUCER):
        pass
    return recorded


def _parse(spans: list[Span]) -> list[trace_pb2.Span]:
    got = ExportTraceServiceRequest.FromString(Batch(RESOURCE, "ddnrag", "1.2.3").with_spans(spans).encode())
    [rs] = got.resource_spans
    assert {kv.key: kv.value.string_value for kv in rs.resource.attributes} == RESOURCE
    [ss] = rs.scope_spans
    assert (ss.scope.name, ss.scope.version) == ("ddnrag", "1.2.3")
    return list(ss.spans)


def _attrs(span: trace_pb2.Span) -> dict[str, object]:
    def value(v: object) -> object:
        kind = v.WhichOneof("value")  # type: ignore[attr-defined]
        if kind == "array_value":
            return [value(x) for x in v.array_value.values]  # type: ignore[attr-defined]
        return getattr(v, kind)

    return {kv.key: value(kv.value) for kv in span.attributes}


def test_the_bytes_parse_back_to_every_field(recorded: list[Span]) -> None:
    spans = _spans(recorded)
    get, server, batch = _parse(spans)
    mine = {s.name: s for s in spans}
    assert (
        server.trace_id.hex() == "00000000000000000000000000000abc" and server.parent_span_id.hex() == "0" * 13 + "def"
    )
    assert server.trace_state == "vendor=1" and server.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert server.flags == 0x300  # HAS_IS_REMOTE | IS_REMOTE: the parent came from a traceparent
    assert get.flags == 0x100 and get.parent_span_id == server.span_id and get.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert get.span_id.hex() == format(mine["S3.GetObject"].span_id, "016x")
    assert get.start_time_unix_nano == mine["S3.GetObject"].start_ns > 0
    assert get.end_time_unix_nano == mine["S3.GetObject"].end_ns >= get.start_time_unix_nano
    assert _attrs(server) == {"rpc.system": "grpc", "rpc.grpc.status_code": 0, "empty": "", "naïve": "ünïcode"}
    assert _attrs(get) == {
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
    assert [(e.name, {kv.key: kv.value.int_value for kv in e.attributes}) for e in get.events] == [
        ("retry", {"attempt": 2})
    ]
    assert get.events[0].time_unix_nano >= get.start_time_unix_nano
    assert (get.status.code, get.status.message) == (trace_pb2.Status.STATUS_CODE_ERROR, "SlowDown")
    assert not server.HasField("status") and [e.name for e in server.events] == ["sse.open"]
    # A root span of its own trace, linked to the job's local span and to a remote one.
    assert batch.parent_span_id == b"" and batch.trace_id != server.trace_id
    assert [(link.span_id, link.flags) for link in batch.links] == [
        (server.span_id, 0x100),
        (bytes.fromhex("0" * 13 + "def"), 0x300),
    ]


def test_no_spans_is_an_empty_request() -> None:
    assert Batch(RESOURCE, "ddnrag").encode() == b"" == ExportTraceServiceRequest().SerializeToString()


@pytest.fixture
def http_collector() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback OTLP/HTTP endpoint keeping each POST's body."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_the_http_exporter_posts_the_bytes(recorded: list[Span], http_collector: tuple[str, list[bytes]]) -> None:
    url, bodies = http_collector
    batch = Batch(RESOURCE, "ddnrag").with_spans(_spans(recorded))
    exporter = FastOtlpHttpExporter(endpoint=url)
    try:
        assert exporter.export(batch) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert bodies == [batch.encode()]


def test_the_export_queue_batches_drops_when_full_and_flushes_at_shutdown() -> None:
    sent: list[object] = []

    class Exporter:
        def export(self, batch: Batch) -> None:
            sent.append([s.name for s in batch.spans])

        def shutdown(self) -> None:
            sent.append("shutdown")

    env = {"OTEL_BSP_SCHEDULE_DELAY": "60000", "OTEL_BSP_MAX_QUEUE_SIZE": "3", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2"}
    batcher = trace_export.BatchExporter(Exporter(), Batch(RESOURCE, "ddnrag"), env)
    # The export thread out of the way first, so nothing races the assertions below.
    batcher._stopping = True
    batcher._wake.set()
    batcher._thread.join(5)
    for i in range(4):
        batcher.on_end(Span(1, i + 1, True, True, f"s{i}"))
    assert batcher.dropped == 1 and len(batcher.queue) == 3  # a full queue drops; it never blocks
    batcher.shutdown()
    assert sent == [["s0", "s1"], ["s2"], "shutdown"]
