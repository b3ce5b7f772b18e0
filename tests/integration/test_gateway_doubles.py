"""Test doubles for the gateway's tests: small REAL gRPC servers (grpc.aio on 127.0.0.1:0) that
speak the four services' protocols with scripted answers, so the gateway's tests can assert exact
SSE bytes without the whole stack. These are test doubles, used only by tests; the lead's e2e test
drives the real services. Each double records what it saw (objects put, cancellations).

This module holds fixtures and doubles only (the storage double: tests/support/double_storage.py); it is imported by the gateway's test modules.
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
from ddnrag.storage.v1 import storage_service_pb2_grpc as spb_grpc
from gateway.app import create_app
from gateway.config import GatewayConfig
from kernel.config import load_env
from kernel.errors import ErrorKind, ServiceError, invalid, not_found
from kernel.server import GrpcApp, build_server
from tests.support.double_storage import DoubleStorage, timings

TOKENS = ["Object ", "storage ", "keeps ", "chunks ", "[1]."]


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
    "unsupported" gets a `verify` event with one unsupported sentence and a repair, "cached" is a
    cache hit unless `no_cache` is set."""

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
            hit = request.question.startswith("cached") and not request.params.no_cache  # the answer cache
            yield lpb.AnswerResponse(start=lpb.Start(backend="extractive", model="extractive-v1", cache_hit=hit))
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
