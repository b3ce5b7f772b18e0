"""`python -m services.embedder.server`: the embedder's gRPC server.

The server starts at once with health NOT_SERVING; the model loads (and, on first start, is
exported for OpenVINO) in a thread, is warmed, and only then does health turn SERVING.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable

from ddnrag.embedder.v1 import embedder_service_pb2 as pb
from ddnrag.embedder.v1 import embedder_service_pb2_grpc as pb_grpc
from kernel.config import ConfigError, load_env
from kernel.logs import setup_logging
from kernel.server import GrpcApp, Metrics, build_server, run_forever, start_metrics
from kernel.tracing import setup_tracing

from .config import EmbedderConfig
from .core import Embedder
from .metrics import EmbedderMetrics
from .servicer import EmbedderServicer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EmbedderService"].full_name


async def create_server(
    cfg: EmbedderConfig, *, on_load_failed: Callable[[BaseException], None] | None = None
) -> tuple[GrpcApp, int]:
    """Starts the server (NOT_SERVING) and loads the model in the background; health turns
    SERVING when the model is loaded and warmed. A failed load is logged, health stays
    NOT_SERVING and `on_load_failed` is called."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    core = Embedder(cfg)
    metrics = Metrics("embedder")
    embedder_metrics = EmbedderMetrics(metrics.registry)
    embedder_metrics.attach(metrics)
    core.on_batch = embedder_metrics.batch
    app = await build_server(
        "embedder",
        [(pb_grpc.add_EmbedderServiceServicer_to_server, EmbedderServicer(core), SERVICE_NAME)],
        cfg.host,
        cfg.port,
        serving=False,
        metrics=metrics,
    )

    async def load() -> None:
        try:
            info = await core.start()
        except Exception as err:
            log.exception("the model failed to load; staying NOT_SERVING")
            if on_load_failed is not None:
                on_load_failed(err)
            return
        log.info("ready", extra={"backend": info.backend, "device": info.device, "dtype": info.dtype})
        await app.set_serving(True)

    loading = asyncio.create_task(load(), name="embedder-load")

    async def stop_loading() -> None:
        loading.cancel()
        try:
            await loading
        except asyncio.CancelledError:
            pass
        await core.close()

    app.on_stop.append(stop_loading)
    return app, app.port


async def _serve(cfg: EmbedderConfig) -> int:
    failed: list[BaseException] = []
    app, _port = await create_server(cfg, on_load_failed=failed.append)
    start_metrics(app.metrics, cfg.host, cfg.metrics_port)
    run = asyncio.create_task(run_forever(app, cfg.shutdown_grace_s))
    while not run.done():
        await asyncio.wait({run}, timeout=0.5)
        if failed and not run.done():
            run.cancel()
            await app.stop(0)
            return 1
    return 0


def main() -> None:
    try:
        cfg = load_env(EmbedderConfig)
    except ConfigError as err:
        print(f"embedder: {err}", file=sys.stderr)
        sys.exit(2)
    setup_logging("embedder", cfg.log_level)
    setup_tracing("embedder")  # OTEL_* variables (kernel/tracing.py)
    sys.exit(asyncio.run(_serve(cfg)))


if __name__ == "__main__":
    main()
