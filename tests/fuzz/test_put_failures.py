"""Forced upload failures against the real storage service: no failure may leave an object.

Each case fails a Put a different way: the caller's iterator raises after a random number of
pieces (the client must cancel, never half-close), the stream is half-closed without its `end`
message (what the server saw when the old client's cancel lost the race), the `end` message or
the header announces another size, or the call is cancelled mid-stream. Afterwards the prefix
must be empty. bench/reliability.py runs 1,000 cases (DDNRAG_FUZZ_FULL=1) and reports
`truncated_objects`.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator

import grpc
import pytest

from clients.base import ServiceCallError
from clients.storage import StorageClient
from ddnrag.storage.v1 import storage_service_pb2 as pb
from testkit.faults import harness
from testkit.stack import RunningStack

pytestmark = [pytest.mark.e2e]

CASES = 1000 if os.environ.get("DDNRAG_FUZZ_FULL") == "1" else 60
PREFIX = "fuzz-put/"


async def pieces(n: int, fail: bool, rng: random.Random) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield rng.randbytes(rng.randrange(1, 4096))
    if fail:
        raise OSError("the source failed")


def raw(key: str, n: int, header_size: int, end: int | None, rng: random.Random) -> AsyncIterator[pb.PutRequest]:
    async def gen() -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(header=pb.PutHeader(key=key, size_bytes=header_size))
        for _ in range(n):
            yield pb.PutRequest(data=rng.randbytes(rng.randrange(1, 2048)))
        if end is not None:
            yield pb.PutRequest(end=pb.PutEnd(size_bytes=end))

    return gen()


async def one_failure(client: StorageClient, i: int, rng: random.Random) -> str:
    key, n = f"{PREFIX}{i}", rng.randrange(0, 5)
    kind = ("iterator_raises", "half_closed", "end_mismatch", "header_mismatch", "cancelled")[i % 5]
    try:
        if kind == "iterator_raises":
            await client.put_stream(key, pieces(n, True, rng))
        elif kind == "half_closed":
            await client.stub.Put(raw(key, n, 0, None, rng), timeout=10)
        elif kind == "end_mismatch":
            await client.stub.Put(raw(key, n, 0, 10**6, rng), timeout=10)
        elif kind == "header_mismatch":
            await client.stub.Put(raw(key, n, 10**6, None, rng), timeout=10)
        else:
            task = asyncio.create_task(client.put_stream(key, slow(rng)))
            await asyncio.sleep(rng.random() * 0.02)
            task.cancel()
            await task
    except (OSError, grpc.aio.AioRpcError, ServiceCallError, asyncio.CancelledError):
        return kind
    raise AssertionError(f"case {i} ({kind}) succeeded")


async def slow(rng: random.Random) -> AsyncIterator[bytes]:
    while True:
        yield rng.randbytes(512)
        await asyncio.sleep(0.001)


async def test_forced_put_failures_leave_no_object(stack: RunningStack) -> None:
    rng = random.Random(17)
    client = StorageClient(stack.addr("DDNRAG_STORAGE_PORT"), timeout_s=30)
    try:
        for start in range(0, CASES, 20):
            await asyncio.gather(*(one_failure(client, i, rng) for i in range(start, min(CASES, start + 20))))
        await asyncio.sleep(0.5)  # any commit the server had in flight lands by now
        left = [o.key async for o in client.list_all(PREFIX)]
        # and a good upload still works beside them
        ok = await client.put_stream(f"{PREFIX}good", pieces(3, False, rng))
        assert ok.size_bytes > 0
        await client.delete(prefix=PREFIX)
    finally:
        await client.close()
    harness.record("put_forced_failures", {"forced_put_failures": CASES, "truncated_objects": len(left)})
    assert left == [], f"{len(left)} truncated objects: {left[:5]}"
