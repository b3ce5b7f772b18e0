"""The gRPC ends of tracing (kernel/tracing.py).

Server: a SERVER span per RPC (`begin_rpc` .. `end_rpc`, called by the wrapper kernel/server.py's
ObservingInterceptor already puts around every handler for metrics and errors: no interceptor and
no wrapper of its own, so no extra layer per call or per streamed message), child of the caller's
`traceparent`, current while the handler runs, so the handler's stages, calls and log lines join
the trace; the trace id goes back in the trailing metadata (`x-trace-id`).

Client: `traced_channel(channel)` puts the current span's `traceparent` into every call's
metadata. Not a grpc.aio client interceptor: with one, grpc.aio runs every call through its
intercepted-call machinery (an extra task and callbacks per call), which cost more CPU than the
rest of tracing together (bench/tracing.py). Adding a header to the call's arguments costs
about a microsecond.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import Token
from functools import lru_cache
from typing import Any

import grpc

from .tracing import (
    TRACE_ID_KEY,
    Span,
    SpanKind,
    activate,
    background_span,
    context_headers,
    current_span,
    deactivate,
    extract_metadata,
    installed,
    start_span,
)

# Noise, not requests: the supervisor's and kubelet's health checks, grpcurl's reflection.
_UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# A server span is an error for server faults only (semantic conventions).
_CLIENT_FAULTS = frozenset(
    {
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
    }
)


@lru_cache(maxsize=512)
def _rpc(full_method: str) -> tuple[str, dict[str, str]]:
    name = full_method.lstrip("/")
    service, _, method = name.partition("/")
    return name, {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _code_of(context: grpc.aio.ServicerContext, cancelled: bool) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if cancelled:
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK if code in (None, 0) else grpc.StatusCode.UNKNOWN


def traced_method(full_method: str) -> bool:
    """Whether calls of `full_method` get a server span (health checks and reflection do not)."""
    return not full_method.startswith(_UNTRACED)


def begin_rpc(full_method: str, metadata: Any, context: grpc.aio.ServicerContext) -> tuple[Span, Token[Span]]:
    """The RPC's server span, made current; its trace id set in the trailing metadata."""
    name, attrs = _rpc(full_method)
    span = start_span(name, kind=SpanKind.SERVER, attributes=attrs, parent=extract_metadata(metadata))
    context.set_trailing_metadata(((TRACE_ID_KEY, span.trace_id_hex),))
    return span, activate(span)


def end_rpc(span: Span, token: Token[Span], context: grpc.aio.ServicerContext, cancelled: bool) -> None:
    deactivate(token)
    if span.recording:
        code = _code_of(context, cancelled)
        span.attributes["rpc.grpc.status_code"] = code.value[0]
        if code not in _CLIENT_FAULTS:
            span.set_error(code.name)
        span.end()


def with_trace_context(metadata: Any) -> tuple[tuple[str, Any], ...]:
    """`metadata` (None, a sequence of pairs or grpc.aio.Metadata) plus the current span's
    `traceparent`, or a fresh unsampled one outside any trace (see kernel/tracing.py). A
    `traceparent` the caller set itself is kept."""
    pairs: tuple[tuple[str, Any], ...] = tuple(metadata) if metadata else ()
    if pairs and any(k == "traceparent" for k, _ in pairs):
        return pairs
    span = current_span()
    return (*pairs, *context_headers(span if span.trace_id else background_span()))


class _TracedCall:
    """A multi-callable whose every call carries the trace context."""

    __slots__ = ("_call",)

    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call

    def __call__(self, request: Any, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        return self._call(request, *args, metadata=with_trace_context(metadata), **kwargs)

    @property
    def _method(self) -> Any:
        """The wrapped multi-callable's method name, which the clients' call metrics label
        (`kernel.metrics.method_of`); without it every call was recorded under an empty method."""
        return getattr(self._call, "_method", b"")


class TracedChannel(grpc.aio.Channel):
    """A grpc.aio channel whose multi-callables (what stubs hold) add the trace context to each
    call; everything else is the wrapped channel's."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.inner = channel

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _TracedCall(self.inner.unary_unary(*args, **kwargs))

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _TracedCall(self.inner.unary_stream(*args, **kwargs))

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _TracedCall(self.inner.stream_unary(*args, **kwargs))

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _TracedCall(self.inner.stream_stream(*args, **kwargs))

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.inner.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.inner.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.inner.channel_ready()

    async def close(self, grace: float | None = None) -> None:
        await self.inner.close(grace)

    async def __aenter__(self) -> TracedChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:  # what else a caller reads (ReloadingChannel's `reloads`)
        return getattr(self.inner, name)


def traced_channel(channel: grpc.aio.Channel) -> grpc.aio.Channel:
    """`channel`, carrying the trace context on every call once `setup_tracing` ran here."""
    return TracedChannel(channel) if installed() else channel
