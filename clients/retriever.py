"""Typed async client of the retriever service (`ddnrag.retriever.v1.RetrieverService`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc

from ddnrag.common.v1 import common_pb2
from ddnrag.retriever.v1 import retriever_service_pb2 as pb
from ddnrag.retriever.v1 import retriever_service_pb2_grpc as pb_grpc
from kernel.metrics import method_of

from .base import BaseClient, ServiceCallError

Job = pb.Job
IngestProgress = pb.IngestProgress
SearchResponse = pb.SearchResponse
SourceObject = pb.SourceObject
ChunkingOptions = pb.ChunkingOptions
SearchMode = pb.SearchMode
FusionMethod = pb.FusionMethod

_MODES = {"hybrid": pb.SEARCH_MODE_HYBRID, "dense": pb.SEARCH_MODE_DENSE, "bm25": pb.SEARCH_MODE_BM25}
_FUSIONS = {"rrf": pb.FUSION_METHOD_RRF, "weighted": pb.FUSION_METHOD_WEIGHTED}


def _sources(sources: Sequence[pb.SourceObject] | Sequence[str]) -> list[pb.SourceObject]:
    return [s if isinstance(s, pb.SourceObject) else pb.SourceObject(object_key=s) for s in sources]


class RetrieverClient(BaseClient):
    """One channel to the retriever. Methods return the generated messages; failures raise
    `ServiceCallError` with the gRPC code and ErrorInfo reason."""

    service = "retriever"
    # How long a progress stream keeps trying to reach the service again before it gives up.
    resume_for_s = 120.0

    def __init__(self, address: str, **kwargs: object) -> None:
        super().__init__(address, **kwargs)  # type: ignore[arg-type]
        self.stub = pb_grpc.RetrieverServiceStub(self.channel)

    # --- collections and documents ------------------------------------------------------------
    async def create_collection(self, name: str, *, timeout: float | None = None) -> pb.Collection:
        resp = await self.unary(self.stub.CreateCollection, pb.CreateCollectionRequest(name=name), timeout=timeout)
        return resp.collection

    async def list_collections(self, *, timeout: float | None = None) -> list[pb.Collection]:
        resp = await self.unary(self.stub.ListCollections, pb.ListCollectionsRequest(), timeout=timeout)
        return list(resp.collections)

    async def delete_collection(self, name: str, *, timeout: float | None = None) -> pb.DeleteCollectionResponse:
        return await self.unary(self.stub.DeleteCollection, pb.DeleteCollectionRequest(name=name), timeout=timeout)

    async def list_documents(
        self, collection: str, page_size: int = 100, page_token: str = "", *, timeout: float | None = None
    ) -> pb.ListDocumentsResponse:
        req = pb.ListDocumentsRequest(
            collection=collection, page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)
        )
        return await self.unary(self.stub.ListDocuments, req, timeout=timeout)

    async def delete_document(
        self, collection: str, document_id: str, *, timeout: float | None = None
    ) -> pb.DeleteDocumentResponse:
        req = pb.DeleteDocumentRequest(collection=collection, document_id=document_id)
        return await self.unary(self.stub.DeleteDocument, req, timeout=timeout)

    # --- ingestion ------------------------------------------------------------------------------
    @staticmethod
    def _ingest_request(
        collection: str,
        sources: Sequence[pb.SourceObject] | Sequence[str],
        target_backends: Sequence[str],
        source_backend: str,
        source_prefix: str,
        chunking: pb.ChunkingOptions | None,
    ) -> pb.StartIngestRequest:
        return pb.StartIngestRequest(
            collection=collection,
            sources=_sources(sources),
            source_prefix=source_prefix,
            source_backend=source_backend,
            target_backends=list(target_backends),
            chunking=chunking,
        )

    async def start_ingest(
        self,
        collection: str,
        sources: Sequence[pb.SourceObject] | Sequence[str],
        *,
        target_backends: Sequence[str] = (),
        source_backend: str = "",
        source_prefix: str = "",
        chunking: pb.ChunkingOptions | None = None,
        timeout: float | None = None,
    ) -> pb.Job:
        """Creates an ingestion job and returns it at once (follow it with `watch_job`)."""
        req = self._ingest_request(collection, sources, target_backends, source_backend, source_prefix, chunking)
        resp = await self.unary(self.stub.StartIngest, req, timeout=timeout, idempotent=False)
        return resp.job

    async def ingest(
        self,
        collection: str,
        sources: Sequence[pb.SourceObject] | Sequence[str],
        *,
        target_backends: Sequence[str] = (),
        source_backend: str = "",
        source_prefix: str = "",
        chunking: pb.ChunkingOptions | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[pb.IngestProgress]:
        """Creates a job and streams its progress until the terminal event."""
        req = self._ingest_request(collection, sources, target_backends, source_backend, source_prefix, chunking)
        async for ev in self._resuming(lambda: self.stub.Ingest(req, timeout=timeout), "", 0):
            yield ev

    async def watch_job(
        self, job_id: str, after_sequence: int = 0, *, timeout: float | None = None
    ) -> AsyncIterator[pb.IngestProgress]:
        """Streams a job's progress from its current state until it ends (resuming after a
        disconnect, as `ingest` does)."""
        req = pb.WatchJobRequest(job_id=job_id, after_sequence=after_sequence)
        async for ev in self._resuming(lambda: self.stub.WatchJob(req, timeout=timeout), job_id, after_sequence):
            yield ev

    async def _resuming(self, first: Callable[[], Any], job_id: str, after: int) -> AsyncIterator[pb.IngestProgress]:
        """Follows a progress stream to its terminal event across disconnects.

        A progress stream lives as long as its job, longer than one connection may (servers
        recycle connections; proxies and networks drop them). When the stream breaks with
        UNAVAILABLE, this reopens it -- WatchJob from the last sequence seen, or, before the first
        event, the same Ingest request again, which joins the job it may have started -- and
        gives up only after `resume_for_s` without reaching the service."""
        open_call = first
        # The first call is Ingest or WatchJob (each names itself); every reopening is WatchJob.
        name = method_of(self.stub.WatchJob) if job_id else method_of(self.stub.Ingest)
        failing_since = 0.0
        attempt = 0
        while True:
            try:
                async for ev in self.stream(open_call(), name):
                    failing_since, attempt = 0.0, 0
                    job_id, after = ev.job.job_id or job_id, max(after, ev.sequence)
                    yield ev
                    if ev.terminal:
                        return
                return  # the server ended the stream without a terminal event: nothing to resume
            except ServiceCallError as err:
                now = asyncio.get_running_loop().time()
                failing_since = failing_since or now
                if err.code != grpc.StatusCode.UNAVAILABLE or now - failing_since > self.resume_for_s:
                    raise
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt) * (0.5 + random.random()))
            attempt += 1
            if job_id:
                req = pb.WatchJobRequest(job_id=job_id, after_sequence=after)
                open_call = lambda req=req: self.stub.WatchJob(req)  # noqa: E731
                name = method_of(self.stub.WatchJob)

    async def get_job(self, job_id: str, *, include_files: bool = False, timeout: float | None = None) -> pb.Job:
        """The job; with `include_files`, also its files' results and stage times (`Job.files`)."""
        req = pb.GetJobRequest(job_id=job_id, include_files=include_files)
        return (await self.unary(self.stub.GetJob, req, timeout=timeout)).job

    async def list_jobs(
        self, collection: str = "", page_size: int = 50, page_token: str = "", *, timeout: float | None = None
    ) -> pb.ListJobsResponse:
        req = pb.ListJobsRequest(
            collection=collection, page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)
        )
        return await self.unary(self.stub.ListJobs, req, timeout=timeout)

    async def cancel_job(self, job_id: str, *, timeout: float | None = None) -> pb.Job:
        return (await self.unary(self.stub.CancelJob, pb.CancelJobRequest(job_id=job_id), timeout=timeout)).job

    # --- search ---------------------------------------------------------------------------------
    async def search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int = 5,
        backend: str = "",
        mode: str | int = "hybrid",
        fusion: str | int = "",
        rrf_k: int = 0,
        dense_weight: float | None = None,
        filters: Mapping[str, str] | None = None,
        no_cache: bool = False,
        no_rerank: bool = False,
        no_fetch: bool = False,
        sentence_vectors: bool = False,
        timeout: float | None = None,
    ) -> pb.SearchResponse:
        """Hybrid search; `mode` is "hybrid", "dense" or "bm25" (or the enum), `fusion` "rrf",
        "weighted" or "" for the service default."""
        req = pb.SearchRequest(
            collection=collection,
            query=query,
            top_k=top_k,
            backend=backend,
            mode=_MODES[mode] if isinstance(mode, str) else mode,
            fusion=(_FUSIONS[fusion] if fusion else pb.FUSION_METHOD_UNSPECIFIED)
            if isinstance(fusion, str)
            else fusion,
            rrf_k=rrf_k,
            filters=dict(filters or {}),
            no_cache=no_cache,
            no_rerank=no_rerank,
            no_fetch=no_fetch,
            sentence_vectors=sentence_vectors,
        )
        if dense_weight is not None:
            req.dense_weight = dense_weight
        return await self.unary(self.stub.Search, req, timeout=timeout)

    # --- continuous ingestion -------------------------------------------------------------------
    async def start_prefix_watch(
        self, collection: str, prefix: str, *, backend: str = "", interval_s: float = 0, timeout: float | None = None
    ) -> pb.Watch:
        req = pb.StartWatchRequest(collection=collection, prefix=prefix, backend=backend, interval_s=interval_s)
        return (await self.unary(self.stub.StartWatch, req, timeout=timeout)).watch

    async def stop_prefix_watch(self, watch_id: str, *, timeout: float | None = None) -> pb.Watch:
        return (await self.unary(self.stub.StopWatch, pb.StopWatchRequest(watch_id=watch_id), timeout=timeout)).watch

    async def list_prefix_watches(self, *, timeout: float | None = None) -> list[pb.Watch]:
        return list((await self.unary(self.stub.ListWatches, pb.ListWatchesRequest(), timeout=timeout)).watches)

    # --- cache ----------------------------------------------------------------------------------
    async def cache_stats(self, *, timeout: float | None = None) -> pb.CacheStatsResponse:
        return await self.unary(self.stub.CacheStats, pb.CacheStatsRequest(), timeout=timeout)

    async def purge_cache(self, *, timeout: float | None = None) -> pb.PurgeCacheResponse:
        return await self.unary(self.stub.PurgeCache, pb.PurgeCacheRequest(), timeout=timeout)
