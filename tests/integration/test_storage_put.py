"""Streaming Put against the real SeaweedFS: one PUT below the threshold, multipart above it,
and a failed or cancelled upload leaves no object and no open multipart upload."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import grpc
import pytest

from clients.base import ServiceCallError
from clients.storage import StorageClient
from ddnrag.storage.v1 import storage_service_pb2 as pb
from kernel.config import load_env
from services.storage.config import StorageConfig
from services.storage.server import create_server

MIB = 1024 * 1024


@pytest.fixture
async def storage(seaweed, s3_bucket, tmp_path) -> AsyncIterator[StorageClient]:
    cfg = load_env(
        StorageConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path),
        default_endpoint=seaweed.endpoint,
        default_bucket=s3_bucket,
        default_access_key_id=seaweed.access_key_id,
        default_secret_access_key=seaweed.secret_access_key,
        multipart_threshold_bytes=1 * MIB,
        multipart_part_bytes=5 * MIB,
    )
    app, port = await create_server(cfg)
    client = StorageClient(f"127.0.0.1:{port}", timeout_s=60)
    try:
        yield client
    finally:
        await client.close()
        await app.stop(0)


def open_uploads(seaweed, bucket: str) -> list[str]:
    resp = seaweed.boto3_client().list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in resp.get("Uploads", [])]


async def chunks_of(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_small_put_is_one_request(storage: StorageClient) -> None:
    data = os.urandom(300_000)
    put = await storage.put_stream("s/one", chunks_of(data), content_type="application/pdf", size_bytes=len(data))
    assert not put.multipart and put.size_bytes == len(data) and put.transfer.bytes == len(data)
    got, info, _ = await storage.get("s/one")
    assert got == data and info.content_type == "application/pdf"


async def test_large_put_goes_multipart_and_reads_back(storage: StorageClient, seaweed, s3_bucket) -> None:
    data = os.urandom(11 * MIB + 123)
    put = await storage.put_stream("s/big.bin", chunks_of(data), metadata={"sha": "x"})
    assert put.multipart and put.size_bytes == len(data) and put.transfer.bytes == len(data)
    assert any(s.name == "s3_multipart_put" and s.count == 3 for s in put.timings.stages)
    got, info, tr = await storage.get("s/big.bin")
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert info.size_bytes == len(data) and info.metadata["sha"] == "x" and tr.bytes == len(data)
    assert open_uploads(seaweed, s3_bucket) == []


async def test_failing_iterator_cancels_and_leaves_nothing(storage: StorageClient, seaweed, s3_bucket) -> None:
    async def broken() -> AsyncIterator[bytes]:
        for _ in range(28):  # 7 MiB: past the threshold, so a multipart upload is open
            yield os.urandom(256 * 1024)
        await asyncio.sleep(0.3)  # let the server upload the first part
        raise RuntimeError("disk read failed")

    with pytest.raises(RuntimeError, match="disk read failed"):
        await storage.put_stream("s/partial", broken())
    for _ in range(50):
        if not open_uploads(seaweed, s3_bucket):
            break
        await asyncio.sleep(0.1)
    assert open_uploads(seaweed, s3_bucket) == []
    with pytest.raises(ServiceCallError) as ei:
        await storage.head("s/partial")
    assert ei.value.code == grpc.StatusCode.NOT_FOUND

    async def broken_small() -> AsyncIterator[bytes]:
        yield b"abc"
        raise ValueError("nope")

    with pytest.raises(ValueError):
        await storage.put_stream("s/small-partial", broken_small())
    await asyncio.sleep(0.2)
    with pytest.raises(ServiceCallError):
        await storage.head("s/small-partial")


async def test_size_mismatch_stores_nothing(storage: StorageClient) -> None:
    with pytest.raises(ServiceCallError) as ei:
        await storage.put_stream("s/mis", chunks_of(b"12345"), size_bytes=10)
    assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT and ei.value.reason == "SIZE_MISMATCH"
    with pytest.raises(ServiceCallError):
        await storage.head("s/mis")


async def test_stream_without_header_is_invalid(storage: StorageClient) -> None:
    async def reqs() -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(data=b"x")

    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await storage.stub.Put(reqs())
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_metadata_is_invalid(storage: StorageClient) -> None:
    with pytest.raises(ServiceCallError) as ei:
        await storage.put("s/m", b"x", metadata={"bad key": "v"})
    assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ServiceCallError):
        await storage.head("s/m")


async def test_multipart_size_mismatch_is_aborted(storage: StorageClient, seaweed, s3_bucket) -> None:
    data = os.urandom(7 * MIB)
    with pytest.raises(ServiceCallError) as ei:
        await storage.put_stream("s/mis-big", chunks_of(data), size_bytes=8 * MIB)
    assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT and ei.value.reason == "SIZE_MISMATCH"
    assert open_uploads(seaweed, s3_bucket) == []
    with pytest.raises(ServiceCallError):
        await storage.head("s/mis-big")


# --- the truncated-object race (issue 17) --------------------------------------------------------
# A client that cancels its Put stream and one that half-closes it look the same to a grpc.aio
# server (the request iterator just ends). The race that once committed `s/small-partial` is the
# server seeing the end of a stream the client meant to abandon; these tests send exactly that.


def header(key: str, size: int = 0) -> pb.PutRequest:
    return pb.PutRequest(header=pb.PutHeader(key=key, size_bytes=size))


async def test_half_closed_stream_without_end_stores_nothing(storage: StorageClient) -> None:
    async def cut_off() -> AsyncIterator[pb.PutRequest]:
        yield header("s/cut")
        yield pb.PutRequest(data=b"only the first half")

    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await storage.stub.Put(cut_off())
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "end" in (ei.value.details() or "")
    with pytest.raises(ServiceCallError) as nf:
        await storage.head("s/cut")
    assert nf.value.code == grpc.StatusCode.NOT_FOUND


async def test_half_closed_multipart_without_end_is_aborted(storage: StorageClient, seaweed, s3_bucket) -> None:
    async def cut_off() -> AsyncIterator[pb.PutRequest]:
        yield header("s/cut-big")
        for _ in range(6):
            yield pb.PutRequest(data=os.urandom(MIB))

    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await storage.stub.Put(cut_off())
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert open_uploads(seaweed, s3_bucket) == []
    with pytest.raises(ServiceCallError):
        await storage.head("s/cut-big")


async def test_end_message_with_wrong_count_stores_nothing(storage: StorageClient) -> None:
    async def lying() -> AsyncIterator[pb.PutRequest]:
        yield header("s/lie")
        yield pb.PutRequest(data=b"abc")
        yield pb.PutRequest(end=pb.PutEnd(size_bytes=4))

    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await storage.stub.Put(lying())
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ServiceCallError):
        await storage.head("s/lie")


async def test_empty_object_and_declared_size_still_commit(storage: StorageClient) -> None:
    put = await storage.put_stream("s/empty", chunks_of(b""))
    assert put.size_bytes == 0
    assert (await storage.get("s/empty"))[0] == b""

    async def declared() -> AsyncIterator[pb.PutRequest]:  # a declared size needs no end message
        yield header("s/declared", 3)
        yield pb.PutRequest(data=b"abc")

    resp = await storage.stub.Put(declared())
    assert resp.size_bytes == 3 and (await storage.get("s/declared"))[0] == b"abc"


async def test_many_failed_uploads_leave_no_object(storage: StorageClient) -> None:
    """Failures at every point of a small upload (before, between and after data messages)."""

    def broken(n: int) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(n):
                yield b"x" * (1000 + i)
            raise OSError("read failed")

        return gen()

    for i in range(40):
        with pytest.raises(OSError):
            await storage.put_stream(f"s/fail-{i}", broken(i % 4))
    await asyncio.sleep(0.2)
    listing = await storage.list("s/fail-")
    assert [o.key for o in listing.objects] == []
