"""OTLP trace export bytes written directly: `encode_request(spans)` is the serialized
`ExportTraceServiceRequest` (opentelemetry/proto/collector/trace/v1) of a batch of finished SDK
spans, the same message the SDK's encoder builds (opentelemetry-exporter-otlp-proto-common's
`encode_spans`; tests/unit/test_otlp_wire.py checks they parse equal), without making a protobuf
object per span, attribute and value. That encoder takes about as much CPU per span as making
the span did (bench/tracing.py); this one a fraction of it. Only the batch processor's export
thread runs it, but on a busy host its CPU is the answers' CPU too.

`FastOtlpGrpcExporter` is the SDK's OTLP/gRPC exporter (same variables, retries, TLS,
compression) over these bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_SMALL = [bytes((i,)) for i in range(128)]
# SDK SpanKind -> OTLP Span.SpanKind (INTERNAL = 1, ...).
_KIND = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64  # int64 as two's complement, ten bytes
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


def _text(tag: bytes, s: str | None) -> bytes:
    """A proto3 string field, left out when empty."""
    return _field(tag, s.encode("utf-8")) if s else b""


def _any_value(v: Any) -> bytes:
    """The payload of an `AnyValue` (a oneof: written even when it holds a default value)."""
    t = type(v)
    if t is str:
        return _field(b"\x0a", v.encode("utf-8"))
    if t is int and _INT64_MIN <= v <= _INT64_MAX:
        return b"\x18" + _varint(v)
    if t is bool:
        return b"\x10\x01" if v else b"\x10\x00"
    if t is float:
        return b"\x21" + _DOUBLE(v)
    if v is None:
        return b""
    # The SDK encoder's order for everything else: bool, str, int, float, bytes, sequence, mapping.
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, str):
        return _field(b"\x0a", v.encode("utf-8"))
    if isinstance(v, int):
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise TypeError(f"integer attribute {v} is out of the int64 range")
        return b"\x18" + _varint(int(v))
    if isinstance(v, float):
        return b"\x21" + _DOUBLE(float(v))
    if isinstance(v, bytes):
        return _field(b"\x3a", v)
    if isinstance(v, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(x)) for x in v))
    if isinstance(v, Mapping):
        return _field(b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), x)) for k, x in v.items()))
    raise TypeError(f"attribute value of type {t.__name__} cannot be exported")


def _key_value(key: str, v: Any) -> bytes:
    return _field(b"\x0a", key.encode("utf-8")) + _field(b"\x12", _any_value(v))


def _attributes(tag: bytes, attrs: Mapping[str, Any] | None) -> bytes:
    if not attrs:
        return b""
    out = []
    for k, v in attrs.items():
        try:
            out.append(_field(tag, _key_value(k, v)))
        except TypeError:
            continue  # as the SDK's encoder does: that attribute is left out, the span goes
    return b"".join(out)


def _flags(parent: Any) -> bytes:
    return _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else _HAS_IS_REMOTE)


def _trace_state(state: Any) -> bytes:
    return b"" if state is None else ",".join(f"{k}={v}" for k, v in state.items()).encode("utf-8")


def _span(s: ReadableSpan) -> bytes:
    ctx = s.get_span_context()
    parts = [
        b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + ctx.span_id.to_bytes(8, "big"),
    ]
    state = _trace_state(ctx.trace_state)
    if state:
        parts.append(_field(b"\x1a", state))
    if s.parent is not None:
        parts.append(b"\x22\x08" + s.parent.span_id.to_bytes(8, "big"))
    parts.append(_text(b"\x2a", s.name))
    parts.append(_KIND[s.kind])
    if s.start_time:
        parts.append(b"\x39" + _FIXED64(s.start_time))
    if s.end_time:
        parts.append(b"\x41" + _FIXED64(s.end_time))
    parts.append(_attributes(b"\x4a", s.attributes))
    if s.dropped_attributes:
        parts.append(b"\x50" + _varint(s.dropped_attributes))
    for ev in s.events:
        body = b"\x09" + _FIXED64(ev.timestamp) + _text(b"\x12", ev.name) + _attributes(b"\x1a", ev.attributes)
        if ev.dropped_attributes:
            body += b"\x20" + _varint(ev.dropped_attributes)
        parts.append(_field(b"\x5a", body))
    if s.dropped_events:
        parts.append(b"\x60" + _varint(s.dropped_events))
    for link in s.links:
        lc = link.context
        body = b"\x0a\x10" + lc.trace_id.to_bytes(16, "big") + b"\x12\x08" + lc.span_id.to_bytes(8, "big")
        body += _attributes(b"\x22", link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        body += b"\x35" + _flags(lc)
        parts.append(_field(b"\x6a", body))
    if s.dropped_links:
        parts.append(b"\x70" + _varint(s.dropped_links))
    if s.status is not None:
        code = s.status.status_code.value
        parts.append(_field(b"\x7a", _text(b"\x12", s.status.description) + (b"\x18" + _varint(code) if code else b"")))
    parts.append(b"\x85\x01" + _flags(s.parent))  # field 16, fixed32
    return b"".join(parts)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized `ExportTraceServiceRequest` of `spans`: grouped by resource, then by
    instrumentation scope, in the order first seen (as the SDK's encoder groups them)."""
    groups: dict[Any, dict[Any, list[bytes]]] = {}
    for s in spans:
        groups.setdefault(s.resource, {}).setdefault(s.instrumentation_scope or None, []).append(_span(s))
    out = []
    for resource, scopes in groups.items():
        body = [_field(b"\x0a", _attributes(b"\x0a", resource.attributes))]
        for scope, encoded in scopes.items():
            if scope is None:
                head = b""
            else:
                head = (
                    _text(b"\x0a", scope.name) + _text(b"\x12", scope.version) + _attributes(b"\x1a", scope.attributes)
                )
            ss = [_field(b"\x0a", head)] + [_field(b"\x12", e) for e in encoded]
            if scope is not None and scope.schema_url:
                ss.append(_text(b"\x1a", scope.schema_url))
            body.append(_field(b"\x12", b"".join(ss)))
        body.append(_text(b"\x1a", resource.schema_url))
        out.append(_field(b"\x0a", b"".join(body)))
    return b"".join(out)


class FastOtlpGrpcExporter(OTLPSpanExporter):
    """The SDK's OTLP/gRPC span exporter, sending `encode_request`'s bytes (parsed once into the
    request the gRPC stub serializes, both in C)."""

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        return ExportTraceServiceRequest.FromString(encode_request(data))
