"""`GET /api/health`: the standard gRPC health check on every upstream, in parallel.

The endpoint is open (probes), so its answers name services, never their internal addresses;
the gateway's own log has the addresses. It is rate-limited per client address (access.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..state import CONFIG, UPSTREAMS

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


async def check_service(name: str, channel: grpc.aio.Channel, address: str, timeout_s: float) -> dict[str, Any]:
    """One service's health, for people; `address` goes to the log only."""
    stub = health_pb2_grpc.HealthStub(channel)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
    except grpc.aio.AioRpcError as err:
        message = (
            f"the {name} service did not answer in {timeout_s:g} s"
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            else f"the {name} service is unavailable ({err.code().name.lower()})"
        )
        log.warning("health check failed", extra={"service": name, "address": address, "code": err.code().name})
        return {"service": name, "status": "unavailable", "serving": False, "message": message}
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status).lower()
    serving = resp.status == health_pb2.HealthCheckResponse.SERVING
    return {
        "service": name,
        "status": status,
        "serving": serving,
        "latency_ms": round((loop.time() - t0) * 1000, 2),
        "message": "" if serving else f"the {name} service is {status.replace('_', ' ')}",
    }


async def check_all(app: web.Application) -> dict[str, Any]:
    cfg = app[CONFIG]
    clients = app[UPSTREAMS].by_name()
    results = await asyncio.gather(
        *(check_service(n, c.channel, c.address, cfg.health_timeout_s) for n, c in clients.items())
    )
    down = [r["service"] for r in results if not r["serving"]]
    return {
        "status": "ok" if not down else "degraded",
        "services": {r["service"]: r for r in results},
        "down": down,
        "message": "" if not down else "not serving: " + "; ".join(r["message"] for r in results if not r["serving"]),
    }


@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    """200 when every service serves, else 503 naming each one that does not."""
    report = await check_all(request.app)
    return web.json_response(report, status=200 if not report["down"] else 503)


@routes.get("/healthz")
async def liveness(request: web.Request) -> web.Response:
    """The gateway process itself is up (for a Kubernetes liveness probe)."""
    return web.json_response({"status": "ok"})
