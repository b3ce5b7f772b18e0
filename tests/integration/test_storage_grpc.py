"""The storage service over real gRPC against the real SeaweedFS: every object RPC, measured
transfers, and the bad-input table."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from clients.base import ServiceCallError
from clients.storage import StorageClient
from ddnrag.storage.v1 import storage_service_pb2 as pb
from kernel.config import load_env
from services.storage.config import StorageConfig
from services.storage.server import create_server


def storage_cfg(seaweed, bucket: str, state_dir: Path, **overrides: object) -> StorageConfig:
    values: dict[str, object] = dict(
        port=0,
        metrics_port=0,
        state_dir=str(state_dir),
        default_endpoint=seaweed.endpoint,
        default_bucket=bucket,
        default_access_key_id=seaweed.access_key_id,
        default_secret_access_key=seaweed.secret_access_key,
        max_retries=1,
        retry_base_ms=5.0,
    )
    values.update(overrides)
    return load_env(StorageConfig, environ={}, **values)


@pytest.fixture
async def storage(seaweed, s3_bucket, tmp_path) -> AsyncIterator[StorageClient]:
    app, port = await create_server(storage_cfg(seaweed, s3_bucket, tmp_path / "state"))
    client = StorageClient(f"127.0.0.1:{port}", timeout_s=20)
    client.app = app  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        await client.close()
        await app.stop(0)


async def test_put_get_head_list_delete_copy(storage: StorageClient, seaweed, s3_bucket) -> None:
    put = await storage.put("docs/a.txt", b"hello world", content_type="text/plain", metadata={"doc": "a"})
    assert put.key == "docs/a.txt" and put.size_bytes == 11 and not put.multipart and put.etag
    assert put.transfer.bytes == 11 and put.transfer.total_ns > 0
    assert put.timings.total_ns >= put.timings.stages_sum_ns > 0

    # What the service wrote is really in the bucket.
    direct = seaweed.boto3_client().get_object(Bucket=s3_bucket, Key="docs/a.txt")
    assert direct["Body"].read() == b"hello world"

    data, info, tr = await storage.get("docs/a.txt")
    assert data == b"hello world"
    assert info.size_bytes == 11 and info.content_type == "text/plain" and info.metadata["doc"] == "a"
    assert 0 < tr.ttfb_ns <= tr.total_ns and tr.bytes == 11 and tr.retries == 0

    part, _, tr = await storage.get("docs/a.txt", range_start=6, range_end=10)
    assert part == b"world" and tr.bytes == 5
    tail, _, _ = await storage.get("docs/a.txt", range_start=6)
    assert tail == b"world"

    head = await storage.head("docs/a.txt")
    assert head.info.size_bytes == 11 and head.info.etag == put.etag and head.transfer.ttfb_ns > 0

    cp = await storage.copy("docs/a.txt", "docs/b.txt")
    assert cp.info.key == "docs/b.txt" and cp.info.size_bytes == 11
    assert (await storage.get("docs/b.txt"))[0] == b"hello world"

    listed = [o.key async for o in storage.list_all("docs/")]
    assert listed == ["docs/a.txt", "docs/b.txt"]

    deleted = await storage.delete(["docs/a.txt", "docs/missing.txt"])
    assert deleted.deleted == 2
    assert [o.key async for o in storage.list_all("docs/")] == ["docs/b.txt"]
    deleted = await storage.delete(prefix="docs/")
    assert deleted.deleted == 1
    assert [o.key async for o in storage.list_all("docs/")] == []


async def test_list_paginates(storage: StorageClient) -> None:
    resp = await storage.batch_put([(f"p/{i:03d}", b"x" * i) for i in range(25)])
    assert all(r.status.code == 0 for r in resp.results)
    page1 = await storage.list("p/", page_size=10)
    assert len(page1.objects) == 10 and page1.next_page_token
    page2 = await storage.list("p/", page_size=10, page_token=page1.next_page_token)
    page3 = await storage.list("p/", page_size=10, page_token=page2.next_page_token)
    keys = [o.key for o in [*page1.objects, *page2.objects, *page3.objects]]
    assert keys == [f"p/{i:03d}" for i in range(25)] and not page3.next_page_token
    assert page1.objects[3].size_bytes == 3


async def test_batch_get_parallel_with_per_item_status(storage: StorageClient) -> None:
    items = [(f"chunks/c{i}", f"chunk {i}".encode()) for i in range(40)]
    put = await storage.batch_put(items)
    assert [r.key for r in put.results] == [k for k, _ in items]
    assert all(r.status.code == 0 and r.etag and r.transfer.bytes > 0 for r in put.results)

    keys = [k for k, _ in items[:10]] + ["chunks/missing", "../bad"]
    got = await storage.batch_get(keys)
    assert [r.key for r in got.results] == keys
    for r, (_, data) in zip(got.results[:10], items[:10], strict=True):
        assert r.status.code == 0 and r.data == data and r.transfer.ttfb_ns > 0 and r.info.size_bytes == len(data)
    assert got.results[10].status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "chunks/missing" in got.results[10].status.message
    assert got.results[11].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    stage = next(s for s in got.timings.stages if s.name == "s3_batch_get")
    assert stage.count == 10 and stage.backend == "local" and stage.bytes == sum(len(d) for _, d in items[:10])


@pytest.mark.parametrize(
    "key",
    ["", "/abs/key", "a/../b", "..", "a/./b", "bad\x00key", "tab\tkey", "k" * 1025, "é" * 513],
)
async def test_bad_keys_are_invalid_argument_on_every_rpc(storage: StorageClient, key: str) -> None:
    calls = [
        storage.put(key, b"x"),
        storage.get(key),
        storage.head(key),
        storage.copy(key, "ok/dst"),
        storage.copy("ok/src", key),
        storage.delete([key]),
    ]
    for coro in calls:
        with pytest.raises(ServiceCallError) as ei:
            await coro
        assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT, key
        assert ei.value.reason == "INVALID_KEY"
    with pytest.raises(ServiceCallError) as ei:
        await storage.list(prefix=key or "/abs")
    assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing was written.
    assert [o async for o in storage.list_all()] == []


async def test_key_of_exactly_1024_bytes_is_accepted(storage: StorageClient) -> None:
    key = "/".join(["k" * 200] * 5) + "/" + "z" * 19
    assert len(key.encode()) == 1024
    await storage.put(key, b"ok")
    assert (await storage.get(key))[0] == b"ok"


async def test_missing_object_and_unknown_backend_are_not_found(storage: StorageClient) -> None:
    reg = storage.app.metrics.registry  # type: ignore[attr-defined]

    def misses(op: str) -> float:
        labels = {"backend": "local", "operation": op, "kind": "OBJECT_NOT_FOUND"}
        return reg.get_sample_value("storage_backend_errors_total", labels) or 0.0

    before = {op: misses(op) for op in ("get", "head")}
    for coro in (storage.get("nope/x"), storage.head("nope/x"), storage.copy("nope/x", "nope/y")):
        with pytest.raises(ServiceCallError) as ei:
            await coro
        assert ei.value.code == grpc.StatusCode.NOT_FOUND
        assert "nope/x" in ei.value.message
    # Each miss is counted per backend, operation and kind (background reads may add more).
    assert all(misses(op) >= before[op] + 1 for op in before), {op: misses(op) for op in before}
    with pytest.raises(ServiceCallError) as ei:
        await storage.get("a", backend="nosuch")
    assert ei.value.code == grpc.StatusCode.NOT_FOUND and ei.value.reason == "BACKEND_NOT_FOUND"
    assert "nosuch" in ei.value.message


async def test_missing_bucket_is_not_found_naming_it(seaweed, tmp_path) -> None:
    app, port = await create_server(storage_cfg(seaweed, "no-such-bucket-xyz", tmp_path))
    try:
        async with StorageClient(f"127.0.0.1:{port}") as c:
            with pytest.raises(ServiceCallError) as ei:
                await c.get("a/b")
            assert ei.value.code == grpc.StatusCode.NOT_FOUND
            assert "no-such-bucket-xyz" in ei.value.message
            assert ei.value.reason == "BUCKET_NOT_FOUND"
            # (SeaweedFS creates a missing bucket on PUT, so only reads are asserted here.)
            with pytest.raises(ServiceCallError) as ei:
                await c.list("a/")
            assert ei.value.code == grpc.StatusCode.NOT_FOUND and "no-such-bucket-xyz" in ei.value.message
    finally:
        await app.stop(0)


async def test_wrong_credentials_name_backend_not_secret(seaweed, s3_bucket, tmp_path) -> None:
    secret = "WRONG-secret-" + os.urandom(8).hex()
    cfg = storage_cfg(seaweed, s3_bucket, tmp_path, default_secret_access_key=secret)
    app, port = await create_server(cfg)
    try:
        async with StorageClient(f"127.0.0.1:{port}") as c:
            for coro in (c.put("a/b", b"x"), c.get("a/b")):
                with pytest.raises(ServiceCallError) as ei:
                    await coro
                assert ei.value.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
                assert "local" in ei.value.message
                assert secret not in str(ei.value) and secret not in str(ei.value.metadata)
    finally:
        await app.stop(0)


async def test_backend_down_is_unavailable_after_retries(seaweed, tmp_path) -> None:
    # A port nothing listens on: bind, read the port, close.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    cfg = storage_cfg(seaweed, "ddnrag", tmp_path, default_endpoint=f"http://127.0.0.1:{dead}", max_retries=2)
    app, port = await create_server(cfg)
    try:
        async with StorageClient(f"127.0.0.1:{port}", retries=0) as c:
            with pytest.raises(ServiceCallError) as ei:
                await c.get("a/b")
            assert ei.value.code == grpc.StatusCode.UNAVAILABLE
            assert "after 2 retries" in ei.value.message and "local" in ei.value.message
            resp = await c.batch_get(["a/b"])
            assert resp.results[0].status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    finally:
        await app.stop(0)


async def test_health_serving_with_default_backend(storage: StorageClient) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(storage.channel)
    resp = await stub.Check(health_pb2.HealthCheckRequest(service="ddnrag.storage.v1.StorageService"))
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_concurrent_gets(storage: StorageClient) -> None:
    await storage.batch_put([(f"c/{i}", bytes([i]) * 4096) for i in range(16)])
    results = await asyncio.gather(*(storage.get(f"c/{i}") for i in range(16)))
    assert [r[0] for r in results] == [bytes([i]) * 4096 for i in range(16)]


async def test_list_backends_shows_default_without_secrets(storage: StorageClient, seaweed) -> None:
    resp = await storage.list_backends()
    assert resp.default_backend == "local"
    (b,) = resp.backends
    assert b.name == "local" and b.is_default and b.has_credentials and b.kind == pb.BACKEND_KIND_S3_COMPATIBLE
    assert b.access_key_id == "" and b.secret_access_key == ""
    assert seaweed.secret_access_key not in str(resp)


@pytest.mark.parametrize("key", ["docs/a b+c%/é ü?x=1&y#z.txt", "chunks/c~1/!$'()*,;=:@[]", "日本/語.md"])
async def test_keys_with_special_characters_round_trip(storage: StorageClient, seaweed, s3_bucket, key: str) -> None:
    await storage.put(key, b"special")
    assert (await storage.get(key))[0] == b"special"
    got = await storage.batch_get([key])
    assert got.results[0].status.code == 0 and got.results[0].data == b"special"
    assert (await storage.head(key)).info.size_bytes == 7
    assert [o.key async for o in storage.list_all(key.split("/")[0] + "/")] == [key]
    direct = seaweed.boto3_client().get_object(Bucket=s3_bucket, Key=key)
    assert direct["Body"].read() == b"special"


async def test_fast_get_and_boto3_get_agree(seaweed, s3_bucket, tmp_path) -> None:
    payload = os.urandom(70_000)
    seaweed.boto3_client().put_object(
        Bucket=s3_bucket, Key="agree/x", Body=payload, ContentType="text/x", Metadata={"m": "v"}
    )
    seen = []
    for fast in (True, False):
        app, port = await create_server(storage_cfg(seaweed, s3_bucket, tmp_path / str(fast), fast_get=fast))
        try:
            async with StorageClient(f"127.0.0.1:{port}") as c:
                data, info, tr = await c.get("agree/x")
                part, _, _ = await c.get("agree/x", range_start=10, range_end=19)
                with pytest.raises(ServiceCallError) as ei:
                    await c.get("agree/missing")
                seen.append(
                    (
                        data,
                        info.size_bytes,
                        info.etag,
                        info.content_type,
                        dict(info.metadata),
                        part,
                        ei.value.code,
                        ei.value.reason,
                    )
                )
                assert 0 < tr.ttfb_ns <= tr.total_ns
        finally:
            await app.stop(0)
    assert seen[0] == seen[1]
    assert seen[0][0] == payload and seen[0][5] == payload[10:20] and seen[0][4] == {"m": "v"}


async def test_get_stream_shapes_small_whole_large_chunked(storage: StorageClient) -> None:
    await storage.put("shape/small", b"s" * 5000)
    big = os.urandom(1_500_000)
    await storage.put("shape/big", big)
    small_msgs = [m async for m in storage.get_stream("shape/small")]
    assert [m.WhichOneof("part") for m in small_msgs] == ["whole"]
    assert small_msgs[0].whole.data == b"s" * 5000 and small_msgs[0].whole.transfer.bytes == 5000
    assert 0 < small_msgs[0].whole.transfer.ttfb_ns <= small_msgs[0].whole.transfer.total_ns
    big_msgs = [m async for m in storage.get_stream("shape/big")]
    assert [m.WhichOneof("part") for m in big_msgs] == ["info", "data", "data", "transfer"]
    assert b"".join(m.data for m in big_msgs[1:3]) == big and big_msgs[-1].transfer.bytes == len(big)


async def test_a_refused_put_raises_the_refusal_not_the_closed_stream(storage: StorageClient) -> None:
    """The server refuses the header while the client still streams: grpc.aio closes the request
    generator (GeneratorExit at its `yield`), which is not a failure of the caller's data, so the
    caller gets INVALID_ARGUMENT, never a GeneratorExit (a flaky failure of the bad-keys test)."""

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(2000):
            yield b"x" * 1024

    for _ in range(10):
        with pytest.raises(ServiceCallError) as ei:
            await storage.put_stream("/abs/key", pieces())
        assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT and ei.value.reason == "INVALID_KEY"
