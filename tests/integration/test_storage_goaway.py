"""Uploads racing a connection's recycling (the one 5xx on an upload seen in 1,000+ runs).

Servers recycle connections (max_connection_age, kernel/server.py): the server sends
GOAWAY and the client opens a new connection. A call the client sent just before the GOAWAY
reached it is refused by the server unseen (REFUSED_STREAM); with gRPC's retries off the client
got UNAVAILABLE for it -- a Put is client-streaming, so nobody retried it and the gateway answered
503. With transparent retries on, gRPC resends such a call on the new connection. Here the age
is 20 ms, so nearly every upload races a GOAWAY.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

import kernel.server as common_server
from clients.base import ServiceCallError
from clients.storage import StorageClient
from kernel.config import load_env
from services.storage.config import StorageConfig
from services.storage.server import create_server

UPLOADS = 200


@pytest.fixture
async def recycling_storage(seaweed, s3_bucket, tmp_path, monkeypatch) -> AsyncIterator[StorageClient]:
    opts = [o for o in common_server.SERVER_OPTIONS if not o[0].startswith("grpc.max_connection_age")]
    monkeypatch.setattr(common_server, "SERVER_OPTIONS", [*opts, ("grpc.max_connection_age_ms", 20)])
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
    )
    app, port = await create_server(cfg)
    client = StorageClient(f"127.0.0.1:{port}", timeout_s=30)
    try:
        yield client
    finally:
        await client.close()
        await app.stop(0)


async def test_uploads_across_connection_recycling_never_fail(recycling_storage: StorageClient) -> None:
    async def pieces(i: int) -> AsyncIterator[bytes]:
        yield os.urandom(1000 + i)
        await asyncio.sleep(0.001)
        yield os.urandom(1000)

    failures: list[str] = []

    async def one(i: int) -> None:
        try:
            await recycling_storage.put_stream(f"goaway/{i}", pieces(i))
        except ServiceCallError as err:
            failures.append(f"{err.code.name}: {err.message}")

    for start in range(0, UPLOADS, 10):
        await asyncio.gather(*(one(i) for i in range(start, start + 10)))
        await asyncio.sleep(0.02)
    assert failures == [], f"{len(failures)}/{UPLOADS} uploads failed: {failures[:3]}"
    listing = await recycling_storage.list("goaway/")
    assert len(listing.objects) == UPLOADS
