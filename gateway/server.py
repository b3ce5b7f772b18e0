"""`python -m gateway.server`: runs the gateway until SIGTERM/SIGINT.

On SIGTERM the listening socket closes, open SSE streams get a terminal `error` event
(SHUTTING_DOWN) and end, in-flight requests get `shutdown_grace_s` to finish, then the upstream
channels close (cleanup_ctx).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from kernel.config import ConfigError, load_env
from kernel.logs import setup_logging
from kernel.tracing import setup_tracing

from .app import create_app
from .config import GatewayConfig

log = logging.getLogger(__name__)


async def start(cfg: GatewayConfig) -> tuple[web.AppRunner, int]:
    """Starts the app on cfg.host:cfg.port and returns the runner and the bound port."""
    app = create_app(cfg)
    # handler_cancellation: a client that disconnects cancels its handler, whose `finally`
    # cancels the upstream gRPC call.
    # keepalive_timeout also bounds the wait for a request head: aiohttp arms it when a
    # connection opens and does not re-arm it per byte, so a slowloris trickle is dropped.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=cfg.shutdown_grace_s,
        access_log=None,
        keepalive_timeout=cfg.keepalive_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


async def serve(cfg: GatewayConfig) -> None:
    runner, port = await start(cfg)
    log.info("gateway listening", extra={"url": f"http://{cfg.host}:{port}/", "port": port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_s": cfg.shutdown_grace_s})
    await runner.cleanup()
    log.info("stopped")


def main() -> None:
    try:
        cfg = load_env(GatewayConfig)
        setup_logging("gateway", cfg.log_level)
        setup_tracing("gateway")  # OTEL_* variables (kernel/tracing.py)
        asyncio.run(serve(cfg))
    except ConfigError as err:  # a setting a person must change: one line, no traceback
        log.error("bad configuration: %s", err)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
