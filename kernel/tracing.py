"""Tracing for every process: spans, the current span, W3C `traceparent` in and out, and setup
from the standard `OTEL_*` variables. The gRPC ends are in trace_grpc.py, the export (a batch
thread over OTLP) in trace_export.py and otlp_wire.py.

A lean recorder of our own, not the OpenTelemetry SDK: the SDK's span (locks, bounded attribute
maps, a sampler object, a Context dict per attach) and its per-call gRPC interceptors cost an
answer several ms of CPU across the five processes even with nothing exported (bench/tracing.py,
docs/observability.md). Here a span is a slotted object, the current one a ContextVar, and a
finished span goes into a deque that one background thread encodes (otlp_wire.py) and sends
with the SDK's own OTLP exporters (retries, TLS, headers, compression from `OTEL_EXPORTER_OTLP_*`).

Three modes, chosen at start by `setup_tracing(service)`:
- exporting: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set. Spans are sampled
  by `OTEL_TRACES_SAMPLER` (+ `_ARG`; default `parentbased_always_on`) and exported over OTLP
  (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the default, or `grpc`) in batches
  (`OTEL_BSP_SCHEDULE_DELAY`, `_MAX_QUEUE_SIZE`, `_MAX_EXPORT_BATCH_SIZE`; trace_export.py).
- ids only (no endpoint): no span records anything. Trace ids are still made or taken from
  `traceparent` and passed on (flag "not sampled"), so responses and log lines of one request
  share one id; that costs a random number and a header per hop.
- off (`OTEL_SDK_DISABLED=true`): nothing is installed; no ids, no headers, nothing.

No CLIENT spans for gRPC calls: a call's server span is the child of the caller's stage or
request span. Calls made outside any request or job (the retriever following its index, health
checks) carry an unsampled `traceparent`, so a collector is not flooded with one trace per poll.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

# Trailing metadata key of every traced gRPC response (and the HTTP header's lower-case name).
TRACE_ID_KEY = "x-trace-id"
_getrandbits = random.getrandbits
_time_ns = time.time_ns


class SpanKind(IntEnum):
    """OTLP's `Span.SpanKind` values."""

    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


STATUS_OK, STATUS_ERROR = 1, 2  # OTLP's `Status.StatusCode` (0: unset)
_NOTHING: dict[str, Any] = {}
_NO_EVENTS: list[tuple[int, str, Mapping[str, Any] | None]] = []


class Span:
    """One span. A non-recording span (ids only, or a remote parent) keeps no attributes: every
    setter returns at once. Not thread-safe, and needs not be: one task or thread at a time
    works on a span."""

    __slots__ = (
        "_traceparent",
        "attributes",
        "baggage",
        "end_ns",
        "events",
        "kind",
        "links",
        "name",
        "parent_id",
        "parent_remote",
        "recording",
        "remote",
        "sampled",
        "span_id",
        "start_ns",
        "status",
        "status_message",
        "trace_id",
        "trace_state",
    )

    def __init__(
        self,
        trace_id: int,
        span_id: int,
        sampled: bool,
        recording: bool = False,
        name: str = "",
        kind: SpanKind = SpanKind.INTERNAL,
        parent: Span | None = None,
        trace_state: str = "",
        baggage: str = "",
    ) -> None:
        self.trace_id, self.span_id, self.sampled, self.recording = trace_id, span_id, sampled, recording
        self.name, self.kind = name, kind
        self.parent_id = parent.span_id if parent is not None else 0
        self.parent_remote = parent is not None and parent.remote
        self.remote = False  # a caller's span, from its traceparent
        self.trace_state, self.baggage = trace_state, baggage
        self.start_ns = self.end_ns = 0
        # Shared empties for a span that records nothing (every setter checks `recording` first).
        self.attributes: dict[str, Any] = {} if recording else _NOTHING
        self.events: list[tuple[int, str, Mapping[str, Any] | None]] = [] if recording else _NO_EVENTS
        self.links: Sequence[Span] = ()
        self.status, self.status_message = 0, ""
        self._traceparent = ""

    @property
    def is_valid(self) -> bool:
        return self.trace_id != 0 and self.span_id != 0

    def is_recording(self) -> bool:
        return self.recording

    def set_attribute(self, key: str, value: Any) -> None:
        if self.recording and value is not None:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self.recording:
            self.attributes.update({k: v for k, v in attributes.items() if v is not None})

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        if self.recording:
            self.events.append((_time_ns(), name, attributes))

    def set_error(self, description: str = "") -> None:
        """Marks the span failed (OTLP status ERROR)."""
        if self.recording:
            self.status, self.status_message = STATUS_ERROR, description

    def end(self, end_ns: int | None = None) -> None:
        """Ends the span (once) and hands a recording one to the exporter."""
        if self.recording and not self.end_ns:
            self.end_ns = end_ns or _time_ns()
            _state.on_end(self)

    @property
    def trace_id_hex(self) -> str:
        return format(self.trace_id, "032x") if self.trace_id else ""

    @property
    def traceparent(self) -> str:
        """This span's W3C `traceparent` (made once)."""
        if not self._traceparent:
            flags = "01" if self.sampled else "00"
            self._traceparent = f"00-{self.trace_id:032x}-{self.span_id:016x}-{flags}"
        return self._traceparent


INVALID_SPAN = Span(0, 0, False)
_current: ContextVar[Span] = ContextVar("ddnrag_span", default=INVALID_SPAN)


def current_span() -> Span:
    """The span current in this task or thread (INVALID_SPAN outside any trace)."""
    return _current.get()


def current_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span as lower-case hex, or ("", "") outside any trace."""
    span = _current.get()
    if not span.trace_id:
        return "", ""
    return format(span.trace_id, "032x"), format(span.span_id, "016x")


def current_trace_id() -> str:
    return _current.get().trace_id_hex


def recording() -> bool:
    """Whether the current span records (worth computing attributes for)."""
    return _current.get().recording


def set_attributes(**attrs: Any) -> None:
    """Sets attributes on the current span when it records; dots may be written as `__`."""
    span = _current.get()
    if span.recording:
        span.set_attributes({k.replace("__", "."): v for k, v in attrs.items()})


def activate(span: Span) -> Token[Span]:
    """Makes `span` current; undo with `deactivate(token)`."""
    return _current.set(span)


def deactivate(token: Token[Span]) -> None:
    try:
        _current.reset(token)
    except ValueError:  # reset from another context (a generator closed elsewhere): nothing to undo here
        pass


class use_span:
    """`with use_span(span):` makes `span` current inside the block, and ends it on exit when
    `end` is true (marking it failed when an exception leaves the block and `error` is true)."""

    __slots__ = ("_token", "end", "error", "span")

    def __init__(self, span: Span, end: bool = False, error: bool = True) -> None:
        self.span, self.end, self.error = span, end, error

    def __enter__(self) -> Span:
        self._token = _current.set(self.span)
        return self.span

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        deactivate(self._token)
        if self.end:
            if exc is not None and self.error and self.span.recording and not self.span.status:
                self.span.set_error(type(exc).__name__)
            self.span.end()


@dataclass
class _State:
    """What setup_tracing decided: whether spans record, how roots are sampled, where ended spans go."""

    installed: bool = False
    exporting: bool = False
    sample_root: Callable[[int], bool] = lambda trace_id: True
    parent_based: bool = True
    on_end: Callable[[Span], None] = lambda span: None


_state = _State()


def start_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    parent: Span | None = None,
    root: bool = False,
    links: Sequence[Span] = (),
    start_ns: int | None = None,
) -> Span:
    """A new span, child of `parent` (default: the current span) unless `root`; records only
    when exporting and sampled. Make it current with `use_span`; end it with `end()`. Before
    setup_tracing (or with tracing off) this is INVALID_SPAN: no ids, nothing recorded."""
    st = _state
    if not st.installed:
        return INVALID_SPAN  # tracing off (OTEL_SDK_DISABLED): no ids at all
    if parent is None and not root:
        parent = _current.get()
    if parent is not None and parent.trace_id:
        trace_id = parent.trace_id
        sampled = st.exporting and (parent.sampled if st.parent_based else st.sample_root(trace_id))
        span = Span(
            trace_id, _getrandbits(64) or 1, sampled, sampled, name, kind, parent, parent.trace_state, parent.baggage
        )
    else:
        trace_id = _getrandbits(128) or 1
        sampled = st.exporting and st.sample_root(trace_id)
        span = Span(trace_id, _getrandbits(64) or 1, sampled, sampled, name, kind)
    if sampled:
        span.start_ns = start_ns or _time_ns()
        if attributes:
            span.attributes.update({k: v for k, v in attributes.items() if v is not None})
        if links:
            span.links = [link for link in links if link.is_valid]
    return span


def span(name: str, **kwargs: Any) -> use_span:
    """`with span(name, ...) as s:` a new current span (start_span's arguments), ended on exit."""
    return use_span(start_span(name, **kwargs), end=True)


def background_span() -> Span:
    """A fresh, unsampled trace for work outside any request: ids for its log lines, no spans."""
    return Span(_getrandbits(128) or 1, _getrandbits(64) or 1, False)


# --- W3C trace context -------------------------------------------------------------------------

_HEX = frozenset("0123456789abcdef")


def parse_traceparent(value: str, trace_state: str = "", baggage: str = "") -> Span | None:
    """The remote parent a W3C `traceparent` names, or None when it is malformed (a new trace
    starts then, as the W3C spec says)."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or (parts[0] == "00" and len(parts) != 4):
        return None
    version, trace_hex, span_hex, flags_hex = parts[:4]
    if len(trace_hex) != 32 or len(span_hex) != 16 or len(flags_hex) != 2:
        return None
    if not _HEX.issuperset(version + trace_hex + span_hex + flags_hex):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    parent = Span(trace_id, span_id, bool(int(flags_hex, 16) & 1), trace_state=trace_state, baggage=baggage)
    parent.remote = True
    return parent


def extract(carrier: Mapping[str, str]) -> Span | None:
    """The remote parent in `carrier` (HTTP headers, any case; or gRPC metadata as a dict)."""
    value = carrier.get("traceparent")
    if not value:
        return None
    return parse_traceparent(value, carrier.get("tracestate") or "", carrier.get("baggage") or "")


def extract_metadata(metadata: Sequence[tuple[str, Any]] | None) -> Span | None:
    """The remote parent in gRPC invocation metadata (a sequence of (key, value))."""
    if not metadata:
        return None
    traceparent = trace_state = baggage = ""
    for k, v in metadata:
        if k == "traceparent":
            traceparent = v
        elif k == "tracestate":
            trace_state = v
        elif k == "baggage":
            baggage = v
    return parse_traceparent(traceparent, trace_state, baggage) if traceparent else None


def context_headers(span: Span) -> list[tuple[str, str]]:
    """The headers that carry `span`'s context to a callee."""
    out = [("traceparent", span.traceparent)]
    if span.trace_state:
        out.append(("tracestate", span.trace_state))
    if span.baggage:
        out.append(("baggage", span.baggage))
    return out


def inject_headers(headers: MutableMapping[str, str]) -> None:
    """Adds the current span's `traceparent` (and `tracestate`, `baggage`) to outgoing headers."""
    span = _current.get()
    if span.trace_id:
        for k, v in context_headers(span):
            headers[k] = v


# --- setup ---------------------------------------------------------------------------------------


def replica_name() -> str:
    """This process's replica: `DDNRAG_REPLICA` (set by `rag up`), else the host name (the pod's)."""
    return os.environ.get("DDNRAG_REPLICA") or os.environ.get("HOSTNAME") or socket.gethostname()


def _disabled(environ: Mapping[str, str]) -> bool:
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def export_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether spans are exported: an OTLP endpoint is set and neither the SDK nor the traces
    exporter is switched off."""
    if _disabled(environ):
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def sampler_from_env(environ: Mapping[str, str]) -> tuple[Callable[[int], bool], bool]:
    """(root decision by trace id, parent-based) from `OTEL_TRACES_SAMPLER` and `_ARG`, the
    spec's built-in samplers. Anything else fails at start, naming the variable."""
    name = (environ.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").strip().lower()
    parent_based = name.startswith("parentbased_")
    base = name.removeprefix("parentbased_")
    if base == "always_on":
        return (lambda trace_id: True), parent_based
    if base == "always_off":
        return (lambda trace_id: False), parent_based
    if base == "traceidratio":
        raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(raw)
        except ValueError:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={raw!r} is not a number between 0 and 1") from None
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={raw!r} is not a number between 0 and 1")
        bound = round(ratio * (1 << 64))  # the spec's rule: the trace id's low 64 bits under ratio * 2^64
        return (lambda trace_id: (trace_id & 0xFFFFFFFFFFFFFFFF) < bound), parent_based
    raise ValueError(
        f"OTEL_TRACES_SAMPLER={name!r} is not supported; use always_on, always_off, traceidratio "
        "or parentbased_ one of those"
    )


def setup_tracing(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Installs this process's tracing (once; see the module docstring for the modes).
    `service` names the process unless `OTEL_SERVICE_NAME` does. Returns whether spans are
    exported. A bad protocol or sampler fails here, at start, with a message naming the variable."""
    if _disabled(environ) or _state.installed:
        return _state.exporting
    if not export_configured(environ):
        _state.installed = True
        return False
    from .trace_export import start_export

    sample_root, parent_based = sampler_from_env(environ)
    on_end = start_export(service, environ)
    _state.sample_root, _state.parent_based, _state.on_end = sample_root, parent_based, on_end
    _state.installed = _state.exporting = True
    return True


def installed() -> bool:
    """Whether `setup_tracing` installed tracing in this process (the gRPC ends' switch)."""
    return _state.installed
