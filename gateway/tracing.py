"""The gateway's end of tracing (kernel/tracing.py): a SERVER span per HTTP request, child of the
client's W3C `traceparent` when one is sent, else the root of a new trace; its id goes back in
`X-Trace-Id` (and in the `done` event of every stream, gateway/sse.py). Calls to the services
carry the span on in gRPC metadata (the channels' client interceptor).

The span covers the whole handler, so for a stream it lasts until the terminal event is sent.
"""

from __future__ import annotations

from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from kernel.tracing import TRACER, current_trace_id

TRACE_HEADER = "X-Trace-Id"
# Not requests worth a trace: the demo's files and Prometheus scrapes.
_UNTRACED_PREFIXES = ("/static/", "/metrics", "/favicon")


@web.middleware
async def tracing_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    if request.path.startswith(_UNTRACED_PREFIXES):
        return await handler(request)
    info = request.match_info.route.resource
    route = info.canonical if info is not None else request.path
    attrs = {
        "http.request.method": request.method,
        "http.route": route,
        "url.path": request.path,
        "url.scheme": request.scheme,
        "user_agent.original": request.headers.get("User-Agent", ""),
    }
    with TRACER.start_as_current_span(
        f"{request.method} {route}",
        context=propagate.extract(request.headers),
        kind=SpanKind.SERVER,
        attributes=attrs,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _status(span, exc.status)
            raise
        _status(span, response.status)
        return response


def _status(span: trace.Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


async def trace_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: `X-Trace-Id` on every traced response, streams included (they
    prepare before their first event, inside the request's span)."""
    trace_id = current_trace_id()
    if trace_id:
        response.headers[TRACE_HEADER] = trace_id
