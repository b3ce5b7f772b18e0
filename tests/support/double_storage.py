"""The storage service's test double for the gateway's tests: a REAL gRPC servicer (grpc.aio on
127.0.0.1:0, started by tests/integration/test_gateway_doubles.py) speaking the storage protocol
with scripted answers, and recording what it saw (objects put, cancellations)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from ddnrag.common.v1 import common_pb2
from ddnrag.storage.v1 import storage_service_pb2 as spb
from ddnrag.storage.v1 import storage_service_pb2_grpc as spb_grpc
from kernel.errors import invalid, not_found


def timings(*stages: tuple[str, int, str, int]) -> common_pb2.Timings:
    st = [common_pb2.StageTiming(name=n, duration_ns=d, backend=b, ttfb_ns=t) for n, d, b, t in stages]
    total = sum(s.duration_ns for s in st)
    return common_pb2.Timings(total_ns=total + 1000, stages=st, stages_sum_ns=total)


class DoubleStorage(spb_grpc.StorageServiceServicer):
    """Keeps objects in a dict; a Put that the client cancels or that fails leaves nothing."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts_cancelled = 0
        self.backends: dict[str, spb.Backend] = {
            "default": spb.Backend(
                name="default",
                kind=spb.BACKEND_KIND_S3_COMPATIBLE,
                bucket="ddnrag",
                has_credentials=True,
                is_default=True,
            )
        }
        self.secrets_seen: list[str] = []
        self.runs: dict[str, spb.BenchmarkRun] = {}
        self.bench_cancelled = asyncio.Event()

    async def Put(self, request_iterator: AsyncIterator[spb.PutRequest], context: grpc.aio.ServicerContext) -> Any:
        header: spb.PutHeader | None = None
        parts: list[bytes] = []
        try:
            async for req in request_iterator:
                if req.WhichOneof("part") == "header":
                    header = req.header
                else:
                    parts.append(req.data)
        except asyncio.CancelledError:
            self.puts_cancelled += 1
            raise
        if header is None or not header.key:
            raise invalid("the first Put message must be a header with a key")
        data = b"".join(parts)
        self.objects[header.key] = data
        return spb.PutResponse(key=header.key, size_bytes=len(data), etag=f"etag-{len(data)}")

    async def Copy(self, request: spb.CopyRequest, context: grpc.aio.ServicerContext) -> spb.CopyResponse:
        if request.source_key not in self.objects:
            raise not_found(f"no object {request.source_key!r}")
        self.objects[request.destination_key] = self.objects[request.source_key]
        return spb.CopyResponse(info=spb.ObjectInfo(key=request.destination_key))

    async def Delete(self, request: spb.DeleteRequest, context: grpc.aio.ServicerContext) -> spb.DeleteResponse:
        gone = [k for k in list(self.objects) if k in request.keys or (request.prefix and k.startswith(request.prefix))]
        for k in gone:
            del self.objects[k]
        return spb.DeleteResponse(deleted=len(gone))

    async def List(self, request: spb.ListRequest, context: grpc.aio.ServicerContext) -> spb.ListResponse:
        keys = sorted(k for k in self.objects if k.startswith(request.prefix))
        start = int(request.page.page_token or 0)
        n = request.page.page_size or 1000
        page = keys[start : start + n]
        nxt = str(start + n) if start + n < len(keys) else ""
        objs = [spb.ObjectInfo(key=k, size_bytes=len(self.objects[k]), last_modified_unix_ns=1) for k in page]
        return spb.ListResponse(objects=objs, next_page_token=nxt)

    async def Get(self, request: spb.GetRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.key not in self.objects:
            raise not_found(f"no object {request.key!r}")
        data = self.objects[request.key]
        yield spb.GetResponse(info=spb.ObjectInfo(key=request.key, size_bytes=len(data)))
        for i in range(0, len(data), 4):  # several data messages, as a large object arrives
            yield spb.GetResponse(data=data[i : i + 4])

    async def ListBackends(self, request: Any, context: grpc.aio.ServicerContext) -> spb.ListBackendsResponse:
        out = []
        for b in self.backends.values():
            c = spb.Backend()
            c.CopyFrom(b)
            c.access_key_id = ""
            c.secret_access_key = ""
            out.append(c)
        return spb.ListBackendsResponse(backends=out, default_backend="default")

    async def PutBackend(self, request: spb.PutBackendRequest, context: grpc.aio.ServicerContext) -> Any:
        b = spb.Backend()
        b.CopyFrom(request.backend)
        if not b.name:
            raise invalid("a backend needs a name")
        if b.secret_access_key:
            self.secrets_seen.append(b.secret_access_key)
        b.has_credentials = bool(b.access_key_id and b.secret_access_key)
        b.emulated = b.HasField("shaping") and b.shaping.rtt_ms > 0
        if b.emulated and "emulated" not in b.name:
            raise invalid(f"backend {b.name!r} has network shaping, so its name must say so: include 'emulated'")
        self.backends[b.name] = b
        shown = spb.Backend()
        shown.CopyFrom(b)
        shown.access_key_id = ""
        shown.secret_access_key = ""
        return spb.PutBackendResponse(backend=shown)

    async def RemoveBackend(self, request: spb.RemoveBackendRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.name not in self.backends:
            raise not_found(f"no backend named {request.name!r}")
        del self.backends[request.name]
        return spb.RemoveBackendResponse()

    async def TestConnection(self, request: spb.TestConnectionRequest, context: grpc.aio.ServicerContext) -> Any:
        name = request.backend or "default"
        if name not in self.backends:
            raise not_found(f"no backend named {name!r}")
        return spb.TestConnectionResponse(ok=True, head_bucket_ns=1_500_000, can_read=True, can_write=True)

    async def RunBenchmark(self, request: spb.RunBenchmarkRequest, context: grpc.aio.ServicerContext) -> Any:
        if not request.backends:
            raise invalid("name at least one backend to benchmark")
        levels = list(request.concurrency_levels) or [1, 5]
        results = []
        try:
            for i, c in enumerate(levels):
                for b in request.backends:
                    yield spb.RunBenchmarkResponse(
                        progress=spb.BenchmarkProgress(
                            backend=b,
                            concurrency=c,
                            ops_done=5,
                            levels_done=i,
                            levels_total=len(levels) * len(request.backends),
                        )
                    )
                    if request.label == "slow":
                        await asyncio.sleep(30)
                    lvl = spb.LevelResult(
                        backend=b,
                        concurrency=c,
                        ops=10,
                        object_size_bytes=4096,
                        ops_per_s=100.0 * c,
                        mib_per_s=0.4 * c,
                        latency=spb.Percentiles(p50_ns=1_000_000 * c, p90_ns=2_000_000 * c, p99_ns=3_000_000 * c),
                        ttfb=spb.Percentiles(p50_ns=500_000 * c, p90_ns=900_000 * c, p99_ns=1_200_000 * c),
                        operation=spb.BENCHMARK_OPERATION_GET,
                    )
                    results.append(lvl)
                    yield spb.RunBenchmarkResponse(level=lvl)
        except asyncio.CancelledError:
            self.bench_cancelled.set()
            raise
        run_id = f"run-{len(self.runs) + 1}"
        run = spb.BenchmarkRun(
            run_id=run_id,
            started_unix_ns=1_700_000_000_000_000_000,
            finished_unix_ns=1_700_000_001_000_000_000,
            request=request,
            results=results,
            json_key=f"bench/{run_id}.json",
            csv_key=f"bench/{run_id}.csv",
        )
        # The run's one CSV, stored beside it as the real service does (its columns abridged).
        rows = [f"{run_id},{r.backend},get,{r.object_size_bytes},{r.concurrency},{r.ops_per_s}" for r in results]
        self.objects[run.csv_key] = "\n".join(
            ["run_id,backend,operation,object_size_bytes,concurrency,ops_per_s", *rows, ""]
        ).encode()
        self.runs[run.run_id] = run
        yield spb.RunBenchmarkResponse(run=run)

    async def ListBenchmarkRuns(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return spb.ListBenchmarkRunsResponse(runs=list(reversed(self.runs.values())))

    async def CompareBenchmarkRuns(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        for rid in (request.run_id_a, request.run_id_b):
            if rid not in self.runs:
                raise not_found(f"no benchmark run {rid!r}")
        a, b = self.runs[request.run_id_a], self.runs[request.run_id_b]
        bmap = {(x.backend, x.operation, x.object_size_bytes, x.concurrency): x for x in b.results}
        rows = []
        for x in a.results:
            y = bmap.get((x.backend, x.operation, x.object_size_bytes, x.concurrency))
            row = spb.BenchmarkComparison(
                backend=x.backend,
                operation=x.operation,
                object_size_bytes=x.object_size_bytes,
                concurrency=x.concurrency,
                a=x,
            )
            if y is not None:
                row.b.CopyFrom(y)
                # The real service's ratios (services/storage/bench_model.py compare_runs).
                row.ops_per_s_ratio = y.ops_per_s / x.ops_per_s if x.ops_per_s else 0.0
                row.latency_p50_ratio = y.latency.p50_ns / x.latency.p50_ns
                row.latency_p99_ratio = y.latency.p99_ns / x.latency.p99_ns if x.latency.p99_ns else 0.0
                row.ttfb_p50_ratio = y.ttfb.p50_ns / x.ttfb.p50_ns if x.ttfb.p50_ns else 0.0
            rows.append(row)
        return spb.CompareBenchmarkRunsResponse(a=a, b=b, rows=rows)

    async def GetBenchmarkRun(self, request: spb.GetBenchmarkRunRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.run_id not in self.runs:
            raise not_found(f"no benchmark run {request.run_id!r}")
        return spb.GetBenchmarkRunResponse(run=self.runs[request.run_id])
