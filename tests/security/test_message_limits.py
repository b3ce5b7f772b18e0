"""Request messages are limited per gRPC method (finding 8), not 256 MiB everywhere: a storage
Head with a 5 MiB key is refused while a 20 MiB upload part stream and a 20 MiB BatchPut are
not, and a server without large methods accepts only small messages at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from clients.base import channel_options
from ddnrag.storage.v1 import storage_service_pb2 as spb
from ddnrag.storage.v1 import storage_service_pb2_grpc as spb_grpc
from kernel.message_limits import DEFAULT_BYTES, MIB, limit_for, server_receive_limit
from kernel.server import GrpcApp, build_server
from tests.integration.test_gateway_doubles import DoubleStorage

STORAGE = "ddnrag.storage.v1.StorageService"


@pytest.fixture
async def storage() -> AsyncIterator[GrpcApp]:
    app = await build_server(
        "storage", [(spb_grpc.add_StorageServiceServicer_to_server, DoubleStorage(), STORAGE)], "127.0.0.1", 0
    )
    try:
        yield app
    finally:
        await app.stop(0)


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_each_method_has_its_own_limit(storage: GrpcApp) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{storage.port}", options=channel_options()) as ch:
        stub = spb_grpc.StorageServiceStub(ch)
        big_key = "k/" + "x" * (5 * MIB)
        assert await _code(stub.Head(spb.HeadRequest(key=big_key), timeout=10)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await _code(stub.ListBackends(spb.ListBackendsRequest(), timeout=10)) == grpc.StatusCode.OK

        async def parts(size: int) -> AsyncIterator[spb.PutRequest]:
            yield spb.PutRequest(header=spb.PutHeader(key="docs/c/a.txt"))
            yield spb.PutRequest(data=b"x" * size)

        assert await _code(stub.Put(parts(2 * MIB), timeout=10)) != grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await _code(stub.Put(parts(20 * MIB), timeout=10)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        batch = spb.BatchPutRequest(items=[spb.PutItem(key="chunks/c/1", data=b"y" * (20 * MIB))])
        assert await _code(stub.BatchPut(batch, timeout=30)) != grpc.StatusCode.RESOURCE_EXHAUSTED


def test_servers_accept_only_their_largest_method() -> None:
    assert server_receive_limit([STORAGE]) == 256 * MIB
    assert server_receive_limit(["ddnrag.llm.v1.LlmService"]) == 32 * MIB
    assert server_receive_limit(["grpc.health.v1.Health"]) == DEFAULT_BYTES
    assert limit_for(f"/{STORAGE}/PutBackend") == DEFAULT_BYTES
