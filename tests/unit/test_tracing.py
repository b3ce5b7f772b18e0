"""kernel/tracing.py and kernel/logs.py without a network: the modes chosen from OTEL_*
variables, W3C traceparent in and out, the samplers, the log line's one shape with the current
trace and span ids, and the Timer's stage spans (a recording state of the test's own, never the
process-wide one)."""

from __future__ import annotations

import json
import logging

import pytest

from kernel import trace_export, tracing
from kernel.logs import JsonFormatter
from kernel.timing import Stage, Timer
from kernel.trace_grpc import with_trace_context
from kernel.tracing import INVALID_SPAN, Span, SpanKind

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


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


def test_an_unknown_protocol_or_sampler_fails_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"):
        trace_export.exporter_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    assert type(trace_export.exporter_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})).__name__ == (
        "FastOtlpGrpcExporter"
    )
    assert type(trace_export.exporter_from_env({})).__name__ == "FastOtlpHttpExporter"
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER='jaeger_remote'"):
        tracing.sampler_from_env({"OTEL_TRACES_SAMPLER": "jaeger_remote"})
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG='2'"):
        tracing.sampler_from_env({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"})
    with pytest.raises(ValueError, match="OTEL_BSP_SCHEDULE_DELAY='soon'"):
        trace_export._int_env({"OTEL_BSP_SCHEDULE_DELAY": "soon"}, "OTEL_BSP_SCHEDULE_DELAY", 5000)


def test_samplers_follow_the_spec() -> None:
    root, parent_based = tracing.sampler_from_env({})
    assert parent_based and root(123)  # parentbased_always_on
    root, parent_based = tracing.sampler_from_env({"OTEL_TRACES_SAMPLER": "always_off"})
    assert not parent_based and not root(123)
    env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    root, parent_based = tracing.sampler_from_env(env)
    # The spec's rule: sampled when the trace id's low 64 bits are under ratio * 2^64.
    assert parent_based and root((7 << 64) | (1 << 61)) and not root((1 << 62) + 1)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # version 00 has 4 fields
        "00-xyz92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(value: str) -> None:
    assert tracing.parse_traceparent(value) is None


def test_traceparent_in_and_out() -> None:
    parent = tracing.extract({"traceparent": TP, "tracestate": "vendor=1"})
    assert parent is not None and parent.remote and parent.sampled and not parent.recording
    assert parent.traceparent == TP and tracing.context_headers(parent)[1] == ("tracestate", "vendor=1")
    # A later version may add fields; the first four are read.
    assert tracing.parse_traceparent("01-" + TP[3:] + "-more") is not None


@pytest.fixture
def ids_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as with no endpoint: ids made and passed on, nothing recorded."""
    monkeypatch.setattr(tracing, "_state", tracing._State(installed=True))


def test_without_an_endpoint_ids_travel_and_nothing_records(ids_only: None) -> None:
    parent = tracing.parse_traceparent(TP)
    child = tracing.start_span("Search", kind=SpanKind.SERVER, parent=parent, attributes={"a": 1})
    assert child.trace_id == parent.trace_id and child.span_id not in (0, parent.span_id)
    assert not child.recording and child.traceparent.endswith("-00") and child.attributes == {}
    with tracing.use_span(child):
        assert tracing.current_trace_id() == TP[3:35]
        headers: dict[str, str] = {}
        tracing.inject_headers(headers)
        assert headers == {"traceparent": child.traceparent}
        # gRPC calls: the current context, after the caller's own metadata.
        assert with_trace_context((("x-api-key", "k"),)) == (("x-api-key", "k"), ("traceparent", child.traceparent))
    # Outside any trace a call carries a fresh unsampled context; one the caller set is kept.
    [(key, value)] = with_trace_context(None)
    assert key == "traceparent" and value.endswith("-00") and value[3:35] != TP[3:35]
    assert with_trace_context([("traceparent", TP)]) == (("traceparent", TP),)
    root = tracing.start_span("GET /api/rag/stream")
    assert root.trace_id and root.trace_id != parent.trace_id


def test_with_tracing_off_no_span_has_an_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_state", tracing._State())
    assert tracing.start_span("x", parent=tracing.parse_traceparent(TP)) is INVALID_SPAN
    assert tracing.current_ids() == ("", "")


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
    with tracing.use_span(Span(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True)):
        line = _line(fmt, "search done", hits=5, collection="default")
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and line["span_id"] == "00f067aa0ba902b7"
    assert line["service"] == "retriever" and line["replica"] == "retriever-1" and line["message"] == "search done"
    assert line["fields"] == {"hits": 5, "collection": "default"}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[Span]:
    """This process as when exporting, every finished span kept here, for this test only."""
    spans: list[Span] = []
    monkeypatch.setattr(tracing, "_state", tracing._State(installed=True, exporting=True, on_end=spans.append))
    return spans


def test_timer_stages_become_child_spans_with_their_figures(recorded: list[Span]) -> None:
    with tracing.span("request", parent=tracing.parse_traceparent(TP)) as request:
        timer = Timer()
        with timer.stage("fetch", backend="ddn", count=3) as st:
            st.bytes, st.ttfb_ns = 1200, 5000
            st.attrs["ddnrag.object_keys"] = ["chunks/a", "chunks/b", "chunks/c"]
            assert tracing.current_span().name == "fetch"
        timer.add(Stage("bm25", 2_000_000, attrs={"ddnrag.candidates": 7}))
    spans = {s.name: s for s in recorded}
    assert request.recording and request.parent_remote and request.traceparent.endswith("-01")
    assert spans["fetch"].parent_id == request.span_id and spans["bm25"].parent_id == request.span_id
    assert spans["fetch"].attributes == {
        "ddnrag.object_keys": ["chunks/a", "chunks/b", "chunks/c"],
        "ddnrag.backend": "ddn",
        "ddnrag.ttfb_ns": 5000,
        "ddnrag.bytes": 1200,
        "ddnrag.count": 3,
    }
    assert spans["bm25"].end_ns - spans["bm25"].start_ns == 2_000_000
    assert [s.name for s in timer.stages] == ["fetch", "bm25"]
    assert [s.name for s in recorded][-1] == "request" and tracing.current_span() is INVALID_SPAN


def test_an_exception_marks_the_span_failed_and_it_ends_once(recorded: list[Span]) -> None:
    with pytest.raises(KeyError), tracing.span("load") as load:
        raise KeyError("x")
    load.end()
    assert recorded == [load] and load.status == tracing.STATUS_ERROR and load.status_message == "KeyError"


def test_an_unsampled_parent_records_nothing(recorded: list[Span]) -> None:
    with tracing.span("request", parent=tracing.parse_traceparent(TP[:-2] + "00")) as request:
        timer = Timer()
        with timer.stage("fetch"):
            pass
    assert not request.recording and recorded == []


def test_timer_makes_no_spans_outside_a_recording_trace(recorded: list[Span]) -> None:
    timer = Timer()
    with timer.stage("prompt"):
        pass
    timer.add(Stage("queue", 10))
    assert recorded == [] and [s.name for s in timer.stages] == ["prompt", "queue"]
