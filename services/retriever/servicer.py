"""RetrieverService: protobuf <-> domain, calls the core, maps errors (the interceptor maps an
escaped ServiceError to its status with ErrorInfo)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from ddnrag.common.v1 import common_pb2
from ddnrag.retriever.v1 import retriever_service_pb2 as pb
from ddnrag.retriever.v1 import retriever_service_pb2_grpc as pb_grpc
from kernel import deadline
from kernel.errors import OK_STATUS
from kernel.pb import page_size, sentence_vectors_pb, timings_pb
from kernel.timing import Timer

from .clearing import clear_collection
from .core import CollectionState, Retriever, SearchParams
from .index import DocumentInfo
from .job_model import FileRow, JobView, SourceSpec
from .jobs import JobManager
from .prefix_watch import PrefixWatchManager

_STATES = {
    "queued": pb.JOB_STATE_QUEUED,
    "running": pb.JOB_STATE_RUNNING,
    "succeeded": pb.JOB_STATE_SUCCEEDED,
    "partial": pb.JOB_STATE_PARTIAL,
    "failed": pb.JOB_STATE_FAILED,
    "cancelled": pb.JOB_STATE_CANCELLED,
}
_MODES = {pb.SEARCH_MODE_DENSE: "dense", pb.SEARCH_MODE_BM25: "bm25"}
_FUSIONS = {pb.FUSION_METHOD_RRF: "rrf", pb.FUSION_METHOD_WEIGHTED: "weighted"}


def collection_pb(c: CollectionState) -> pb.Collection:
    return pb.Collection(
        name=c.name,
        documents=len(c.live.documents),
        chunks=c.live.chunks,
        version=c.live.version,
        updated_unix_ns=c.live.updated_unix_ns or c.created_unix_ns,
    )


def document_pb(d: DocumentInfo) -> pb.Document:
    return pb.Document(
        document_id=d.document_id,
        name=d.name,
        object_key=d.object_key,
        size_bytes=d.size_bytes,
        chunks=d.chunks,
        sha256=d.sha256,
        metadata=d.metadata,
        ingested_unix_ns=d.ingested_unix_ns,
    )


def job_pb(v: JobView) -> pb.Job:
    return pb.Job(
        job_id=v.job_id,
        collection=v.collection,
        state=_STATES.get(v.state, pb.JOB_STATE_UNSPECIFIED),
        stage=v.stage,
        documents_done=v.documents_done,
        documents_total=v.documents_total,
        chunks_done=v.chunks_done,
        chunks_total=v.chunks_total,
        embeddings_per_s=v.embeddings_per_s,
        backends=[
            pb.BackendWriteStats(
                backend=b.backend,
                objects_written=b.objects_written,
                write_ops_per_s=b.ops_per_s,
                write_p50_ns=b.p50_ns,
                write_avg_ns=b.avg_ns,
            )
            for b in v.backends
        ],
        eta_s=v.eta_s,
        file_errors=[pb.FileError(name=e.name, object_key=e.object_key, reason=e.reason) for e in v.file_errors],
        error=v.error,
        created_unix_ns=v.created_unix_ns,
        updated_unix_ns=v.updated_unix_ns,
        index_version=v.index_version,
        document_ids=v.document_ids,
        bytes_total=v.bytes_total,
        fetch_ns=v.stage_ns.get("fetch", 0),
        parse_ns=v.stage_ns.get("parse", 0),
        chunk_ns=v.stage_ns.get("chunk", 0),
        embed_ns=v.stage_ns.get("embed", 0),
        write_ns=v.stage_ns.get("write", 0),
        index_ns=v.stage_ns.get("index", 0),
        run_ns=v.stage_ns.get("run", 0),
        embed_idle_ns=v.stage_ns.get("embed_idle", 0),
        embedder_device=v.embedder_device,
    )


def job_file_pb(f: FileRow) -> pb.JobFile:
    return pb.JobFile(
        name=f.name,
        object_key=f.object_key,
        document_id=f.document_id,
        status=f.status,
        reason=f.reason,
        size_bytes=f.size_bytes,
        chunks=f.chunks,
        fetch_ns=f.fetch_ns,
        parse_ns=f.parse_ns,
        chunk_ns=f.chunk_ns,
        embed_ns=f.embed_ns,
        write_ns=f.write_ns,
    )


def watch_pb(w: dict[str, Any]) -> pb.Watch:
    return pb.Watch(
        watch_id=w["watch_id"],
        collection=w["collection"],
        backend=w["backend"],
        prefix=w["prefix"],
        interval_s=w["interval_s"],
        active=w["active"],
        files=[pb.WatchedFile(object_key=k, **f) for k, f in sorted(w["files"].items())],
    )


class RetrieverServicer(pb_grpc.RetrieverServiceServicer):
    def __init__(self, core: Retriever, jobs: JobManager, prefix_watches: PrefixWatchManager) -> None:
        self.core = core
        self.jobs = jobs
        self.prefix_watches = prefix_watches

    async def CreateCollection(self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext) -> Any:
        t = Timer()
        c = await self.core.create_collection(request.name)
        return pb.CreateCollectionResponse(collection=collection_pb(c), timings=timings_pb(t))

    async def ListCollections(self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext) -> Any:
        t = Timer()
        cs = [collection_pb(c) for c in self.core.list_collections()]
        return pb.ListCollectionsResponse(collections=cs, timings=timings_pb(t))

    async def DeleteCollection(self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext) -> Any:
        t = Timer()
        c = await clear_collection(self.core, self.jobs, request.name)
        return pb.DeleteCollectionResponse(
            timings=timings_pb(t),
            documents=c.documents,
            chunks=c.chunks,
            objects_deleted=c.objects_deleted,
            jobs_cancelled=c.jobs_cancelled,
            jobs_removed=c.jobs_removed,
        )

    async def ListDocuments(self, request: pb.ListDocumentsRequest, context: grpc.aio.ServicerContext) -> Any:
        t = Timer()
        docs, nxt, total = self.core.list_documents(
            request.collection, page_size(request.page), request.page.page_token
        )
        return pb.ListDocumentsResponse(
            documents=[document_pb(d) for d in docs], next_page_token=nxt, total=total, timings=timings_pb(t)
        )

    async def DeleteDocument(self, request: pb.DeleteDocumentRequest, context: grpc.aio.ServicerContext) -> Any:
        t = Timer()
        await self.core.delete_document(request.collection, request.document_id)
        return pb.DeleteDocumentResponse(timings=timings_pb(t))

    async def _start(self, request: pb.StartIngestRequest) -> JobView:
        return await self.jobs.start_ingest(
            request.collection or "default",
            [SourceSpec(s.object_key, s.name, s.document_id, dict(s.metadata)) for s in request.sources],
            source_prefix=request.source_prefix,
            source_backend=request.source_backend,
            target_backends=list(request.target_backends),
            chunk_size=request.chunking.chunk_size_tokens,
            chunk_overlap=request.chunking.chunk_overlap_tokens,
        )

    async def StartIngest(self, request: pb.StartIngestRequest, context: grpc.aio.ServicerContext) -> Any:
        t = Timer()
        job = await self._start(request)
        return pb.StartIngestResponse(job=job_pb(job), timings=timings_pb(t))

    async def Ingest(self, request: pb.StartIngestRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        job = await self._start(request)
        async for item in self._follow(job.job_id, 0):
            yield item

    async def WatchJob(self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await self.jobs.get(request.job_id)  # NOT_FOUND before the stream starts
        async for item in self._follow(request.job_id, request.after_sequence):
            yield item

    async def _follow(self, job_id: str, after: int) -> AsyncIterator[pb.IngestProgress]:
        t = Timer()
        async for seq, view, terminal in self.jobs.follow(job_id, after):
            yield pb.IngestProgress(sequence=seq, job=job_pb(view), terminal=terminal, timings=timings_pb(t))

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> Any:
        t = Timer()
        job = job_pb(await self.jobs.get(request.job_id))
        if request.include_files:
            job.files.extend(job_file_pb(f) for f in await self.jobs.state.files(request.job_id))
        return pb.GetJobResponse(job=job, timings=timings_pb(t))

    async def ListJobs(self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext) -> Any:
        t = Timer()
        jobs, nxt = await self.jobs.list(request.collection, page_size(request.page, 50), request.page.page_token)
        return pb.ListJobsResponse(jobs=[job_pb(j) for j in jobs], next_page_token=nxt, timings=timings_pb(t))

    async def CancelJob(self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext) -> Any:
        t = Timer()
        left = context.time_remaining()
        # Wait for the job to end as long as the caller allows (1 s kept to answer), at most 60 s.
        wait_s = 60.0 if left is None else max(0.0, min(60.0, left - 1.0))
        return pb.CancelJobResponse(job=job_pb(await self.jobs.cancel(request.job_id, wait_s)), timings=timings_pb(t))

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> Any:
        deadline.adopt(context)  # the query's Embed and the chunks' BatchGet end with this call
        params = SearchParams(
            top_k=request.top_k,
            mode=_MODES.get(request.mode, "hybrid"),
            fusion=_FUSIONS.get(request.fusion, ""),
            rrf_k=request.rrf_k,
            dense_weight=request.dense_weight if request.HasField("dense_weight") else None,
            filters=dict(request.filters),
            backend=request.backend,
            no_cache=request.no_cache,
            no_rerank=request.no_rerank,
            no_fetch=request.no_fetch,
            sentence_vectors=request.sentence_vectors,
        )
        res = await self.core.search(request.collection or "default", request.query, params)
        chunks = [
            common_pb2.ScoredChunk(
                chunk_id=h.chunk_id,
                document_id=h.document_id,
                document_name=h.document_name,
                collection=h.collection,
                object_key=h.object_key,
                text=h.text,
                score=h.score,
                bm25_rank=h.bm25_rank,
                dense_rank=h.dense_rank,
                position=h.position,
                metadata=h.metadata,
                status=h.error.to_status_proto() if h.error else OK_STATUS,
                rerank_score=h.rerank_score,
                sentence_vectors=sentence_vectors_pb(h.sentence_vectors),
            )
            for h in res.hits
        ]
        rr = res.rerank
        return pb.SearchResponse(
            chunks=chunks,
            index_version=res.index_version,
            cache_hit=res.cache_hit,
            timings=timings_pb(res.timer),
            rerank=common_pb2.Rerank(backend=rr.backend, status=rr.status, message=rr.message, scored=rr.scored)
            if rr
            else None,
        )

    async def StartWatch(self, request: pb.StartWatchRequest, context: grpc.aio.ServicerContext) -> Any:
        w = await self.prefix_watches.start_watch(
            request.collection or "default", request.prefix, request.backend, request.interval_s
        )
        return pb.StartWatchResponse(watch=watch_pb(w))

    async def StopWatch(self, request: pb.StopWatchRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.StopWatchResponse(watch=watch_pb(await self.prefix_watches.stop_watch(request.watch_id)))

    async def ListWatches(self, request: pb.ListWatchesRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ListWatchesResponse(watches=[watch_pb(w) for w in await self.prefix_watches.list()])

    async def CacheStats(self, request: pb.CacheStatsRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.CacheStatsResponse(**self.core.cache_stats())

    async def PurgeCache(self, request: pb.PurgeCacheRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.PurgeCacheResponse(removed=await self.core.purge_cache())
