"""OTLP trace export bytes written directly: `Batch(resource, scope).with_spans(spans).encode()`
is the serialized `ExportTraceServiceRequest` (opentelemetry/proto/collector/trace/v1) of a batch
of finished spans (kernel/tracing.py), one resource and one scope, the resource and scope encoded
once per process. No protobuf object is made per span, attribute and value: the SDK's encoder
took about as much CPU per span as making the span did. Only the export thread
(trace_export.py) runs it, but on a busy host its CPU is the answers' CPU too.
tests/unit/test_otlp_wire.py parses the bytes back with opentelemetry-proto.

`FastOtlpGrpcExporter` and `FastOtlpHttpExporter` are the SDK's OTLP exporters (same variables,
retries, TLS, headers, compression) sending these bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._common import _is_request_too_large
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult

from .tracing import Span

_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_SMALL = [bytes((i,)) for i in range(128)]
_KIND = [b"", b"\x30\x01", b"\x30\x02", b"\x30\x03", b"\x30\x04", b"\x30\x05"]  # tracing.SpanKind -> field 6
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


_LOCAL_PARENT = _FIXED32(_HAS_IS_REMOTE)
_REMOTE_PARENT = _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE)


def _span(s: Span) -> bytes:
    parts = [b"\x0a\x10" + s.trace_id.to_bytes(16, "big"), b"\x12\x08" + s.span_id.to_bytes(8, "big")]
    if s.trace_state:
        parts.append(_text(b"\x1a", s.trace_state))
    if s.parent_id:
        parts.append(b"\x22\x08" + s.parent_id.to_bytes(8, "big"))
    parts.append(_text(b"\x2a", s.name))
    parts.append(_KIND[s.kind])
    parts.append(b"\x39" + _FIXED64(s.start_ns))
    parts.append(b"\x41" + _FIXED64(s.end_ns))
    parts.append(_attributes(b"\x4a", s.attributes))
    for timestamp, name, attrs in s.events:
        parts.append(
            _field(b"\x5a", b"\x09" + _FIXED64(timestamp) + _text(b"\x12", name) + _attributes(b"\x1a", attrs))
        )
    for link in s.links:
        body = b"\x0a\x10" + link.trace_id.to_bytes(16, "big") + b"\x12\x08" + link.span_id.to_bytes(8, "big")
        body += _text(b"\x1a", link.trace_state) + b"\x35" + (_REMOTE_PARENT if link.remote else _LOCAL_PARENT)
        parts.append(_field(b"\x6a", body))
    if s.status:
        parts.append(_field(b"\x7a", _text(b"\x12", s.status_message) + b"\x18" + _varint(s.status)))
    parts.append(b"\x85\x01" + (_REMOTE_PARENT if s.parent_remote else _LOCAL_PARENT))  # field 16, fixed32
    return b"".join(parts)


class Batch:
    """Spans of this process (one resource, one instrumentation scope) to export together; the
    resource and scope are encoded once, in `__init__`. `len()` is the span count (the SDK's
    exporters count their data so)."""

    def __init__(self, resource: Mapping[str, Any], scope: str, version: str = "") -> None:
        self.resource = _field(b"\x0a", _attributes(b"\x0a", resource))  # ResourceSpans.resource
        self.scope = _field(b"\x0a", _text(b"\x0a", scope) + _text(b"\x12", version))  # ScopeSpans.scope
        self.spans: Sequence[Span] = ()

    def with_spans(self, spans: Sequence[Span]) -> Batch:
        out = object.__new__(Batch)
        out.resource, out.scope, out.spans = self.resource, self.scope, spans
        return out

    def __len__(self) -> int:
        return len(self.spans)

    def encode(self) -> bytes:
        """The serialized ExportTraceServiceRequest (empty for no spans, as the SDK's)."""
        if not self.spans:
            return b""
        scope_spans = self.scope + b"".join(_field(b"\x12", _span(s)) for s in self.spans)
        return _field(b"\x0a", self.resource + _field(b"\x12", scope_spans))


class FastOtlpGrpcExporter(GrpcSpanExporter):
    """The SDK's OTLP/gRPC span exporter, sending a Batch's bytes (parsed once into the request
    the gRPC stub serializes, both in C)."""

    def _translate_data(self, data: Batch) -> ExportTraceServiceRequest:  # type: ignore[override]
        return ExportTraceServiceRequest.FromString(data.encode())


class FastOtlpHttpExporter(HttpSpanExporter):
    """The SDK's OTLP/HTTP (protobuf) span exporter, posting a Batch's bytes: its `export` less
    the SDK encoder (and less its self-metrics, off by default)."""

    def export(self, spans: Batch) -> SpanExportResult:  # type: ignore[override]
        if self._shutdown:
            return SpanExportResult.FAILURE
        data = spans.encode()
        if _is_request_too_large(data, self._max_request_size):
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if self._client.export(data).success else SpanExportResult.FAILURE
