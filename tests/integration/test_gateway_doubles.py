"""Test doubles for the gateway's tests: small REAL gRPC servers (grpc.aio on 127.0.0.1:0) that
speak the four services' protocols with scripted answers, so the gateway's tests can assert exact
SSE bytes without the whole stack. These are test doubles, used only by tests; the lead's e2e test
drives the real services. Each double records what it saw (objects put, cancellations).

This module holds fixtures and doubles only; it is imported by the gateway's test modules.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aiohttp import web

from ddnrag.common.v1 import common_pb2
from ddnrag.embedder.v1 import embedder_service_pb2 as epb
from ddnrag.embedder.v1 import embedder_service_pb2_grpc as epb_grpc
from ddnrag.llm.v1 import llm_service_pb2 as lpb
from ddnrag.llm.v1 import llm_service_pb2_grpc as lpb_grpc
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
from ddnrag.retriever.v1 import retriever_service_pb2_grpc as rpb_grpc
from ddnrag.storage.v1 import storage_service_pb2 as spb
from ddnrag.storage.v1 import storage_service_pb2_grpc as spb_grpc
from gateway.app import create_app
from gateway.config import GatewayConfig
from kernel.config import load_env
from kernel.errors import ErrorKind, ServiceError, invalid, not_found
from kernel.server import GrpcApp, build_server

TOKENS = ["Object ", "storage ", "keeps ", "chunks ", "[1]."]


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


class DoubleRetriever(rpb_grpc.RetrieverServiceServicer):
    """Jobs that go through scripted progress events; WatchJob honours `after_sequence`."""

    def __init__(self) -> None:
        self.started: list[rpb.StartIngestRequest] = []
        self.jobs: dict[str, rpb.Job] = {}
        self.watch_cancelled = asyncio.Event()
        self.fail_start = False
        self.documents: dict[str, rpb.Document] = {}
        self.watches: dict[str, rpb.Watch] = {}
        self.deleted_collections: list[str] = []

    def _events(self, job_id: str) -> list[rpb.IngestProgress]:
        base = self.jobs[job_id]
        out = []
        for seq, (state, stage, done) in enumerate(
            [
                (rpb.JOB_STATE_QUEUED, "queued", 0),
                (rpb.JOB_STATE_RUNNING, "embed", 2),
                (rpb.JOB_STATE_RUNNING, "write", 4),
                (rpb.JOB_STATE_SUCCEEDED if "bad" not in job_id else rpb.JOB_STATE_FAILED, "done", 4),
            ],
            start=1,
        ):
            job = rpb.Job()
            job.CopyFrom(base)
            job.state, job.stage, job.chunks_done, job.chunks_total = state, stage, done, 4
            if state == rpb.JOB_STATE_FAILED:
                job.error = "not a valid PDF: EOF marker not found"
            out.append(rpb.IngestProgress(sequence=seq, job=job, terminal=seq == 4))
        return out

    async def StartIngest(self, request: rpb.StartIngestRequest, context: grpc.aio.ServicerContext) -> Any:
        if self.fail_start:
            raise ServiceError(ErrorKind.UNAVAILABLE, "the embedder is not ready", reason="EMBEDDER_UNAVAILABLE")
        self.started.append(request)
        job_id = f"job-{len(self.started)}"
        job = rpb.Job(
            job_id=job_id,
            collection=request.collection,
            state=rpb.JOB_STATE_QUEUED,
            stage="queued",
            documents_total=len(request.sources),
            document_ids=[s.document_id for s in request.sources],
        )
        self.jobs[job_id] = job
        for s in request.sources:
            self.documents[s.document_id] = rpb.Document(
                document_id=s.document_id, name=s.name, object_key=s.object_key, chunks=2
            )
        return rpb.StartIngestResponse(job=job)

    async def WatchJob(self, request: rpb.WatchJobRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.job_id not in self.jobs:
            raise not_found(f"no ingestion job {request.job_id!r}")
        try:
            for ev in self._events(request.job_id):
                if ev.sequence <= request.after_sequence:
                    continue
                if request.job_id.startswith("job-slow") and ev.sequence == 2:
                    await asyncio.sleep(60)
                yield ev
        except asyncio.CancelledError:
            self.watch_cancelled.set()
            raise

    async def GetJob(self, request: rpb.GetJobRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.job_id not in self.jobs:
            raise not_found(f"no ingestion job {request.job_id!r}")
        return rpb.GetJobResponse(job=self.jobs[request.job_id])

    async def ListJobs(self, request: rpb.ListJobsRequest, context: grpc.aio.ServicerContext) -> Any:
        return rpb.ListJobsResponse(jobs=list(reversed(self.jobs.values())))

    async def CancelJob(self, request: rpb.CancelJobRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.job_id not in self.jobs:
            raise not_found(f"no ingestion job {request.job_id!r}")
        self.jobs[request.job_id].state = rpb.JOB_STATE_CANCELLED
        return rpb.CancelJobResponse(job=self.jobs[request.job_id])

    async def ListDocuments(self, request: rpb.ListDocumentsRequest, context: grpc.aio.ServicerContext) -> Any:
        docs = list(self.documents.values())
        n = request.page.page_size or 100
        return rpb.ListDocumentsResponse(documents=docs[:n], total=len(docs))

    async def DeleteDocument(self, request: rpb.DeleteDocumentRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.document_id not in self.documents:
            raise not_found(f"no document {request.document_id!r} in {request.collection!r}")
        del self.documents[request.document_id]
        return rpb.DeleteDocumentResponse()

    async def DeleteCollection(self, request: rpb.DeleteCollectionRequest, context: grpc.aio.ServicerContext) -> Any:
        self.deleted_collections.append(request.name)
        if request.name != "default":
            raise not_found(f"collection {request.name!r} does not exist", reason="COLLECTION_NOT_FOUND")
        n = len(self.documents)
        self.documents.clear()
        return rpb.DeleteCollectionResponse(documents=n, chunks=2 * n, objects_deleted=3 * n)

    async def ListCollections(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return rpb.ListCollectionsResponse(collections=[rpb.Collection(name="default", documents=len(self.documents))])

    async def StartWatch(self, request: rpb.StartWatchRequest, context: grpc.aio.ServicerContext) -> Any:
        w = rpb.Watch(
            watch_id=f"w{len(self.watches) + 1}",
            collection=request.collection,
            prefix=request.prefix,
            backend=request.backend,
            interval_s=request.interval_s or 10,
            active=True,
            files=[rpb.WatchedFile(object_key=request.prefix + "a.md", status="ingested", job_id="job-1")],
        )
        self.watches[w.watch_id] = w
        return rpb.StartWatchResponse(watch=w)

    async def StopWatch(self, request: rpb.StopWatchRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.watch_id not in self.watches:
            raise not_found(f"no watch {request.watch_id!r}")
        self.watches[request.watch_id].active = False
        return rpb.StopWatchResponse(watch=self.watches[request.watch_id])

    async def ListWatches(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return rpb.ListWatchesResponse(watches=list(self.watches.values()))

    async def CacheStats(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return rpb.CacheStatsResponse(entries=3, hits=7, misses=3)

    async def PurgeCache(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return rpb.PurgeCacheResponse(removed=3)


def chunk(n: int) -> common_pb2.ScoredChunk:
    return common_pb2.ScoredChunk(
        chunk_id=f"c{n}",
        document_id="d1",
        document_name="storage.md",
        collection="default",
        object_key=f"chunks/default/c{n}",
        text=f"passage {n}",
        score=1.0 / n,
    )


VERIFY = lpb.Verify(
    check=lpb.Verification(
        sentences=[
            lpb.SentenceCheck(index=0, text="Object storage keeps chunks.", citations=[1], score=0.91, supported=True),
            lpb.SentenceCheck(index=1, text="The moon is made of cheese.", citations=[1], score=0.08, supported=False),
        ],
        answer_score=0.5,
        method="embedder",
    ),
    threshold=0.75,
    repair=lpb.Repair(kind="regenerated", text="Object storage keeps chunks [1].", added_passages=1),
)


class DoubleLlm(lpb_grpc.LlmServiceServicer):
    """Answers with fixed tokens; questions starting with "slow" wait between tokens, "broken"
    fails after start, "refuse" fails before the first event, "guarded" is refused by a guard,
    "unsupported" gets a `verify` event with one unsupported sentence and a repair."""

    def __init__(self) -> None:
        self.answer_cancelled = asyncio.Event()
        self.requests: list[lpb.AnswerRequest] = []

    async def Answer(self, request: lpb.AnswerRequest, context: grpc.aio.ServicerContext) -> Any:
        self.requests.append(request)
        if request.question.startswith("refuse"):
            raise invalid("the collection has no index yet", reason="COLLECTION_EMPTY")
        if request.question.startswith("overloaded"):  # the llm_gateway's admission, at entry
            raise ServiceError(
                ErrorKind.RESOURCE_EXHAUSTED, "at capacity", reason="OVERLOADED", metadata={"retry_after_s": "3"}
            )
        if request.question.startswith("guarded"):
            yield lpb.AnswerResponse(
                refused=lpb.Refused(
                    stage="input", guard="builtin", reason="DENIED_TERM", message="the question contains a denied term"
                )
            )
            return
        backend = request.storage_backend or "default"
        try:
            yield lpb.AnswerResponse(
                retrieval=lpb.Retrieval(
                    chunks=[chunk(1), chunk(2)],
                    index_version="v1",
                    timings=timings(("embed", 2_000_000, "", 0), ("fetch", 3_000_000, backend, 1_000_000)),
                    search_query=request.question,
                    rewrite="none",
                )
            )
            if request.question.startswith("busy"):  # with a Retry-After, as admission after retrieval
                err = ServiceError(
                    ErrorKind.RESOURCE_EXHAUSTED,
                    "every backend is busy",
                    reason="BACKEND_BUSY",
                    metadata={"retry_after_s": "2"} if "retry" in request.question else None,
                )
                yield lpb.AnswerResponse(error=err.to_status_proto())
                return
            yield lpb.AnswerResponse(start=lpb.Start(backend="extractive", model="extractive-v1"))
            if request.question.startswith("broken"):
                err = ServiceError(ErrorKind.UNAVAILABLE, "the LLM backend went away", reason="BACKEND_DOWN")
                yield lpb.AnswerResponse(error=err.to_status_proto())
                return
            for i, t in enumerate(TOKENS):
                if request.question.startswith("slow"):
                    await asyncio.sleep(0.5)
                yield lpb.AnswerResponse(token=lpb.Token(text=t, index=i))
            cit = common_pb2.Citation(
                number=1,
                collection="default",
                document_id="d1",
                document_name="storage.md",
                chunk_id="c1",
                object_key="chunks/default/c1",
                score=1.0,
                text="passage 1",
            )
            yield lpb.AnswerResponse(citation=cit)
            if request.question.startswith("unsupported"):
                yield lpb.AnswerResponse(verify=VERIFY)
            yield lpb.AnswerResponse(
                done=lpb.Done(
                    usage=lpb.Usage(prompt_tokens=40, completion_tokens=5, source="tokenizer"),
                    ttft_ns=1_000_000,
                    rag_ttft_ns=6_000_000,
                    generation_ns=2_000_000,
                    tokens_per_s=2500.0,
                    finish_reason="stop",
                    citations=[cit],
                    text="".join(TOKENS),
                    timings=timings(("retrieve", 5_000_000, "", 0), ("generate", 2_000_000, "", 0)),
                )
            )
        except asyncio.CancelledError:
            self.answer_cancelled.set()
            raise

    async def Generate(self, request: lpb.GenerateRequest, context: grpc.aio.ServicerContext) -> Any:
        yield lpb.GenerateResponse(start=lpb.Start(backend="extractive", model="extractive-v1"))
        for i, t in enumerate(TOKENS):
            yield lpb.GenerateResponse(token=lpb.Token(text=t, index=i))
        yield lpb.GenerateResponse(
            done=lpb.Done(
                text="".join(TOKENS), finish_reason="stop", usage=lpb.Usage(prompt_tokens=10, completion_tokens=5)
            )
        )

    async def ListModels(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return lpb.ListModelsResponse(models=[lpb.Model(id="extractive-v1", backend="extractive", kind="extractive")])

    async def CacheStats(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return lpb.CacheStatsResponse(entries=1, hits=1, misses=4)

    async def PurgeCache(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return lpb.PurgeCacheResponse(removed=1)


class DoubleEmbedder(epb_grpc.EmbedderServiceServicer):
    """Deterministic 4-dimensional vectors from the text's length; no model."""

    async def Embed(self, request: epb.EmbedRequest, context: grpc.aio.ServicerContext) -> Any:
        embs = [epb.Embedding(values=[float(len(t)), 1.0, 0.0, 0.5], tokens=len(t.split()) + 2) for t in request.texts]
        return epb.EmbedResponse(embeddings=embs, dimension=4)

    async def Info(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return epb.InfoResponse(model_id="double", dimension=4, device="cpu", max_batch_texts=64)

    async def CacheStats(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return epb.CacheStatsResponse(entries=10, hits=30, misses=10)

    async def PurgeCache(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return epb.PurgeCacheResponse(removed=10)


@dataclass
class Doubles:
    storage: DoubleStorage
    retriever: DoubleRetriever
    llm: DoubleLlm
    embedder: DoubleEmbedder
    servers: dict[str, GrpcApp] = field(default_factory=dict)

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.servers[name].port}"

    def config(self, **overrides: Any) -> GatewayConfig:
        if not {"api_keys", "api_keys_file", "auth"} & overrides.keys():
            overrides["auth"] = "open"  # no keys: open on purpose, as `rag up` sets it on loopback
        return load_env(
            GatewayConfig,
            {},
            port=0,
            storage_addr=self.addr("storage"),
            retriever_addr=self.addr("retriever"),
            llm_gateway_addr=self.addr("llm_gateway"),
            embedder_addr=self.addr("embedder"),
            **overrides,
        )


@pytest.fixture
async def doubles() -> AsyncIterator[Doubles]:
    d = Doubles(DoubleStorage(), DoubleRetriever(), DoubleLlm(), DoubleEmbedder())
    specs = {
        "storage": (spb_grpc.add_StorageServiceServicer_to_server, d.storage, "ddnrag.storage.v1.StorageService"),
        "retriever": (
            rpb_grpc.add_RetrieverServiceServicer_to_server,
            d.retriever,
            "ddnrag.retriever.v1.RetrieverService",
        ),
        "llm_gateway": (lpb_grpc.add_LlmServiceServicer_to_server, d.llm, "ddnrag.llm.v1.LlmService"),
        "embedder": (epb_grpc.add_EmbedderServiceServicer_to_server, d.embedder, "ddnrag.embedder.v1.EmbedderService"),
    }
    try:
        for name, spec in specs.items():
            d.servers[name] = await build_server(f"double_{name}", [spec], "127.0.0.1", 0)
        yield d
    finally:
        for app in d.servers.values():
            await app.stop(0)


def make_app(d: Doubles, **overrides: Any) -> web.Application:
    return create_app(d.config(**overrides))


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """Splits an SSE body into events: {"id", "event", "data"} (comments kept as {"comment"})."""
    import json

    out: list[dict[str, Any]] = []
    for block in raw.decode().split("\r\n\r\n"):
        if not block.strip():
            continue
        ev: dict[str, Any] = {}
        for line in block.split("\r\n"):
            if line.startswith(":"):
                ev["comment"] = line[1:].strip()
            else:
                k, _, v = line.partition(": ")
                ev[k] = json.loads(v) if k == "data" else v
        out.append(ev)
    return out
