"""Typed async client for `ddnrag.embedder.v1.EmbedderService`."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence

import grpc
import numpy as np

from ddnrag.embedder.v1 import embedder_service_pb2 as pb
from ddnrag.embedder.v1 import embedder_service_pb2_grpc as pb_grpc

from .base import BaseClient, ServiceCallError


def vectors_of(embeddings: Sequence[pb.Embedding], dimension: int) -> np.ndarray:
    """The vectors of `embeddings` as one (n, dimension) float32 array."""
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
        """Embeds any number of texts as an (n, dim) float32 array of L2-normalised rows, split
        into requests of at most the server's per-request limit (sent one after another, each
        with `timeout`)."""
        texts = list(texts)
        limit = await self._limit()
        if not texts:
            info = await self.info()
            return np.zeros((0, info.dimension), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), limit):
            res = await self.embed(texts[start : start + limit], truncate=truncate, timeout=timeout)
            parts.append(vectors_of(res.embeddings, res.dimension))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def embed_stream(
        self, batches: AsyncIterable[Sequence[str]], *, truncate: bool = True
    ) -> AsyncIterator[pb.EmbedStreamResponse]:
        """Streams `batches` (each at most the per-request limit) through the bidirectional
        EmbedStream; yields one response per batch, in order (request ids are "0", "1", ...).
        Stopping early cancels the call."""

        async def requests() -> AsyncIterator[pb.EmbedStreamRequest]:
            i = 0
            async for texts in batches:
                yield pb.EmbedStreamRequest(request_id=str(i), texts=list(texts), truncate=truncate)
                i += 1

        call = self.stub.EmbedStream(requests())
        try:
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
