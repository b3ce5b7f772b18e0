"""Conditional Put (If-None-Match / If-Match) through the storage service on the real SeaweedFS:
the compare-and-swap the retriever's lease and job records are built on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from clients.base import ServiceCallError
from clients.storage import StorageClient
from kernel.config import load_env
from services.storage.config import StorageConfig
from services.storage.server import create_server


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
        multipart_threshold_bytes=64 * 1024,
    )
    app, port = await create_server(cfg)
    client = StorageClient(f"127.0.0.1:{port}", timeout_s=30)
    try:
        yield client
    finally:
        await client.close()
        await app.stop(0)


async def test_create_once_then_compare_and_swap(storage: StorageClient) -> None:
    first = await storage.put_if("lease.json", b'{"holder": "a"}', if_none_match=True)
    with pytest.raises(ServiceCallError) as err:
        await storage.put_if("lease.json", b'{"holder": "b"}', if_none_match=True)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and err.value.reason == "CONDITION_NOT_MET"
    assert "did not exist" in err.value.message

    second = await storage.put_if("lease.json", b'{"holder": "a", "n": 2}', if_match=first.etag)
    assert second.etag != first.etag
    with pytest.raises(ServiceCallError) as err:
        await storage.put_if("lease.json", b'{"holder": "b", "n": 2}', if_match=first.etag)  # stale
    assert err.value.reason == "CONDITION_NOT_MET" and first.etag in err.value.message
    data, info, _ = await storage.get("lease.json")
    assert data == b'{"holder": "a", "n": 2}' and info.etag.strip('"') == second.etag.strip('"')

    with pytest.raises(ServiceCallError) as err:
        await storage.put_if("missing.json", b"{}", if_match=first.etag)  # nothing to match
    assert err.value.reason == "CONDITION_NOT_MET"
    with pytest.raises(ServiceCallError) as err:
        await storage.put_if("big.json", b"x" * (64 * 1024 + 1), if_none_match=True)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.reason == "CONDITIONAL_TOO_LARGE"


async def test_concurrent_writers_exactly_one_wins(storage: StorageClient) -> None:
    import asyncio

    async def attempt(coro) -> bool:
        try:
            await coro
            return True
        except ServiceCallError as err:
            assert err.reason == "CONDITION_NOT_MET", err
            return False

    for trial in range(5):
        key = f"race-{trial}.json"
        wins = await asyncio.gather(*(attempt(storage.put_if(key, b"c%d" % i, if_none_match=True)) for i in range(8)))
        assert sum(wins) == 1
        _, info, _ = await storage.get(key)
        swaps = await asyncio.gather(*(attempt(storage.put_if(key, b"s%d" % i, if_match=info.etag)) for i in range(8)))
        assert sum(swaps) == 1
