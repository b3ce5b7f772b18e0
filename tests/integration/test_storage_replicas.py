"""Two storage processes against one SeaweedFS, as two pods of the storage Deployment: a backend
added through one replica works through the other (its sealed secret included), and every change
(add, replace credentials, remove) is seen by the other replica within 2 s, and changes made on
both at once all land."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.base import ServiceCallError
from clients.storage import StorageClient
from ddnrag.storage.v1 import storage_service_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
VISIBLE_WITHIN_S = 2.0


def start_replica(seaweed, bucket: str, state: Path, key_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DDNRAG_")}
    env.update(
        PYTHONPATH=str(ROOT),
        DDNRAG_STORAGE_HOST="127.0.0.1",
        DDNRAG_STORAGE_PORT="0",
        DDNRAG_STORAGE_METRICS_PORT="0",
        DDNRAG_STORAGE_SHUTDOWN_GRACE_S="1",
        DDNRAG_STORAGE_STATE_DIR=str(state),
        DDNRAG_STORAGE_REGISTRY_KEY_FILE=str(key_file),
        DDNRAG_STORAGE_DEFAULT_ENDPOINT=seaweed.endpoint,
        DDNRAG_STORAGE_DEFAULT_BUCKET=bucket,
        DDNRAG_STORAGE_DEFAULT_ACCESS_KEY_ID=seaweed.access_key_id,
        DDNRAG_STORAGE_DEFAULT_SECRET_ACCESS_KEY=seaweed.secret_access_key,
    )
    log = state.parent / f"{state.name}.log"  # a file, not a pipe: the replica never blocks on it
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.storage.server"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text().splitlines():
            if '"storage service ready"' in line:
                return proc, int(json.loads(line)["fields"]["port"])
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the storage replica did not start: {log.read_text()[-2000:]}")


@pytest.fixture
async def replicas(seaweed, s3_bucket, tmp_path) -> AsyncIterator[tuple[StorageClient, StorageClient]]:
    key_file = tmp_path / "registry-key"  # as the mounted Secret storage-registry-key
    key_file.write_text("q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8w=\n")
    started = await asyncio.gather(
        *(asyncio.to_thread(start_replica, seaweed, s3_bucket, tmp_path / f"state{i}", key_file) for i in (0, 1))
    )
    clients = [StorageClient(f"127.0.0.1:{port}", timeout_s=30, retries=0) for _, port in started]
    try:
        yield clients[0], clients[1]
    finally:
        for c in clients:
            await c.close()
        for proc, _ in started:
            proc.terminate()
        for proc, _ in started:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def s3_backend(seaweed, bucket: str, name: str, secret: str) -> pb.Backend:
    return pb.Backend(
        name=name,
        kind=pb.BACKEND_KIND_S3_COMPATIBLE,
        endpoint=seaweed.endpoint,
        bucket=bucket,
        access_key_id=seaweed.access_key_id,
        secret_access_key=secret,
    )


async def within(seconds: float, check: Callable[[], Awaitable[bool]]) -> float:
    """How long until `check()` holds; fails after `seconds`."""
    t0 = time.monotonic()
    while not await check():
        assert time.monotonic() - t0 < seconds, f"not visible within {seconds} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def names(c: StorageClient) -> list[str]:
    return [b.name for b in (await c.list_backends()).backends]


async def test_backend_added_through_one_replica_works_through_the_other(replicas, seaweed, s3_bucket) -> None:
    a, b = replicas
    for c in (a, b):
        health = await health_pb2_grpc.HealthStub(c.channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    await a.put("shared/1", b"one object store")

    # Added through A, used through B at once: its sealed secret opens with the shared data key.
    await a.put_backend(s3_backend(seaweed, s3_bucket, "second", seaweed.secret_access_key))
    data, _, _ = await b.get("shared/1", backend="second")
    assert data == b"one object store"
    assert (await b.test_connection("second")).ok

    # Every change is followed by polling: a new backend shows in B's list within 2 s.
    await a.put_backend(s3_backend(seaweed, s3_bucket, "third", seaweed.secret_access_key))
    took = await within(VISIBLE_WITHIN_S, lambda: _has(b, "third"))
    print(f"registry change visible on the other replica after {took * 1000:.0f} ms")

    # New credentials replace the client B had built for "second".
    await a.put_backend(s3_backend(seaweed, s3_bucket, "second", "not-the-secret-0123456789"))
    await within(VISIBLE_WITHIN_S, lambda: _fails(b, "second", grpc.StatusCode.UNAUTHENTICATED))

    # Removed through B: gone on A within 2 s.
    await b.remove_backend("third")
    await within(VISIBLE_WITHIN_S, lambda: _fails(a, "third", grpc.StatusCode.NOT_FOUND))
    assert await names(a) == await names(b) == ["local", "second"]

    # The shared registry holds the secret sealed only.
    body = seaweed.boto3_client().get_object(Bucket=s3_bucket, Key="_ddnrag/storage/backends.json")["Body"].read()
    assert seaweed.secret_access_key.encode() not in body and seaweed.access_key_id.encode() not in body

    # Changes made on both replicas at once all land (conditional writes, redone on a conflict).
    await asyncio.gather(
        *(
            c.put_backend(s3_backend(seaweed, s3_bucket, f"{tag}{i}", seaweed.secret_access_key))
            for i in range(6)
            for tag, c in (("a", a), ("b", b))
        )
    )
    want = ["local", *sorted([*(f"{t}{i}" for t in "ab" for i in range(6)), "second"])]
    await within(VISIBLE_WITHIN_S, lambda: _names_are(a, want))
    await within(VISIBLE_WITHIN_S, lambda: _names_are(b, want))


async def _has(c: StorageClient, name: str) -> bool:
    return name in await names(c)


async def _names_are(c: StorageClient, want: list[str]) -> bool:
    return await names(c) == want


async def _fails(c: StorageClient, backend: str, code: grpc.StatusCode) -> bool:
    try:
        await c.get("shared/1", backend=backend)
    except ServiceCallError as err:
        return err.code == code
    return False


async def test_one_benchmark_per_backend_across_replicas(replicas, seaweed, s3_bucket) -> None:
    """A run on one replica holds the backend for the other replica too (a lock object in the
    store); once it ends the other may run, and a lock left by a holder that died expires."""
    a, b = replicas
    backend = (await a.list_backends()).backends[0].name
    run = pb.RunBenchmarkRequest(
        backends=[backend],
        operation=pb.BENCHMARK_OPERATION_PUT,
        concurrency_levels=[1],
        object_sizes_bytes=[1024],
        ops_per_level=2_000,  # long enough to be running while the other replica is asked
    )
    first = a.run_benchmark(run)
    await anext(first)  # the run holds the backend now
    short = pb.RunBenchmarkRequest(
        backends=[backend],
        operation=pb.BENCHMARK_OPERATION_GET,
        concurrency_levels=[1],
        object_sizes_bytes=[1024],
        ops_per_level=5,
    )
    with pytest.raises(ServiceCallError) as err:
        async for _ in b.run_benchmark(short):
            pass
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.value.reason == "BENCHMARK_BUSY", err.value
    async for _ in first:
        pass
    last = [m async for m in b.run_benchmark(short)][-1]  # free again once the first run ended
    assert last.WhichOneof("event") == "run"

    # A holder that died mid-run left its lock behind; past its expiry it no longer blocks.
    key = f"_ddnrag/storage/bench-locks/{backend}.json"
    stale = {"holder": "gone:1", "run_id": "x", "expires_unix": time.time() - 1}
    await a.put(key, json.dumps(stale).encode())
    last = [m async for m in b.run_benchmark(short)][-1]
    assert last.WhichOneof("event") == "run"
    live = {"holder": "alive:2", "run_id": "y", "expires_unix": time.time() + 600}
    await a.put(key, json.dumps(live).encode())
    with pytest.raises(ServiceCallError) as err:
        async for _ in b.run_benchmark(short):
            pass
    assert err.value.reason == "BENCHMARK_BUSY" and "alive:2" in err.value.message, err.value
    await a.delete([key])
