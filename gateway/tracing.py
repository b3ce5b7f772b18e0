"""The gateway's end of tracing (kernel/tracing.py): a SERVER span per HTTP request, child of the
client's W3C `traceparent` when one is sent, else the root of a new trace; its id goes back in
`X-Trace-Id` (and in the `done` event of every stream, gateway/sse.py). Calls to the services
carry the span on in gRPC metadata (kernel/trace_grpc.py's traced channel).

The span covers the whole handler, so for a stream it lasts until the terminal event is sent.
"""

from __future__ import annotations

from aiohttp import web

from kernel import tracing
from kernel.tracing import SpanKind, current_trace_id

TRACE_HEADER = "X-Trace-Id"
# Not requests worth a trace: the demo's files and Prometheus scrapes.
_UNTRACED_PREFIXES = ("/static/", "/metrics", "/favicon")


@web.middleware
async def tracing_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    if request.path.startswith(_UNTRACED_PREFIXES):
        return await handler(request)
    info = request.match_info.route.resource
    route = info.canonical if info is not None else request.path
    span = tracing.start_span(
        f"{request.method} {route}", kind=SpanKind.SERVER, parent=tracing.extract(request.headers)
    )
    if span.recording:
        span.set_attributes(
            {
                "http.request.method": request.method,
                "http.route": route,
                "url.path": request.path,
                "url.scheme": request.scheme,
                "user_agent.original": request.headers.get("User-Agent", ""),
            }
        )
    with tracing.use_span(span, end=True, error=False):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _status(span, exc.status)
            raise
        _status(span, response.status)
        return response


def _status(span: tracing.Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_error()


async def trace_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: `X-Trace-Id` on every traced response, streams included (they
    prepare before their first event, inside the request's span)."""
    trace_id = current_trace_id()
    if trace_id:
        response.headers[TRACE_HEADER] = trace_id
