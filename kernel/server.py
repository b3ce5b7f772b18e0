"""The bootstrap every service shares: a grpc.aio server with health, reflection, metrics,
a catch-all interceptor, JSON logs and graceful SIGTERM.

A service builds its servicers, then calls `build_server`. `create_server(cfg)` in each service
returns `(GrpcApp, port)` so tests can bind port 0; `run_forever` is what `serve()` calls.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from .authz import AuthzInterceptor, GrpcExposureConfig
from .config import load_env
from .errors import ServiceError
from .message_limits import MessageLimitInterceptor, server_receive_limit
from .metrics import Metrics
from .tls import load_tls, server_credentials
from .trace_grpc import begin_rpc, end_rpc, traced_method
from .tracing import installed as tracing_installed

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Responses may be large (BatchGet of chunks, index files); requests are limited per method
# (message_limits.py), and the receive limit is set per server in build_server.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    # Recycle connections every 5 minutes so round_robin clients of a headless Service discover
    # new replicas after a scale-out. No grace limit: the GOAWAY only moves new calls to a new
    # connection, and calls in flight finish. (A 30 s grace cut every stream older than 5.5 min
    # -- a long ingest's progress, a long EmbedStream -- with UNAVAILABLE "max connection age".)
    ("grpc.max_connection_age_ms", 300_000),
]


def _code_of(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if code in (None, 0) else grpc.StatusCode.UNKNOWN


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    """Traces, counts and times every RPC; the catch-all for errors nobody mapped.

    Outermost. With tracing set up (kernel/tracing.py) the RPC's server span is current inside
    this wrapper (kernel/trace_grpc.py), so every later interceptor's and the handler's log lines
    carry the ids: one wrapper per call and per streamed message instead of two.

    A `ServiceError` that escapes a servicer is mapped here too, so servicers may simply raise.
    Any other exception is logged with its traceback and becomes INTERNAL: the last resort, not
    the mapping.
    """

    def __init__(self, metrics: Metrics, tracing: bool = False) -> None:
        self.metrics = metrics
        self.tracing = tracing

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        full_method = handler_call_details.method
        method = full_method.rsplit("/", 1)[-1]
        metrics = self.metrics
        traced = self.tracing and traced_method(full_method)
        invocation_metadata = handler_call_details.invocation_metadata

        async def handle_error(exc: BaseException, context: grpc.aio.ServicerContext) -> None:
            if isinstance(exc, ServiceError):
                await context.abort_with_status(exc.to_grpc_status())
            log.exception("unhandled error in %s", method, extra={"method": method})
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the service log")

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
                t0 = time.perf_counter()
                span = begin_rpc(full_method, invocation_metadata, context) if traced else None
                cancelled = False
                try:
                    response = await inner(request, context)
                    metrics.see(method, response)
                    return response
                except asyncio.CancelledError:
                    cancelled = True
                    raise
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the catch-all
                    await handle_error(exc, context)
                finally:
                    metrics.observe(method, _code_of(context), time.perf_counter() - t0, full_method)
                    if span is not None:
                        end_rpc(*span, context, cancelled)

            factory = (
                grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            )
        else:
            inner = handler.unary_stream or handler.stream_stream

            async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[misc]
                t0 = time.perf_counter()
                span = begin_rpc(full_method, invocation_metadata, context) if traced else None
                cancelled = False
                try:
                    async for item in inner(request, context):
                        metrics.see(method, item)
                        yield item
                except (asyncio.CancelledError, GeneratorExit):
                    cancelled = True
                    raise
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the catch-all
                    await handle_error(exc, context)
                finally:
                    metrics.observe(method, _code_of(context), time.perf_counter() - t0, full_method)
                    if span is not None:
                        end_rpc(*span, context, cancelled)

            factory = (
                grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
            )
        return factory(
            unary_behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class GrpcApp:
    """A built server: the grpc.aio server, its bound port, health and the service names."""

    name: str
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    service_names: list[str]
    metrics: Metrics
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        await self.health.set("", status)
        for svc in self.service_names:
            await self.health.set(svc, status)

    async def stop(self, grace: float) -> None:
        """Health goes NOT_SERVING, in-flight RPCs get `grace` seconds, then cleanup hooks run."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for hook in reversed(self.on_stop):
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")


async def build_server(
    name: str,
    register: list[tuple[Callable[[Any, grpc.aio.Server], None], Any, str]],
    host: str,
    port: int,
    *,
    serving: bool = True,
    metrics: Metrics | None = None,
) -> GrpcApp:
    """Builds and starts a server for `register` = [(add_fn, servicer, full_service_name)].

    Health starts NOT_SERVING when `serving` is False (the service flips it once ready). With
    the shared DDNRAG_TLS_* variables set, the port requires mutual TLS and each peer may call
    only the methods its certificate's identity allows (authz.py). Reflection is served unless
    DDNRAG_GRPC_REFLECTION=false.
    """
    metrics = metrics or Metrics(name)
    tls = load_tls()
    # Outermost, tracing included (kernel/trace_grpc.py): every later interceptor's log lines carry the ids.
    interceptors: list[grpc.aio.ServerInterceptor] = [ObservingInterceptor(metrics, tracing=tracing_installed())]
    if tls is not None:  # with mTLS each peer is a named service, allowed only its methods
        interceptors.append(AuthzInterceptor())
    interceptors.append(MessageLimitInterceptor())
    names = [full_name for _, _, full_name in register]
    receive = server_receive_limit(names)  # the largest per-method limit of these services
    options = [*SERVER_OPTIONS, ("grpc.max_receive_message_length", receive)]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    for add_fn, servicer, _ in register:
        add_fn(servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if load_env(GrpcExposureConfig).reflection:
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
        )
    if tls is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:  # mutual TLS: DDNRAG_TLS_{CA,CERT,KEY}_FILE (kernel/tls.py)
        bound = server.add_secure_port(f"{host}:{port}", server_credentials(tls))
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    await server.start()
    app = GrpcApp(name, server, bound, health, names, metrics)
    if tls is not None and tls.health_port:
        # kubelet's gRPC probes cannot do TLS: health alone, plaintext, on its own port.
        probe = grpc.aio.server(options=SERVER_OPTIONS)
        health_pb2_grpc.add_HealthServicer_to_server(health, probe)
        if probe.add_insecure_port(f"{host}:{tls.health_port}") == 0:
            raise OSError(f"cannot bind the health port {host}:{tls.health_port}")
        await probe.start()
        app.on_stop.append(lambda: probe.stop(0))
    await app.set_serving(serving)
    return app


def start_metrics(metrics: Metrics, host: str, port: int) -> None:
    """Serves Prometheus metrics on a side port (0 disables)."""
    if port:
        start_http_server(port, addr=host, registry=metrics.registry)


async def run_forever(app: GrpcApp, grace_s: float) -> None:
    """Waits for SIGTERM/SIGINT, then shuts down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving", extra={"port": app.port})
    waiter = asyncio.create_task(app.server.wait_for_termination())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down", extra={"grace_s": grace_s})
    await app.stop(grace_s)
    waiter.cancel()
    stopper.cancel()
    log.info("stopped")
