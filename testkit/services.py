"""The four services in this process on 127.0.0.1:0 (embedder with the real model, storage over
a given S3 bucket, retriever, llm_gateway), for integration tests that need the real chain."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kernel.config import load_env
from services.embedder.config import EmbedderConfig
from services.embedder.server import create_server as create_embedder
from services.llm_gateway.config import LlmGatewayConfig
from services.llm_gateway.server import create_server as create_llm
from services.retriever.config import RetrieverConfig
from services.retriever.server import create_server as create_retriever
from services.storage.config import StorageConfig
from services.storage.server import create_server as create_storage


@dataclass
class Ports:
    embedder: int
    storage: int
    retriever: int
    llm_gateway: int

    def addr(self, service: str) -> str:
        return f"127.0.0.1:{getattr(self, service)}"


async def wait_serving(port: int, service: str, timeout_s: float = 180.0) -> None:
    """Until `service` on `port` reports SERVING (a server not answering yet counts as not yet)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            try:
                r = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError as err:
                if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{service} did not become SERVING in {timeout_s:g} s")


@contextlib.asynccontextmanager
async def rag_services(
    endpoint: str,
    bucket: str,
    access_key_id: str,
    secret_access_key: str,
    state: Path,
    *,
    llm_storage: bool,
    endpoint_allowlist: tuple[str, ...] = (),
) -> AsyncIterator[Ports]:
    """Starts the chain; `llm_storage` gives the llm_gateway the storage service (conversations,
    A/B runs); `endpoint_allowlist`: loopback endpoints other than `endpoint` that backends added
    at run time may reach. Stops everything in reverse order."""
    apps = []
    try:
        eapp, eport = await create_embedder(
            load_env(EmbedderConfig, environ={}, port=0, metrics_port=0, backend="torch", state_dir=str(state / "e"))
        )
        apps.append(eapp)
        sapp, sport = await create_storage(
            load_env(
                StorageConfig,
                environ={},
                port=0,
                metrics_port=0,
                state_dir=str(state / "s"),
                default_endpoint=endpoint,
                default_bucket=bucket,
                default_access_key_id=access_key_id,
                default_secret_access_key=secret_access_key,
                endpoint_allowlist=endpoint_allowlist,
            )
        )
        apps.append(sapp)
        await wait_serving(eport, "ddnrag.embedder.v1.EmbedderService")
        rapp, rport = await create_retriever(
            load_env(
                RetrieverConfig,
                environ={},
                port=0,
                metrics_port=0,
                state_dir=str(state / "r"),
                embedder_addr=f"127.0.0.1:{eport}",
                storage_addr=f"127.0.0.1:{sport}",
            )
        )
        apps.append(rapp)
        await wait_serving(rport, "ddnrag.retriever.v1.RetrieverService", 60)
        extra = {"storage_addr": f"127.0.0.1:{sport}"} if llm_storage else {}
        lapp, lport = await create_llm(
            load_env(
                LlmGatewayConfig,
                environ={},
                port=0,
                metrics_port=0,
                state_dir=str(state / "l"),
                retriever_addr=f"127.0.0.1:{rport}",
                embedder_addr=f"127.0.0.1:{eport}",
                **extra,
            )
        )
        apps.append(lapp)
        yield Ports(eport, sport, rport, lport)
    finally:
        for app in reversed(apps):
            await app.stop(0)
