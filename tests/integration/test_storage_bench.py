"""The benchmark engine over gRPC against the real SeaweedFS: live progress, interleaved
backends, the emulated label, errors by kind never counted as success, runs saved as JSON and
CSV in the store, listed, fetched and compared."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator

import grpc
import pytest

from clients.base import ServiceCallError
from clients.storage import StorageClient
from ddnrag.storage.v1 import storage_service_pb2 as pb
from kernel.config import load_env
from services.storage.config import StorageConfig
from services.storage.server import create_server
from testkit.faultproxy import S3FaultProxy


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
        endpoint_allowlist=("127.0.0.1/32",),  # moto, TLS and fault proxies on loopback
    )
    app, port = await create_server(cfg)
    client = StorageClient(f"127.0.0.1:{port}", timeout_s=60)
    try:
        yield client
    finally:
        await client.close()
        await app.stop(0)


async def add_backend(storage: StorageClient, seaweed, bucket: str, name: str, **kw: object) -> None:
    await storage.put_backend(
        pb.Backend(
            name=name,
            kind=pb.BACKEND_KIND_S3_COMPATIBLE,
            endpoint=kw.pop("endpoint", seaweed.endpoint),  # type: ignore[arg-type]
            bucket=bucket,
            access_key_id=seaweed.access_key_id,
            secret_access_key=seaweed.secret_access_key,
            **kw,  # type: ignore[arg-type]
        )
    )


async def collect(storage: StorageClient, req: pb.RunBenchmarkRequest) -> list[pb.RunBenchmarkResponse]:
    return [m async for m in storage.run_benchmark(req, timeout=120)]


async def test_two_backends_interleaved_saved_listed_compared(storage, seaweed, s3_bucket) -> None:
    await add_backend(storage, seaweed, s3_bucket, "far-emulated", shaping=pb.Shaping(rtt_ms=15))
    req = pb.RunBenchmarkRequest(
        backends=["local", "far-emulated", "infinia-not-here"],
        operation=pb.BENCHMARK_OPERATION_GET,
        concurrency_levels=[1, 4],
        object_sizes_bytes=[4096],
        ops_per_level=40,
        warmup_s=0.2,
        label="test",
    )
    msgs = await collect(storage, req)
    kinds = [m.WhichOneof("event") for m in msgs]
    assert kinds[-1] == "run" and kinds.count("level") == 4 and "progress" in kinds
    levels = [m.level for m in msgs if m.WhichOneof("event") == "level"]
    # Interleaved level by level, the order rotating so neither backend always goes first.
    assert [(x.concurrency, x.backend) for x in levels] == [
        (1, "local"),
        (1, "far-emulated"),
        (4, "far-emulated"),
        (4, "local"),
    ]
    for x in levels:
        assert (
            x.ops == 40 and x.errors == 0 and x.operation == pb.BENCHMARK_OPERATION_GET and x.object_size_bytes == 4096
        )
        assert x.bytes == 40 * 4096 and x.ops_per_s > 0 and x.mib_per_s > 0
        assert 0 < x.ttfb.p50_ns <= x.latency.p50_ns <= x.latency.p99_ns <= x.latency.max_ns
        assert x.cold_samples > 0 and x.cold_ttfb_p50_ns > 0
    far = [x for x in levels if x.backend == "far-emulated"]
    near = [x for x in levels if x.backend == "local"]
    assert all(x.emulated and x.label.startswith("emulated: RTT 15 ms") for x in far)
    assert all(not x.emulated and x.label == "s3_compatible" for x in near)
    assert all(x.ttfb.p50_ns >= 15_000_000 for x in far)
    assert near[0].ttfb.p50_ns < far[0].ttfb.p50_ns

    run = msgs[-1].run
    assert list(run.not_configured) == ["infinia-not-here"]
    assert all(x.backend != "infinia-not-here" for x in run.results)
    assert run.json_key == f"bench/{run.run_id}.json" and run.csv_key == f"bench/{run.run_id}.csv"
    raw, _, _ = await storage.get(run.json_key)
    assert json.loads(raw)["run_id"] == run.run_id
    rows = list(csv.DictReader(io.StringIO((await storage.get(run.csv_key))[0].decode())))
    assert len(rows) == 4 and {r["backend"] for r in rows} == {"local", "far-emulated"}
    assert [o async for o in storage.list_all("bench/tmp/")] == []  # the object pools are gone

    got = (await storage.get_benchmark_run(run.run_id)).run
    assert got.run_id == run.run_id and len(got.results) == 4 and got.request.label == "test"

    req2 = pb.RunBenchmarkRequest(
        backends=["local"], operation=pb.BENCHMARK_OPERATION_STAT, concurrency_levels=[1], ops_per_level=20
    )
    run2 = (await collect(storage, req2))[-1].run
    listed = await storage.list_benchmark_runs(page_size=1)
    assert [r.run_id for r in listed.runs] == [run2.run_id] and listed.next_page_token
    page2 = await storage.list_benchmark_runs(page_size=1, page_token=listed.next_page_token)
    assert [r.run_id for r in page2.runs] == [run.run_id] and not page2.next_page_token

    cmp = await storage.compare_benchmark_runs(run.run_id, run2.run_id)
    assert len(cmp.rows) == 5  # 4 get cells in a, 1 stat cell in b
    assert all(r.ops_per_s_ratio == 0 for r in cmp.rows)  # no cell is in both
    same = await storage.compare_benchmark_runs(run.run_id, run.run_id)
    assert all(r.ops_per_s_ratio == pytest.approx(1.0) for r in same.rows)


@pytest.mark.parametrize(
    "op",
    [
        pb.BENCHMARK_OPERATION_PUT,
        pb.BENCHMARK_OPERATION_MIXED,
        pb.BENCHMARK_OPERATION_LIST,
        pb.BENCHMARK_OPERATION_DELETE,
    ],
)
async def test_every_operation_runs(storage, op) -> None:
    req = pb.RunBenchmarkRequest(
        backends=["local"],
        operation=op,
        concurrency_levels=[2],
        ops_per_level=12,
        read_ratio=0.5,
        object_sizes_bytes=[1024],
    )
    run = (await collect(storage, req))[-1].run
    (x,) = run.results
    assert x.ops == 12 and x.errors == 0 and x.latency.p50_ns > 0
    assert [o async for o in storage.list_all("bench/tmp/")] == []


async def test_throttling_is_counted_as_errors_by_kind(storage, seaweed, s3_bucket) -> None:
    port = int(seaweed.endpoint.rsplit(":", 1)[1])
    proxy = S3FaultProxy("127.0.0.1", port)
    await proxy.start()
    try:
        await add_backend(storage, seaweed, s3_bucket, "flaky", endpoint=proxy.endpoint)
        proxy.throttle(7, method="GET")
        req = pb.RunBenchmarkRequest(
            backends=["flaky"], operation=pb.BENCHMARK_OPERATION_GET, concurrency_levels=[1], ops_per_level=30
        )
        run = (await collect(storage, req))[-1].run
        (x,) = run.results
        assert x.errors == 7 and dict(x.errors_by_kind) == {"SlowDown": 7}
        assert x.ops == 23  # the 30 operations minus the 7 failures: an error is never a success
    finally:
        await proxy.stop()


async def test_duration_mode_and_progress(storage) -> None:
    req = pb.RunBenchmarkRequest(
        backends=["local"], operation=pb.BENCHMARK_OPERATION_GET, concurrency_levels=[3], duration_s=1.2
    )
    msgs = await collect(storage, req)
    progress = [m.progress for m in msgs if m.WhichOneof("event") == "progress"]
    assert len(progress) >= 2 and progress[-1].ops_done >= progress[0].ops_done and progress[-1].p50_ns > 0
    assert progress[0].levels_total == 1
    (x,) = msgs[-1].run.results
    assert 1.2 <= x.duration_s < 3 and x.ops > 0


async def test_cancelled_run_cleans_up(storage) -> None:
    req = pb.RunBenchmarkRequest(
        backends=["local"], operation=pb.BENCHMARK_OPERATION_GET, concurrency_levels=[4], duration_s=30
    )
    call = storage.stub.RunBenchmark(req)
    async for msg in call:
        if msg.WhichOneof("event") == "progress" and msg.progress.ops_done > 0:
            break
    call.cancel()
    for _ in range(50):
        if not [o async for o in storage.list_all("bench/")]:
            break
        await asyncio.sleep(0.1)
    assert [o.key async for o in storage.list_all("bench/")] == []


@pytest.mark.parametrize(
    "req",
    [
        pb.RunBenchmarkRequest(operation=pb.BENCHMARK_OPERATION_GET, concurrency_levels=[1], ops_per_level=1),
        pb.RunBenchmarkRequest(backends=["local"], concurrency_levels=[1], ops_per_level=1),
        pb.RunBenchmarkRequest(backends=["local"], operation=pb.BENCHMARK_OPERATION_GET, ops_per_level=1),
        pb.RunBenchmarkRequest(
            backends=["local"],
            operation=pb.BENCHMARK_OPERATION_GET,
            concurrency_levels=[1],
            object_sizes_bytes=[100],
            ops_per_level=1,
        ),
        pb.RunBenchmarkRequest(
            backends=["local"],
            operation=pb.BENCHMARK_OPERATION_GET,
            concurrency_levels=[1],
            object_sizes_bytes=[65 << 20],
            ops_per_level=1,
        ),
        pb.RunBenchmarkRequest(backends=["local"], operation=pb.BENCHMARK_OPERATION_GET, concurrency_levels=[1]),
        pb.RunBenchmarkRequest(
            backends=["local"], operation=pb.BENCHMARK_OPERATION_GET, concurrency_levels=[501], ops_per_level=1
        ),
        pb.RunBenchmarkRequest(
            backends=["local"],
            operation=pb.BENCHMARK_OPERATION_MIXED,
            concurrency_levels=[1],
            ops_per_level=1,
            read_ratio=1.5,
        ),
    ],
)
async def test_bad_benchmark_requests_are_invalid(storage, req) -> None:
    with pytest.raises(ServiceCallError) as ei:
        await collect(storage, req)
    assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_only_unconfigured_backends_is_not_found_and_runs_unknown(storage) -> None:
    with pytest.raises(ServiceCallError) as ei:
        await collect(
            storage,
            pb.RunBenchmarkRequest(
                backends=["aws"], operation=pb.BENCHMARK_OPERATION_GET, concurrency_levels=[1], ops_per_level=1
            ),
        )
    assert ei.value.code == grpc.StatusCode.NOT_FOUND and "aws" in ei.value.message
    with pytest.raises(ServiceCallError) as ei:
        await storage.get_benchmark_run("20260101T000000Z-deadbeef")
    assert ei.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ServiceCallError) as ei:
        await storage.get_benchmark_run("../etc")
    assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.slow
async def test_stress_preset_across_two_backends(storage, seaweed, s3_bucket) -> None:
    """The issue's "done when": the Stress preset (up to 500 in flight) across two backends,
    with live progress, saved and comparable."""
    await add_backend(storage, seaweed, s3_bucket, "wan-emulated", shaping=pb.Shaping(rtt_ms=5))
    req = pb.RunBenchmarkRequest(
        backends=["local", "wan-emulated"],
        operation=pb.BENCHMARK_OPERATION_GET,
        preset=pb.BENCHMARK_PRESET_STRESS,
        object_sizes_bytes=[4096],
        duration_s=0.5,
    )
    msgs = [m async for m in storage.run_benchmark(req, timeout=600)]
    levels = [m.level for m in msgs if m.WhichOneof("event") == "level"]
    assert [x.concurrency for x in levels] == [c for c in (1, 10, 50, 100, 250, 500) for _ in range(2)]
    assert any(m.WhichOneof("event") == "progress" for m in msgs)
    for x in levels:
        assert x.ops > 0 and x.ops + x.errors > 0 and x.latency.p50_ns > 0
    run = msgs[-1].run
    assert len(run.results) == 12
    got = await storage.get_benchmark_run(run.run_id)
    assert len(got.run.results) == 12
    assert [o async for o in storage.list_all("bench/tmp/")] == []
