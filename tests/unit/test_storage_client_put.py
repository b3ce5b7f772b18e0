"""The storage client's Put stream on the wire, against a recording gRPC server: a finished
upload ends with an `end` message carrying the count sent and declares a known size; a failed
one is cancelled and never carries `end` (the server could not tell it from a finished one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from clients.storage import StorageClient
from ddnrag.storage.v1 import storage_service_pb2 as pb
from ddnrag.storage.v1 import storage_service_pb2_grpc as pb_grpc


class Recorder(pb_grpc.StorageServiceServicer):
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.header: pb.PutHeader | None = None
        self.outcome = asyncio.get_running_loop().create_future()

    async def Put(self, request_iterator, context):
        try:
            async for msg in request_iterator:
                self.parts.append(msg.WhichOneof("part"))
                if msg.HasField("header"):
                    self.header = msg.header
            await asyncio.sleep(0.3)  # a cancel lands here; a half-close does not
            self.outcome.set_result("finished")
            return pb.PutResponse(key=self.header.key if self.header else "")
        except asyncio.CancelledError:
            self.outcome.set_result("cancelled")
            raise


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, StorageClient]]:
    server = grpc.aio.server()
    rec = Recorder()
    pb_grpc.add_StorageServiceServicer_to_server(rec, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = StorageClient(f"127.0.0.1:{port}", timeout_s=10)
    try:
        yield rec, client
    finally:
        await client.close()
        await server.stop(0)


async def test_finished_upload_ends_with_its_count(recorder) -> None:
    rec, client = recorder
    await client.put("k", b"x" * 2_500_000)
    assert rec.header is not None and rec.header.size_bytes == 2_500_000
    assert rec.parts == ["header", "data", "data", "data", "end"]
    assert await rec.outcome == "finished"


@pytest.mark.parametrize("after", [0, 1, 3])
async def test_failed_upload_is_cancelled_never_ended(recorder, after: int) -> None:
    rec, client = recorder

    async def broken() -> AsyncIterator[bytes]:
        for _ in range(after):
            yield b"abc"
        raise OSError("disk read failed")

    with pytest.raises(OSError, match="disk read failed"):
        await client.put_stream("k", broken())
    assert await asyncio.wait_for(rec.outcome, 5) == "cancelled"
    assert "end" not in rec.parts
