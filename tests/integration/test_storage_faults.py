"""Throttling and mid-transfer failures, injected by a loopback proxy in front of the real
SeaweedFS: retried with backoff and counted, or UNAVAILABLE once the retries are spent."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from clients.base import ServiceCallError
from clients.storage import StorageClient
from kernel.config import load_env
from services.storage.config import StorageConfig
from services.storage.server import create_server
from testkit.faultproxy import S3FaultProxy


def cfg_for(seaweed, bucket: str, endpoint: str, state: Path, **kw: object) -> StorageConfig:
    values: dict[str, object] = dict(
        port=0,
        metrics_port=0,
        state_dir=str(state),
        default_endpoint=endpoint,
        default_bucket=bucket,
        default_access_key_id=seaweed.access_key_id,
        default_secret_access_key=seaweed.secret_access_key,
        max_retries=3,
        retry_base_ms=5.0,
        get_chunk_bytes=64 * 1024,
        # One replica: no registry polling, whose GETs through the proxy could take an injected fault.
        registry_poll_s=0.0,
    )
    values.update(kw)
    return load_env(StorageConfig, environ={}, **values)


@pytest.fixture
async def faulty(seaweed, s3_bucket, tmp_path) -> AsyncIterator[tuple[StorageClient, S3FaultProxy]]:
    port = int(seaweed.endpoint.rsplit(":", 1)[1])
    proxy = S3FaultProxy("127.0.0.1", port)
    await proxy.start()
    app, grpc_port = await create_server(cfg_for(seaweed, s3_bucket, proxy.endpoint, tmp_path))
    client = StorageClient(f"127.0.0.1:{grpc_port}", retries=0, timeout_s=30)
    try:
        yield client, proxy
    finally:
        await client.close()
        await app.stop(0)
        await proxy.stop()


async def test_slowdown_is_retried_and_counted(faulty) -> None:
    client, proxy = faulty
    proxy.throttle(2, method="PUT")
    put = await client.put("t/a", b"payload")
    assert put.transfer.retries == 2 and proxy.injected["throttle"] == 2
    proxy.throttle(1, method="GET")
    data, _, tr = await client.get("t/a")
    assert data == b"payload" and tr.retries == 1
    # The backoff shows in the latency instead of being hidden.
    assert tr.total_ns >= 2_000_000
    proxy.throttle(1, method="HEAD")
    head = await client.head("t/a")
    assert head.transfer.retries == 1


async def test_throttling_beyond_retries_is_unavailable(faulty) -> None:
    client, proxy = faulty
    await client.put("t/b", b"x")
    proxy.throttle(10, method="GET")
    with pytest.raises(ServiceCallError) as ei:
        await client.get("t/b")
    assert ei.value.code == grpc.StatusCode.UNAVAILABLE
    assert ei.value.reason == "BACKEND_THROTTLED" and "after 3 retries" in ei.value.message
    assert proxy.injected["throttle"] == 4
    proxy.clear()
    got = await client.batch_get(["t/b"])
    assert got.results[0].data == b"x"


async def test_mid_transfer_reset_of_streamed_get_resumes_with_a_range(faulty) -> None:
    client, proxy = faulty
    body = os.urandom(600_000)
    await client.put("t/big", body)
    proxy.reset(1, after_bytes=200_000, method="GET")
    data, info, tr = await client.get("t/big")
    assert data == body and info.size_bytes == len(body)
    assert tr.retries == 1 and tr.bytes == len(body) and proxy.injected["reset"] == 1


async def test_mid_transfer_reset_in_batch_get_is_retried(faulty) -> None:
    client, proxy = faulty
    body = os.urandom(100_000)
    await client.put("t/c", body)
    proxy.reset(1, after_bytes=50_000, method="GET")
    got = await client.batch_get(["t/c"])
    r = got.results[0]
    assert r.status.code == 0 and r.data == body and r.transfer.retries == 1


async def test_resets_beyond_retries_are_unavailable(faulty) -> None:
    client, proxy = faulty
    await client.put("t/d", os.urandom(100_000))
    proxy.reset(10, after_bytes=20_000, method="GET")
    got = await client.batch_get(["t/d"])
    assert got.results[0].status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "local" in got.results[0].status.message


async def test_failed_part_upload_aborts_multipart(seaweed, s3_bucket, tmp_path) -> None:
    port = int(seaweed.endpoint.rsplit(":", 1)[1])
    proxy = S3FaultProxy("127.0.0.1", port)
    await proxy.start()
    cfg = cfg_for(
        seaweed,
        s3_bucket,
        proxy.endpoint,
        tmp_path,
        multipart_threshold_bytes=1 << 20,
        multipart_part_bytes=5 << 20,
        max_retries=2,
    )
    app, grpc_port = await create_server(cfg)
    try:
        async with StorageClient(f"127.0.0.1:{grpc_port}", retries=0, timeout_s=60) as client:
            proxy.throttle(100, method="PUT")  # every UploadPart is refused: 503 SlowDown
            with pytest.raises(ServiceCallError) as ei:
                await client.put("mp/big", os.urandom(7 << 20))
            assert ei.value.code == grpc.StatusCode.UNAVAILABLE and ei.value.reason == "BACKEND_THROTTLED"
            assert proxy.injected["throttle"] == 3  # part 1 was tried (and retried twice): an upload was open
            uploads = seaweed.boto3_client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
            assert uploads == []  # the upload was aborted: no partial object can appear
            proxy.clear()
            with pytest.raises(ServiceCallError) as ei:
                await client.head("mp/big")
            assert ei.value.code == grpc.StatusCode.NOT_FOUND
    finally:
        await app.stop(0)
        await proxy.stop()


async def test_retries_stop_within_the_callers_deadline(seaweed, s3_bucket, tmp_path) -> None:
    port = int(seaweed.endpoint.rsplit(":", 1)[1])
    proxy = S3FaultProxy("127.0.0.1", port)
    await proxy.start()
    cfg = cfg_for(seaweed, s3_bucket, proxy.endpoint, tmp_path, max_retries=6, retry_base_ms=400.0)
    app, grpc_port = await create_server(cfg)
    try:
        async with StorageClient(f"127.0.0.1:{grpc_port}", retries=0) as client:
            await client.put("dl/a", b"x")
            proxy.throttle(100, method="GET")
            with pytest.raises(ServiceCallError) as ei:
                await client.get("dl/a", timeout=1.5)
            # The service gave up with the store's own error in time, instead of backing off
            # (0.4 + 0.8 + 1.6 + ... s) past the caller's deadline: had it overrun, the caller
            # would hold DEADLINE_EXCEEDED, not the store's reason. (No wall-clock bound: the
            # reply's arrival a few ms after the deadline on a loaded machine failed one.)
            assert ei.value.code == grpc.StatusCode.UNAVAILABLE and ei.value.reason == "BACKEND_THROTTLED"
    finally:
        await app.stop(0)
        await proxy.stop()
