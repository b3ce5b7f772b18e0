"""An idempotent call rides out a peer's restart on the same address (the channel's reconnect
backoff reaches 3 s, longer than the quick retries), within the caller's deadline; a short deadline
still fails promptly, and a call that is not idempotent is still sent only once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from clients.base import BaseClient, ServiceCallError


class Counting(health.aio.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def Check(self, request, context):
        self.calls += 1
        return await super().Check(request, context)


async def serve(port: int = 0) -> tuple[grpc.aio.Server, int, Counting]:
    server = grpc.aio.server()
    servicer = Counting()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port, servicer


class HealthClient(BaseClient):
    service = "health"

    async def check(self, timeout: float, *, idempotent: bool = True) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        reply = await self.unary(stub.Check, health_pb2.HealthCheckRequest(), timeout=timeout, idempotent=idempotent)
        return reply.status


@pytest.fixture
async def peer() -> AsyncIterator[tuple[list[grpc.aio.Server], int]]:
    server, port, _ = await serve()
    servers = [server]
    try:
        yield servers, port
    finally:
        for s in servers:
            await s.stop(0)


async def _restart_after(servers: list[grpc.aio.Server], port: int, delay_s: float) -> Counting:
    await servers[0].stop(0)
    await asyncio.sleep(delay_s)  # longer than the quick retries (< 1 s in all): only waiting helps
    server, _, servicer = await serve(port)
    servers.append(server)
    return servicer


async def test_an_idempotent_call_waits_for_a_restarting_peer(peer: tuple[list[grpc.aio.Server], int]) -> None:
    servers, port = peer
    async with HealthClient(f"127.0.0.1:{port}") as client:
        assert await client.check(5) == health_pb2.HealthCheckResponse.SERVING
        restart = asyncio.create_task(_restart_after(servers, port, 1.5))
        await asyncio.sleep(0.2)  # the peer is down now
        assert await client.check(30) == health_pb2.HealthCheckResponse.SERVING
        assert (await restart).calls >= 1  # answered by the restarted peer


async def test_a_short_deadline_or_a_non_idempotent_call_fails_during_a_restart(
    peer: tuple[list[grpc.aio.Server], int],
) -> None:
    servers, port = peer
    async with HealthClient(f"127.0.0.1:{port}") as client:
        await client.check(5)
        await servers[0].stop(0)
        with pytest.raises(ServiceCallError) as short:
            await asyncio.wait_for(client.check(0.3), 30)
        assert short.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        restart = asyncio.create_task(_restart_after(servers, port, 1.5))
        with pytest.raises(ServiceCallError) as once:
            await asyncio.wait_for(client.check(30, idempotent=False), 30)
        assert once.value.code == grpc.StatusCode.UNAVAILABLE
        assert (await restart).calls == 0  # the restarted peer never saw it


async def test_an_address_that_never_answered_fails_unavailable() -> None:
    server, port, _ = await serve()
    await server.stop(0)  # nothing listens there any more, and this client never reached it
    async with HealthClient(f"127.0.0.1:{port}") as client:
        with pytest.raises(ServiceCallError) as err:
            await asyncio.wait_for(client.check(30), 30)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
