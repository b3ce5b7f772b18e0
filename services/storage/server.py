"""`python -m services.storage.server`: the storage service on DDNRAG_STORAGE_PORT (50052)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ddnrag.storage.v1 import storage_service_pb2 as pb
from ddnrag.storage.v1 import storage_service_pb2_grpc as pb_grpc
from kernel.config import load_env
from kernel.errors import ServiceError
from kernel.logs import setup_logging
from kernel.server import GrpcApp, Metrics, build_server, run_forever, start_metrics
from kernel.tracing import setup_tracing

from .backends import build_registry
from .config import StorageConfig
from .core import StorageCore
from .metrics import StoreMetrics
from .servicer import StorageServicer

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StorageService"].full_name


async def create_server(cfg: StorageConfig) -> tuple[GrpcApp, int]:
    """Builds the core and the server. Health is SERVING once the shared backend registry has
    been read (one try here, then in the background): a replica that cannot read it would serve
    an incomplete backend list. After that, the store being briefly unreachable fails calls
    with UNAVAILABLE, and the last registry read stays live."""
    core = StorageCore(cfg, await asyncio.to_thread(build_registry, cfg))
    servicer = StorageServicer(core)
    metrics = Metrics("storage")
    core.backends.record_to(StoreMetrics(metrics.registry))
    loaded = await core.backends.start()
    try:
        app = await build_server(
            "storage",
            [(pb_grpc.add_StorageServiceServicer_to_server, servicer, SERVICE_NAME)],
            cfg.host,
            cfg.port,
            serving=loaded,
            metrics=metrics,
        )
    except BaseException:
        await core.close()  # stops the registry follower
        raise
    app.core = core  # type: ignore[attr-defined] - tests and bench reach the core through the app

    async def warm() -> None:
        if not loaded:
            await core.backends.wait_loaded()
            await app.set_serving(True)
            log.info("the backend registry is loaded: serving")
        with contextlib.suppress(Exception):
            await core.backends.store("")

    warm_task = asyncio.create_task(warm())

    async def cleanup() -> None:
        warm_task.cancel()
        await core.close()

    app.on_stop.append(cleanup)
    return app, app.port


async def _main() -> None:
    cfg = load_env(StorageConfig)
    setup_logging("storage", cfg.log_level)
    setup_tracing("storage")  # OTEL_* variables (kernel/tracing.py)
    try:
        app, port = await create_server(cfg)
    except ServiceError as err:  # a default backend that cannot be configured: say why, exit
        log.error("cannot start the storage service: %s", err.message, extra={"reason": err.reason})
        raise SystemExit(2) from None
    start_metrics(app.metrics, cfg.host, cfg.metrics_port)
    log.info(
        "storage service ready",
        extra={"port": port, "default_backend": cfg.default_backend_name, "endpoint": cfg.default_endpoint},
    )
    await run_forever(app, cfg.shutdown_grace_s)


def main() -> None:
    asyncio.run(_main())


if __name__ == "__main__":
    main()
