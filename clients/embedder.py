"""Typed async client for `ddnrag.embedder.v1.EmbedderService`."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import TYPE_CHECKING

import grpc

from ddnrag.embedder.v1 import embedder_service_pb2 as pb
from ddnrag.embedder.v1 import embedder_service_pb2_grpc as pb_grpc
from kernel.metrics import client_attempt, method_of

from .base import BaseClient, ServiceCallError

if TYPE_CHECKING:
    import numpy as np


def vectors_of(embeddings: Sequence[pb.Embedding], dimension: int) -> np.ndarray:
    """The vectors of `embeddings` as one (n, dimension) float32 array. numpy is imported here,
    so the light client package (`ddnrag-client`) needs it only for arrays (its `numpy` extra)."""
    import numpy as np

    if not embeddings:
        return np.zeros((0, dimension), dtype=np.float32)
    return np.stack([np.asarray(e.values, dtype=np.float32) for e in embeddings]).reshape(len(embeddings), dimension)


class EmbedderClient(BaseClient):
    """One channel to the embedder. Every method raises `ServiceCallError` on failure."""

    service = "embedder"

    def __init__(self, address: str, **kwargs: object) -> None:
        super().__init__(address, **kwargs)  # type: ignore[arg-type]
        self.stub = pb_grpc.EmbedderServiceStub(self.channel)
        self._max_batch_texts: int | None = None

    async def embed(
        self, texts: Sequence[str], *, truncate: bool = True, timeout: float | None = None
    ) -> pb.EmbedResponse:
        """Embeds up to `Info.max_batch_texts` texts (L2-normalised vectors, input order)."""
        return await self.unary(self.stub.Embed, pb.EmbedRequest(texts=list(texts), truncate=truncate), timeout=timeout)

    async def embed_array(
        self, texts: Sequence[str], *, truncate: bool = True, timeout: float | None = None
    ) -> np.ndarray:
        """Embeds any number of texts as an (n, dim) float32 array of L2-normalised rows, in
        input order. Up to the server's per-request limit this is one Embed call; beyond it the
        texts go through EmbedStream in messages of that limit (the server keeps several in
        flight and batches them together, and is flow-controlled rather than refusing work when
        its queue is full). `timeout` applies per message."""
        import numpy as np

        texts = list(texts)
        limit = await self._limit()
        if not texts:
            info = await self.info()
            return np.zeros((0, info.dimension), dtype=np.float32)
        if len(texts) <= limit:
            res = await self.embed(texts, truncate=truncate, timeout=timeout)
            return vectors_of(res.embeddings, res.dimension)
        n_parts = -(-len(texts) // limit)

        async def batches() -> AsyncIterator[list[str]]:
            for start in range(0, len(texts), limit):
                yield texts[start : start + limit]

        parts = [
            vectors_of(r.embeddings, r.dimension)
            async for r in self.embed_stream(batches(), truncate=truncate, timeout=self._timeout(timeout, n_parts))
        ]
        if sum(len(p) for p in parts) != len(texts):
            raise ServiceCallError(
                self.service, self.address, grpc.StatusCode.DATA_LOSS, "the embed stream ended early"
            )
        return np.concatenate(parts)

    async def embed_stream(
        self, batches: AsyncIterable[Sequence[str]], *, truncate: bool = True, timeout: float | None = None
    ) -> AsyncIterator[pb.EmbedStreamResponse]:
        """Streams `batches` (each at most the per-request limit) through the bidirectional
        EmbedStream; yields one response per batch, in order (request ids are "0", "1", ...).
        Stopping early cancels the call. `timeout` bounds the whole stream (none by default)."""

        async def requests() -> AsyncIterator[pb.EmbedStreamRequest]:
            i = 0
            async for texts in batches:
                yield pb.EmbedStreamRequest(request_id=str(i), texts=list(texts), truncate=truncate)
                i += 1

        call = self.stub.EmbedStream(requests(), timeout=timeout)
        try:
            with client_attempt(method_of(self.stub.EmbedStream), self.address):
                async for item in call:
                    yield item
        except grpc.aio.AioRpcError as err:
            raise ServiceCallError.from_rpc_error(self.service, self.address, err) from None
        finally:
            call.cancel()

    async def info(self, *, timeout: float | None = None) -> pb.InfoResponse:
        info = await self.unary(self.stub.Info, pb.InfoRequest(), timeout=timeout)
        self._max_batch_texts = info.max_batch_texts or None
        return info

    async def cache_stats(self, *, timeout: float | None = None) -> pb.CacheStatsResponse:
        return await self.unary(self.stub.CacheStats, pb.CacheStatsRequest(), timeout=timeout)

    async def purge_cache(self, *, timeout: float | None = None) -> pb.PurgeCacheResponse:
        return await self.unary(self.stub.PurgeCache, pb.PurgeCacheRequest(), timeout=timeout)

    async def _limit(self) -> int:
        if self._max_batch_texts is None:
            await self.info()
        return self._max_batch_texts or 1
