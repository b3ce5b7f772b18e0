"""How large one request message may be, per gRPC method.

A server used to accept 256 MiB messages on every method, so any caller could make any service
hold 256 MiB per call. Now each method has its own limit (most are small), a server's transport
accepts no more than the largest limit among the methods it serves, and `MessageLimitInterceptor`
refuses a message over its own method's limit with RESOURCE_EXHAUSTED. Responses are not limited
here: the server writes them itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc

MIB = 1024 * 1024
DEFAULT_BYTES = 4 * MIB  # gRPC's own default

METHOD_BYTES: dict[str, int] = {
    # Chunk batches and index segments travel in one BatchPut.
    "/ddnrag.storage.v1.StorageService/BatchPut": 256 * MIB,
    # One part of a streamed upload (clients send 1 MiB parts).
    "/ddnrag.storage.v1.StorageService/Put": 16 * MIB,
    # Batches of texts to embed.
    "/ddnrag.embedder.v1.EmbedderService/Embed": 64 * MIB,
    "/ddnrag.embedder.v1.EmbedderService/EmbedStream": 64 * MIB,
    # Ingestion of many object keys at once.
    "/ddnrag.retriever.v1.RetrieverService/StartIngest": 32 * MIB,
    "/ddnrag.retriever.v1.RetrieverService/Ingest": 32 * MIB,
    # Passages given by the caller.
    "/ddnrag.llm.v1.LlmService/Generate": 32 * MIB,
    # An A/B run's questions (up to 5000 of up to 4096 characters).
    "/ddnrag.llm.v1.AbTestService/RunAbTest": 32 * MIB,
}


def limit_for(method: str) -> int:
    return METHOD_BYTES.get(method, DEFAULT_BYTES)


def server_receive_limit(service_names: Iterable[str]) -> int:
    """The transport limit of a server serving `service_names`: its largest method limit."""
    prefixes = tuple(f"/{name}/" for name in service_names)
    return max([DEFAULT_BYTES, *(n for m, n in METHOD_BYTES.items() if m.startswith(prefixes))])


def _too_large(method: str, size: int, limit: int) -> str:
    return f"a request message of {size} bytes is over the {limit}-byte limit of {method}; send smaller batches"


class MessageLimitInterceptor(grpc.aio.ServerInterceptor):
    """RESOURCE_EXHAUSTED for a request message over its method's limit."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        limit = limit_for(method)
        kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}

        async def check(message: Any, context: grpc.aio.ServicerContext) -> None:
            size = message.ByteSize()
            if size > limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _too_large(method, size, limit))

        async def checked(stream: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for message in stream:
                await check(message, context)
                yield message

        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def uu(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(request, context)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(uu, **kw)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def us(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await check(request, context)
                async for item in inner_us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(us, **kw)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def su(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                return await inner_su(checked(requests, context), context)

            return grpc.stream_unary_rpc_method_handler(su, **kw)
        inner_ss = handler.stream_stream

        async def ss(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in inner_ss(checked(requests, context), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(ss, **kw)
