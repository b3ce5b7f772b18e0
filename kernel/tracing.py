"""OpenTelemetry tracing for every process: setup from the standard `OTEL_*` variables, the
W3C `traceparent` carried in gRPC metadata (server and client interceptors), and the ids that
responses and log lines carry.

Three modes, chosen at start by `setup_tracing(service)`:
- exporting: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set. Spans go over
  OTLP (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the default, or `grpc`) through a batch
  processor (`OTEL_BSP_*`), sampled by `OTEL_TRACES_SAMPLER` (default: parent-based, always on).
- ids only (no endpoint): the SDK runs with the ALWAYS_OFF sampler. Nothing is recorded or
  exported, but trace ids are still made or taken from `traceparent` and passed on, so responses
  and log lines of one request share one id.
- off (`OTEL_SDK_DISABLED=true`): no SDK, no interceptors; nothing is done at all.

No CLIENT spans: a call's server span is the child of the caller's stage or request span.
Calls made outside any request or job (the retriever following its index, health checks) carry
an unsampled `traceparent`, so a collector is not flooded with one trace per poll.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

TRACER = trace.get_tracer("ddnrag")
# Trailing metadata key of every traced gRPC response (and the HTTP header's lower-case name).
TRACE_ID_KEY = "x-trace-id"
_PROPAGATED = frozenset({"traceparent", "tracestate", "baggage"})
# Noise, not requests: the supervisor's and kubelet's health checks, grpcurl's reflection.
_UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_state = {"installed": False, "exporting": False}


def replica_name() -> str:
    """This process's replica: `DDNRAG_REPLICA` (set by `rag up`), else the host name (the pod's)."""
    return os.environ.get("DDNRAG_REPLICA") or os.environ.get("HOSTNAME") or socket.gethostname()


def export_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether spans are exported: an OTLP endpoint is set and neither the SDK nor the traces
    exporter is switched off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _exporter(environ: Mapping[str, str]) -> Any:
    protocol = (
        (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "")
        .strip()
        .lower()
    ) or "http/protobuf"
    if protocol == "grpc":
        from .otlp_wire import FastOtlpGrpcExporter as OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
    else:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use 'grpc' or 'http/protobuf'")
    return OTLPSpanExporter()


def setup_tracing(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Installs this process's tracer provider (once; see the module docstring for the modes).
    `service` names the process unless `OTEL_SERVICE_NAME` does. Returns whether spans are
    exported. A bad protocol fails here, at start, with a message naming the variable."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or _state["installed"]:
        return bool(_state["exporting"])
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporting = export_configured(environ)
    resource = Resource.create(
        {
            "service.name": environ.get("OTEL_SERVICE_NAME") or service,
            "service.namespace": "ddnrag",
            "service.instance.id": replica_name(),
        }
    )
    # sampler=None reads OTEL_TRACES_SAMPLER(_ARG); shutdown_on_exit flushes at interpreter exit.
    provider = TracerProvider(resource=resource, sampler=None if exporting else ALWAYS_OFF)
    if exporting:
        provider.add_span_processor(BatchSpanProcessor(_exporter(environ)))
    trace.set_tracer_provider(provider)
    _state.update(installed=True, exporting=exporting)
    return exporting


def installed() -> bool:
    """Whether `setup_tracing` installed a provider in this process (the interceptors' switch)."""
    return bool(_state["installed"])


def current_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span as lower-case hex, or ("", "") outside any trace."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "", ""
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def current_trace_id() -> str:
    return current_ids()[0]


def recording() -> bool:
    """Whether the current span records (worth computing attributes for)."""
    return trace.get_current_span().is_recording()


def set_attributes(**attrs: Any) -> None:
    """Sets attributes on the current span when it records; dots may be written as `__`."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({k.replace("__", "."): v for k, v in attrs.items() if v is not None})


def inject_headers(headers: dict[str, str]) -> None:
    """Adds the current context's `traceparent` (and `tracestate`) to outgoing HTTP headers."""
    propagate.inject(headers)


def background_context() -> otel_context.Context:
    """A fresh, unsampled trace for work outside any request: ids for its log lines, no spans."""
    from random import getrandbits

    span_ctx = SpanContext(getrandbits(128) or 1, getrandbits(64) or 1, is_remote=False, trace_flags=TraceFlags(0))
    return trace.set_span_in_context(NonRecordingSpan(span_ctx))


def _code_of(context: grpc.aio.ServicerContext, cancelled: bool) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if cancelled:
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK if code in (None, 0) else grpc.StatusCode.UNKNOWN


def _end_rpc_span(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    # Semantic conventions: a server span is an error for server faults only.
    client_fault = code in (
        grpc.StatusCode.OK,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    if not client_fault:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


def _rpc_attrs(full_method: str) -> tuple[str, dict[str, str]]:
    name = full_method.lstrip("/")
    service, _, method = name.partition("/")
    return name, {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


class ServerTracing(grpc.aio.ServerInterceptor):
    """A SERVER span per RPC, child of the caller's `traceparent`, current while the handler
    runs (so the handler's stages, calls and log lines join the trace); its trace id goes back
    in the trailing metadata (`x-trace-id`). Outermost, so the other interceptors' log lines
    carry the ids too."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        handler = await continuation(handler_call_details)
        full = handler_call_details.method
        if handler is None or full.startswith(_UNTRACED):
            return handler
        carrier = {k: v for k, v in (handler_call_details.invocation_metadata or ()) if k in _PROPAGATED}
        name, attrs = _rpc_attrs(full)

        def begin(context: grpc.aio.ServicerContext) -> tuple[trace.Span, object]:
            span = TRACER.start_span(name, context=propagate.extract(carrier), kind=SpanKind.SERVER, attributes=attrs)
            token = otel_context.attach(trace.set_span_in_context(span))
            ctx = span.get_span_context()
            if ctx.is_valid:
                context.set_trailing_metadata(((TRACE_ID_KEY, format(ctx.trace_id, "032x")),))
            return span, token

        def finish(span: trace.Span, token: object, context: grpc.aio.ServicerContext, cancelled: bool) -> None:
            otel_context.detach(token)  # type: ignore[arg-type]
            _end_rpc_span(span, _code_of(context, cancelled))

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
                span, token = begin(context)
                cancelled = False
                try:
                    return await inner(request, context)
                except asyncio.CancelledError:
                    cancelled = True
                    raise
                finally:
                    finish(span, token, context, cancelled)

            factory = (
                grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            )
        else:
            inner = handler.unary_stream or handler.stream_stream

            async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[misc]
                span, token = begin(context)
                cancelled = False
                try:
                    async for item in inner(request, context):
                        yield item
                except (asyncio.CancelledError, GeneratorExit):
                    cancelled = True
                    raise
                finally:
                    finish(span, token, context, cancelled)

            factory = (
                grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
            )
        return factory(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _ClientTracing:
    """`traceparent` in every call's metadata: the current span's context, so the server's span
    is the child of the span the call was made in (a stage or request span, which already times
    the call from the caller's side; a CLIENT span per call would add a third of an answer's
    spans for no figure the trace lacks, and each span costs CPU: bench/tracing.py). Outside any
    trace the call carries a fresh unsampled context (see the module docstring). One subclass per
    call type: a grpc.aio channel files each interceptor under the first type it is an instance
    of, so one class deriving from all four would see unary calls only."""

    @staticmethod
    def _with_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        valid = trace.get_current_span().get_span_context().is_valid
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=otel_context.get_current() if valid else background_context())
        metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
        for k, v in carrier.items():
            metadata[k] = v
        return details._replace(metadata=metadata)

    async def _intercept(self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(self._with_context(details), request)


class _UnaryUnary(_ClientTracing, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[override]
        return await self._intercept(continuation, client_call_details, request)


class _UnaryStream(_ClientTracing, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[override]
        return await self._intercept(continuation, client_call_details, request)


class _StreamUnary(_ClientTracing, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return await self._intercept(continuation, client_call_details, request_iterator)


class _StreamStream(_ClientTracing, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[override]
        return await self._intercept(continuation, client_call_details, request_iterator)


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """[ServerTracing()] once `setup_tracing` ran in this process, else nothing."""
    return [ServerTracing()] if installed() else []


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The tracing interceptors (one per call type) once `setup_tracing` ran here, else none."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()] if installed() else []
