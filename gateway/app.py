"""Builds the aiohttp application: routes, middlewares, upstream channels, static demo."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from aiohttp import web

from clients.base import channel_options
from kernel.tls import aio_channel

from .access import RateLimiter, api_keys_ctx, cors_on_prepare, load_api_keys, protect_middleware
from .admission import AdmissionCollector, build_admission
from .config import GatewayConfig
from .errors import error_middleware
from .metrics import GatewayMetrics, metrics_middleware
from .routes import (
    ab,
    admin,
    apidocs,
    backends,
    benchmarks,
    collections,
    conversations,
    documents,
    health,
    ingestion,
    metrics_view,
    objects,
    openai_compat,
    rag,
    whoami,
)
from .slowclients import body_timeout_middleware
from .sse import close_open_streams
from .state import (
    ADMISSION,
    API_KEYS,
    BACKGROUND,
    CONFIG,
    HEALTH_LIMITER,
    METRICS,
    OPEN_STREAMS,
    RATE_LIMITER,
    UPSTREAMS,
    Upstreams,
)
from .tracing import trace_header, tracing_middleware

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


# A restarted service is found again within a few seconds (gRPC's default backoff grows to 120 s).
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    # No min_reconnect_backoff_ms: gRPC uses it as the connect timeout (see clients/base.py).
    ("grpc.max_reconnect_backoff_ms", 3000),
]


def _channel(address: str) -> grpc.aio.Channel:
    return aio_channel(address, channel_options() + RECONNECT_OPTIONS)  # mTLS when DDNRAG_TLS_* are set


async def upstreams_ctx(app: web.Application) -> AsyncIterator[None]:
    """Opens one channel per service for the app's life and closes them at cleanup."""
    from clients.embedder import EmbedderClient
    from clients.llm import LlmClient
    from clients.retriever import RetrieverClient
    from clients.storage import StorageClient

    cfg = app[CONFIG]
    t = cfg.request_timeout_s
    ups = Upstreams(
        storage=StorageClient(cfg.storage_addr, timeout_s=t, channel=_channel(cfg.storage_addr)),
        retriever=RetrieverClient(cfg.retriever_addr, timeout_s=t, channel=_channel(cfg.retriever_addr)),
        # answers pass answer_timeout_s themselves
        llm=LlmClient(cfg.llm_gateway_addr, timeout_s=t, channel=_channel(cfg.llm_gateway_addr)),
        embedder=EmbedderClient(cfg.embedder_addr, timeout_s=t, channel=_channel(cfg.embedder_addr)),
    )
    app[UPSTREAMS] = ups
    app[BACKGROUND] = set()
    try:
        yield
    finally:
        pending = list(app[BACKGROUND])
        if pending:
            await asyncio.wait(pending, timeout=5)
        for client in ups.by_name().values():
            await client.close()


# The demo loads nothing from outside the gateway; the browser enforces it too. Inline style
# attributes are allowed (bar widths), inline scripts are not.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path in ("/", "/api/docs") or request.path.startswith("/static/"):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Referrer-Policy", "no-referrer")


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(cfg: GatewayConfig) -> web.Application:
    """The whole gateway for `cfg`; nothing is opened until the app starts."""
    app = web.Application(
        # Tracing first: every later middleware's log lines and errors carry the trace id.
        middlewares=[
            tracing_middleware,
            body_timeout_middleware,
            metrics_middleware,
            protect_middleware,
            error_middleware,
        ],
        client_max_size=cfg.max_request_bytes,
    )
    app[CONFIG] = cfg
    app[OPEN_STREAMS] = weakref.WeakSet()
    app[METRICS] = GatewayMetrics()
    app[API_KEYS] = load_api_keys(cfg)
    app[RATE_LIMITER] = RateLimiter(cfg.rate_limit_rps, cfg.rate_limit_burst)
    app[HEALTH_LIMITER] = RateLimiter(cfg.health_rate_limit_rps, 20)
    app[ADMISSION] = admission = build_admission(cfg)
    if admission is not None:
        app[METRICS].registry.register(AdmissionCollector(admission))
    app.cleanup_ctx.append(upstreams_ctx)
    app.cleanup_ctx.append(ab.ab_client_ctx)
    app.cleanup_ctx.append(api_keys_ctx)
    app.cleanup_ctx.append(metrics_view.scraper_ctx)
    app.on_shutdown.append(close_open_streams)
    app.on_response_prepare.append(cors_on_prepare)
    app.on_response_prepare.append(security_headers)
    app.on_response_prepare.append(trace_header)
    for module in (
        health,
        whoami,
        documents,
        ingestion,
        rag,
        conversations,
        backends,
        benchmarks,
        ab,
        admin,
        metrics_view,
        openai_compat,
        collections,
        objects,
        apidocs,
    ):
        app.router.add_routes(module.routes)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    return app
