"""Typed async client for `ddnrag.llm.v1.LlmService` (the LLM gateway).

Streams are async iterators of the generated response messages; leaving the iteration early
(break, or closing the iterator) cancels the call, and the gateway then aborts its backend
request. A failure before the first event raises `ServiceCallError` (with the ErrorInfo reason);
a failure after it arrives as the stream's last event, with its `error` field set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

from ddnrag.common.v1 import common_pb2
from ddnrag.llm.v1 import ab_service_pb2 as ab_pb
from ddnrag.llm.v1 import ab_service_pb2_grpc as ab_pb_grpc
from ddnrag.llm.v1 import llm_service_pb2 as pb
from ddnrag.llm.v1 import llm_service_pb2_grpc as pb_grpc
from kernel.metrics import method_of

from .base import BaseClient

Passage = pb.Passage
GenerationParams = pb.GenerationParams
ChatMessage = pb.ChatMessage


class LlmClient(BaseClient):
    service = "llm_gateway"

    def __init__(self, address: str, **kwargs: object) -> None:
        super().__init__(address, **kwargs)  # type: ignore[arg-type]
        self.stub = pb_grpc.LlmServiceStub(self.channel)

    def generate(
        self,
        question: str,
        passages: Sequence[pb.Passage],
        *,
        params: pb.GenerationParams | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[pb.GenerateResponse]:
        """Streams start, token..., citation..., done (or error) for `question` over `passages`
        (cited as [1], [2], ... in the order given)."""
        req = pb.GenerateRequest(question=question, passages=list(passages), params=params)
        return self.stream(self.stub.Generate(req, timeout=self._timeout(timeout)), method_of(self.stub.Generate))

    def answer(
        self,
        question: str,
        *,
        collection: str = "default",
        storage_backend: str = "",
        top_k: int = 5,
        params: pb.GenerationParams | None = None,
        filters: Mapping[str, str] | None = None,
        timeout: float | None = None,
        conversation_id: str = "",
        history: Sequence[pb.ChatMessage] = (),
    ) -> AsyncIterator[pb.AnswerResponse]:
        """Retrieve-then-generate: streams retrieval, start, token..., citation..., done (or
        error). `conversation_id` continues a conversation (the turn is stored in it);
        `history` gives prior turns instead."""
        req = pb.AnswerRequest(
            question=question,
            collection=collection,
            storage_backend=storage_backend,
            top_k=top_k,
            params=params,
            filters=dict(filters or {}),
            conversation_id=conversation_id,
            history=list(history),
        )
        return self.stream(self.stub.Answer(req, timeout=self._timeout(timeout)), method_of(self.stub.Answer))

    async def list_models(self, *, timeout: float | None = None) -> pb.ListModelsResponse:
        return await self.unary(self.stub.ListModels, pb.ListModelsRequest(), timeout=timeout)

    async def cache_stats(self, *, timeout: float | None = None) -> pb.CacheStatsResponse:
        return await self.unary(self.stub.CacheStats, pb.CacheStatsRequest(), timeout=timeout)

    async def purge_cache(self, *, timeout: float | None = None) -> pb.PurgeCacheResponse:
        return await self.unary(self.stub.PurgeCache, pb.PurgeCacheRequest(), timeout=timeout)

    # --- conversations -------------------------------------------------------------------
    async def create_conversation(
        self, title: str = "", collection: str = "", *, timeout: float | None = None
    ) -> pb.CreateConversationResponse:
        req = pb.CreateConversationRequest(title=title, collection=collection)
        return await self.unary(self.stub.CreateConversation, req, timeout=timeout, idempotent=False)

    async def list_conversations(
        self, page_size: int = 0, page_token: str = "", *, timeout: float | None = None
    ) -> pb.ListConversationsResponse:
        """One page, most recently updated first; pass `next_page_token` back for the next."""
        req = pb.ListConversationsRequest(page_size=page_size, page_token=page_token)
        return await self.unary(self.stub.ListConversations, req, timeout=timeout)

    async def get_conversation(
        self, conversation_id: str, *, timeout: float | None = None
    ) -> pb.GetConversationResponse:
        req = pb.GetConversationRequest(id=conversation_id)
        return await self.unary(self.stub.GetConversation, req, timeout=timeout)

    async def update_conversation(
        self, conversation_id: str, title: str, *, timeout: float | None = None
    ) -> pb.UpdateConversationResponse:
        req = pb.UpdateConversationRequest(id=conversation_id, title=title)
        return await self.unary(self.stub.UpdateConversation, req, timeout=timeout)

    async def delete_conversation(
        self, conversation_id: str, *, timeout: float | None = None
    ) -> pb.DeleteConversationResponse:
        req = pb.DeleteConversationRequest(id=conversation_id)
        return await self.unary(self.stub.DeleteConversation, req, timeout=timeout)


class AbTestClient(BaseClient):
    """Typed async client for `ddnrag.llm.v1.AbTestService` (A/B runs, served by the llm_gateway).

    `run` and `watch` stream events (notice, progress, then the saved run); leaving the iteration
    early does not stop the run: follow it again with `watch(run_id, after_seq)`."""

    service = "llm_gateway"

    def __init__(self, address: str, **kwargs: object) -> None:
        super().__init__(address, **kwargs)  # type: ignore[arg-type]
        self.stub = ab_pb_grpc.AbTestServiceStub(self.channel)

    def run(
        self, request: ab_pb.RunAbTestRequest, *, timeout: float | None = 6 * 3600.0
    ) -> AsyncIterator[ab_pb.RunAbTestResponse]:
        return self.stream(self.stub.RunAbTest(request, timeout=timeout), method_of(self.stub.RunAbTest))

    def watch(
        self, run_id: str, after_seq: int = 0, *, timeout: float | None = 6 * 3600.0
    ) -> AsyncIterator[ab_pb.WatchAbTestResponse]:
        req = ab_pb.WatchAbTestRequest(run_id=run_id, after_seq=after_seq)
        return self.stream(self.stub.WatchAbTest(req, timeout=timeout), method_of(self.stub.WatchAbTest))

    async def list(
        self, page_size: int = 20, page_token: str = "", *, timeout: float | None = None
    ) -> ab_pb.ListAbTestsResponse:
        req = ab_pb.ListAbTestsRequest(page=common_pb2.PageRequest(page_size=page_size, page_token=page_token))
        return await self.unary(self.stub.ListAbTests, req, timeout=timeout)

    async def get(
        self, run_id: str, *, include_csv: bool = False, include_html: bool = False, timeout: float | None = None
    ) -> ab_pb.GetAbTestResponse:
        req = ab_pb.GetAbTestRequest(run_id=run_id, include_csv=include_csv, include_html=include_html)
        return await self.unary(self.stub.GetAbTest, req, timeout=timeout)
