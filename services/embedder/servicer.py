"""Protobuf <-> domain for `ddnrag.embedder.v1.EmbedderService`; the work is in `core.Embedder`.

Errors are `ServiceError`s raised by the core; the shared interceptor maps them to status codes
with an ErrorInfo reason, so this module only converts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from ddnrag.embedder.v1 import embedder_service_pb2 as pb
from ddnrag.embedder.v1 import embedder_service_pb2_grpc as pb_grpc
from kernel.errors import invalid
from kernel.pb import timings_pb

from .core import Embedder, EmbedResult

# EmbedStream keeps this many request messages in flight per stream, so their texts merge in
# the batcher while the stream's caller is back-pressured beyond it. A stream is flow-controlled:
# when the batching queue is full its next message waits for room instead of failing.
STREAM_IN_FLIGHT = 4


def _embeddings(res: EmbedResult) -> list[pb.Embedding]:
    return [
        pb.Embedding(values=vec, tokens=tok, truncated=cut, cache_hit=hit)
        for vec, tok, cut, hit in zip(res.vectors.tolist(), res.tokens, res.truncated, res.cache_hit, strict=True)
    ]


def _metadata(res: EmbedResult) -> pb.EmbedMetadata:
    return pb.EmbedMetadata(
        queue_time_ns=res.queue_time_ns,
        tokenization_time_ns=res.tokenization_time_ns,
        inference_time_ns=res.inference_time_ns,
        compute_tokens=res.compute_tokens,
        cache_hits=res.cache_hits,
    )


class EmbedderServicer(pb_grpc.EmbedderServiceServicer):
    def __init__(self, core: Embedder) -> None:
        self.core = core

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        res = await self.core.embed(
            list(request.texts), truncate=request.truncate, normalize=not request.skip_normalize
        )
        return pb.EmbedResponse(
            embeddings=_embeddings(res),
            dimension=res.vectors.shape[1],
            metadata=_metadata(res),
            timings=timings_pb(res.timer),
        )

    async def EmbedStream(
        self, request_iterator: AsyncIterator[pb.EmbedStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EmbedStreamResponse]:
        """Answers each message in order; up to STREAM_IN_FLIGHT messages are embedded at once, so
        the batcher can merge them (and other callers' texts) into shared batches."""
        pending: asyncio.Queue[tuple[str, asyncio.Task[EmbedResult]] | None] = asyncio.Queue(STREAM_IN_FLIGHT)

        async def read() -> None:
            try:
                async for req in request_iterator:
                    if not req.texts:
                        raise invalid(
                            f"stream message {req.request_id!r} has no texts",
                            reason="EMPTY_INPUT",
                            request_id=req.request_id,
                        )
                    task = asyncio.create_task(
                        self.core.embed(
                            list(req.texts),
                            truncate=req.truncate,
                            normalize=not req.skip_normalize,
                            wait_for_room=True,
                        )
                    )
                    await pending.put((req.request_id, task))
            finally:
                await pending.put(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await pending.get()
                if item is None:
                    break
                request_id, task = item
                res = await task
                yield pb.EmbedStreamResponse(
                    request_id=request_id,
                    embeddings=_embeddings(res),
                    dimension=res.vectors.shape[1],
                    metadata=_metadata(res),
                    timings=timings_pb(res.timer),
                )
            await reader  # surfaces a reader error (bad message) after the good ones were answered
        finally:
            reader.cancel()
            while not pending.empty():
                left = pending.get_nowait()
                if left is not None:
                    left[1].cancel()

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        i = self.core.info()
        return pb.InfoResponse(
            model_id=i.model_id,
            dimension=i.dimension,
            max_sequence_length=i.max_sequence_length,
            device=i.device,
            dtype=i.dtype,
            backend=i.backend,
            max_batch_texts=i.max_batch_texts,
            max_batch_tokens=i.max_batch_tokens,
            device_name=i.device_name,
        )

    async def CacheStats(
        self, request: pb.CacheStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CacheStatsResponse:
        s = await self.core.cache_stats()
        return pb.CacheStatsResponse(
            entries=s.entries,
            size_bytes=s.size_bytes,
            max_size_bytes=s.max_size_bytes,
            hits=s.hits,
            misses=s.misses,
            evictions=s.evictions,
        )

    async def PurgeCache(
        self, request: pb.PurgeCacheRequest, context: grpc.aio.ServicerContext
    ) -> pb.PurgeCacheResponse:
        return pb.PurgeCacheResponse(removed=await self.core.purge_cache())
