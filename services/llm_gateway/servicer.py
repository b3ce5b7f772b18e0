"""`ddnrag.llm.v1.LlmService`: protobuf <-> domain, calls the core. A ServiceError raised before
the first event escapes to the shared interceptor, which maps it to its status with ErrorInfo."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.rpc import status_pb2

from clients.base import remaining_timeout
from ddnrag.common.v1 import common_pb2
from ddnrag.llm.v1 import llm_service_pb2 as pb
from ddnrag.llm.v1 import llm_service_pb2_grpc as pb_grpc
from kernel import deadline
from kernel.errors import unavailable
from kernel.pb import stage_pb, timings_pb
from kernel.timing import Stage, Timer

from .checks import AnswerChecks, RefusedEvent, VerifyEvent, regenerate_with
from .checks_pb import guards_pb, refused_pb, verification_pb, verify_pb
from .coalesce import coalesced
from .conversations import Conversation, ConversationStore
from .core import LlmGateway
from .domain import (
    Citation,
    CitationEvent,
    DoneEvent,
    ErrorEvent,
    GenParams,
    Passage,
    RetrievalEvent,
    RetrievedChunk,
    StartEvent,
    TokenEvent,
)
from .metrics import LlmMetrics, StreamObserver


def params_from_pb(m: pb.GenerationParams) -> GenParams:
    return GenParams(
        backend=m.backend, model=m.model, max_tokens=m.max_tokens, temperature=m.temperature, no_cache=m.no_cache
    )


def passage_from_pb(m: pb.Passage) -> Passage:
    return Passage(
        text=m.text,
        chunk_id=m.chunk_id,
        document_id=m.document_id,
        document_name=m.document_name,
        collection=m.collection,
        object_key=m.object_key,
        score=m.score,
    )


def citation_pb(c: Citation) -> common_pb2.Citation:
    p = c.passage
    return common_pb2.Citation(
        number=c.number,
        collection=p.collection,
        document_id=p.document_id,
        document_name=p.document_name,
        chunk_id=p.chunk_id,
        object_key=p.object_key,
        score=p.score,
        text=p.text[:1000],
    )


def timings_from(stages: tuple[Stage, ...], total_ns: int) -> common_pb2.Timings:
    return common_pb2.Timings(
        total_ns=total_ns,
        stages=[stage_pb(s) for s in stages],
        stages_sum_ns=sum(s.duration_ns for s in stages),
    )


def done_pb(ev: DoneEvent) -> pb.Done:
    return pb.Done(
        usage=pb.Usage(
            prompt_tokens=ev.usage.prompt_tokens,
            completion_tokens=ev.usage.completion_tokens,
            source=ev.usage.source,
        ),
        ttft_ns=ev.ttft_ns,
        rag_ttft_ns=ev.rag_ttft_ns,
        generation_ns=ev.generation_ns,
        tokens_per_s=ev.tokens_per_s,
        inter_token_p50_ns=ev.inter_token_p50_ns,
        inter_token_p99_ns=ev.inter_token_p99_ns,
        finish_reason=ev.finish_reason,
        citations=[citation_pb(c) for c in ev.citations],
        text=ev.text,
        timings=timings_from(ev.stages, ev.total_ns),
        conversation_id=ev.conversation_id,
        turn_index=ev.turn_index,
        guards=guards_pb(ev.guards),  # type: ignore[arg-type]
    )


def chunk_pb(c: RetrievedChunk) -> common_pb2.ScoredChunk:
    p = c.passage
    return common_pb2.ScoredChunk(
        chunk_id=p.chunk_id,
        document_id=p.document_id,
        document_name=p.document_name,
        collection=p.collection,
        object_key=p.object_key,
        text=p.text,
        score=p.score,
        bm25_rank=c.bm25_rank,
        dense_rank=c.dense_rank,
        position=c.position,
        metadata=c.metadata,
        status=status_pb2.Status(code=c.status.code, message=c.status.message),
        rerank_score=c.rerank_score,
    )


def retrieval_pb(ev: RetrievalEvent) -> pb.Retrieval:
    r = ev.result
    return pb.Retrieval(
        chunks=[chunk_pb(c) for c in r.chunks],
        index_version=r.index_version,
        cache_hit=r.cache_hit,
        timings=timings_from(r.stages, r.total_ns),
        search_query=ev.search_query,
        rewrite=ev.rewrite,
        history_turns=ev.history_turns,
        history_turns_trimmed=ev.history_turns_trimmed,
        conversation_id=ev.conversation_id,
        rerank=common_pb2.Rerank(backend=rr.backend, status=rr.status, message=rr.message, scored=rr.scored)
        if (rr := r.rerank)
        else None,
    )


def event_fields(ev: object) -> dict[str, object]:
    """The oneof field (shared by GenerateResponse and AnswerResponse) for a core event."""
    match ev:
        case TokenEvent(text=text, index=index, count=count):
            return {"token": pb.Token(text=text, index=index, count=count)}
        case StartEvent(backend=backend, model=model, cache_hit=hit):
            return {"start": pb.Start(backend=backend, model=model, cache_hit=hit)}
        case CitationEvent(citation=c):
            return {"citation": citation_pb(c)}
        case DoneEvent():
            return {"done": done_pb(ev)}
        case ErrorEvent(error=err):
            return {"error": err.to_status_proto()}
        case RetrievalEvent():
            return {"retrieval": retrieval_pb(ev)}
        case VerifyEvent():
            return {"verify": verify_pb(ev)}
        case RefusedEvent():
            return {"refused": refused_pb(ev)}
    raise TypeError(f"unknown event {type(ev).__name__}")


class LlmServicer(pb_grpc.LlmServiceServicer):
    def __init__(self, core: LlmGateway, metrics: LlmMetrics | None = None, checks: AnswerChecks | None = None) -> None:
        self.core = core
        self.metrics = metrics
        # Guardrails and the groundedness check around every Generate and Answer (checks.py).
        self.checks = checks

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        deadline.adopt(context)
        passages = [passage_from_pb(p) for p in request.passages]
        params = params_from_pb(request.params)
        stream = self.core.generate(request.question, passages, params)
        if self.checks is not None:
            stream = self.checks.wrap(
                request.question,
                stream,
                kinds={b.name: b.kind for b in self.core.backends},
                passages=passages,
                regenerate=regenerate_with(self.core, request.question, params),
            )
        seen = StreamObserver(self.metrics)
        events = coalesced(stream)  # tokens ready together go as one message
        try:
            async for ev in events:
                seen.see(ev)
                yield pb.GenerateResponse(**event_fields(ev))
        finally:
            await events.aclose()
            await stream.aclose()

    async def Answer(
        self, request: pb.AnswerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AnswerResponse]:
        deadline.adopt(context)  # every peer call (search, embeddings) ends with this call
        params = params_from_pb(request.params)
        timeout_s = remaining_timeout(context, self.core.retrieval_timeout_s)
        stream = self.core.answer(
            request.question,
            collection=request.collection,
            storage_backend=request.storage_backend,
            top_k=request.top_k,
            params=params,
            filters=dict(request.filters),
            timeout_s=timeout_s,
            conversation_id=request.conversation_id,
            history=[(m.role, m.content) for m in request.history],
        )
        # The core runs the guardrails and the groundedness check (core.checks) before it stores
        # a conversation's turn, so the stored text is the text sent.
        seen = StreamObserver(self.metrics)
        events = coalesced(stream)  # tokens ready together go as one message
        try:
            async for ev in events:
                seen.see(ev)
                yield pb.AnswerResponse(**event_fields(ev))
        finally:
            await events.aclose()
            await stream.aclose()

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        timer = Timer()
        models = [
            pb.Model(
                id=m.id,
                backend=m.backend,
                kind=m.kind,
                priority=m.priority,
                healthy=m.healthy,
                in_flight=m.in_flight,
                max_concurrency=m.max_concurrency,
            )
            for m in self.core.list_models()
        ]
        return pb.ListModelsResponse(models=models, timings=timings_pb(timer))

    async def CacheStats(
        self, request: pb.CacheStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CacheStatsResponse:
        timer = Timer()
        if self.core.cache is None:
            return pb.CacheStatsResponse(timings=timings_pb(timer))
        with timer.stage("cache_stats"):
            s = await self.core.cache.stats()
        return pb.CacheStatsResponse(
            entries=s.entries,
            size_bytes=s.size_bytes,
            max_size_bytes=s.max_size_bytes,
            hits=s.hits,
            misses=s.misses,
            evictions=s.evictions,
            timings=timings_pb(timer),
        )

    async def PurgeCache(
        self, request: pb.PurgeCacheRequest, context: grpc.aio.ServicerContext
    ) -> pb.PurgeCacheResponse:
        timer = Timer()
        if self.core.cache is None:
            return pb.PurgeCacheResponse(timings=timings_pb(timer))
        with timer.stage("cache_purge"):
            removed = await self.core.cache.purge()
            if self.core.ready is not None:
                self.core.ready.clear()  # they replay what the cache served
        return pb.PurgeCacheResponse(removed=removed, timings=timings_pb(timer))

    # ---- conversations ----------------------------------------------------------------------
    def _store(self) -> ConversationStore:
        if self.core.conversations is None:
            raise unavailable(
                "conversations are not available: this llm_gateway has no storage service "
                "(set DDNRAG_LLM_GATEWAY_STORAGE_ADDR)",
                reason="NO_CONVERSATION_STORE",
            )
        return self.core.conversations

    async def CreateConversation(
        self, request: pb.CreateConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateConversationResponse:
        timer = Timer()
        with timer.stage("conversation_store"):
            c = await self._store().create(request.title, request.collection)
        return pb.CreateConversationResponse(conversation=conversation_pb(c), timings=timings_pb(timer))

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConversationsResponse:
        timer = Timer()
        with timer.stage("conversation_list") as st:
            items, token = await self._store().list(request.page_size, request.page_token)
            st.count = len(items)
        return pb.ListConversationsResponse(
            conversations=[conversation_pb(c) for c in items], timings=timings_pb(timer), next_page_token=token
        )

    async def GetConversation(
        self, request: pb.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConversationResponse:
        timer = Timer()
        with timer.stage("conversation_load"):
            c = await self._store().get(request.id)
        return pb.GetConversationResponse(conversation=conversation_pb(c), timings=timings_pb(timer))

    async def UpdateConversation(
        self, request: pb.UpdateConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateConversationResponse:
        timer = Timer()
        with timer.stage("conversation_store"):
            c = await self._store().rename(request.id, request.title)
        return pb.UpdateConversationResponse(conversation=conversation_pb(c, turns=False), timings=timings_pb(timer))

    async def DeleteConversation(
        self, request: pb.DeleteConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteConversationResponse:
        timer = Timer()
        with timer.stage("conversation_delete"):
            await self._store().delete(request.id)
        return pb.DeleteConversationResponse(timings=timings_pb(timer))


def conversation_pb(c: Conversation, *, turns: bool = True) -> pb.Conversation:
    return pb.Conversation(
        id=c.id,
        title=c.title,
        collection=c.collection,
        created_unix_ns=c.created_unix_ns,
        updated_unix_ns=c.updated_unix_ns,
        turn_count=c.count,
        turns=[
            pb.Turn(
                question=t.question,
                search_query=t.search_query,
                answer=t.answer,
                citations=[citation_pb(x) for x in t.citations],
                backend=t.backend,
                model=t.model,
                finish_reason=t.finish_reason,
                created_unix_ns=t.created_unix_ns,
                verify_score=t.verify_score,
                verify=None
                if t.verification is None
                else pb.Verify(check=verification_pb(t.verification), threshold=t.verify_threshold),
            )
            for t in (c.turns if turns else ())
        ],
    )
