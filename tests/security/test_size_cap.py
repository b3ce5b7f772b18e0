"""The retriever reads a source object as a stream and stops as soon as its declared size, or the
bytes received so far, pass the limit (finding 5): an oversize object is never held whole. Over
the real storage service on SeaweedFS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clients.storage import StorageClient
from services.retriever.adapters import StorageStore
from services.retriever.ports import ObjectTooLarge
from services.storage.server import create_server
from tests.security.test_ssrf import _cfg

LIMIT = 1024 * 1024


class CountingClient(StorageClient):
    """Counts the data bytes the store pulled from the stream."""

    received = 0

    async def get_stream(self, key: str, **kw: Any) -> AsyncIterator[Any]:
        async for msg in super().get_stream(key, **kw):
            if msg.WhichOneof("part") == "data":
                self.received += len(msg.data)
            yield msg


@pytest.fixture
async def client(seaweed, s3_bucket, tmp_path: Path) -> AsyncIterator[CountingClient]:
    app, port = await create_server(_cfg(seaweed, s3_bucket, tmp_path))
    c = CountingClient(f"127.0.0.1:{port}", timeout_s=60)
    try:
        yield c
    finally:
        await c.close()
        await app.stop(0)


async def test_an_oversize_object_is_not_read_whole(client: CountingClient) -> None:
    await client.put("docs/c/big.md", b"x" * (16 * LIMIT))
    store = StorageStore(client)
    with pytest.raises(ObjectTooLarge, match=f"over the {LIMIT}-byte limit"):
        await store.get("docs/c/big.md", max_bytes=LIMIT)
    assert client.received <= LIMIT  # stopped at the declared size, before the data
    await client.put("docs/c/small.md", b"y" * 1000)
    assert await store.get("docs/c/small.md", max_bytes=LIMIT) == b"y" * 1000
    await client.put("docs/c/edge.md", b"z" * (2 * LIMIT))
    assert len(await store.get("docs/c/edge.md", max_bytes=2 * LIMIT)) == 2 * LIMIT
