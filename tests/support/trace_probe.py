"""`python -m tests.support.trace_probe TRACEPARENT`: one process that sets tracing up from its
OTEL_* variables (kernel/tracing.py), serves an echo service of each gRPC call type on a loopback
port and calls each through `kernel.tls.aio_channel`, inside the trace TRACEPARENT names. Prints
one JSON line: each call's trailing `x-trace-id`. Its spans go to the OTLP endpoint it was given.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import grpc

from kernel import tracing
from kernel.errors import not_found
from kernel.metrics import Metrics
from kernel.server import ObservingInterceptor
from kernel.tls import aio_channel

SERVICE = "probe.v1.EchoService"


async def unary(req: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
    if req == b"missing":
        await ctx.abort_with_status(not_found("no such thing").to_grpc_status())
    return req


async def server_stream(req: bytes, ctx: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for _ in range(3):
        yield req


async def client_stream(reqs: AsyncIterator[bytes], ctx: grpc.aio.ServicerContext) -> bytes:
    return b"".join([r async for r in reqs])


async def bidi(reqs: AsyncIterator[bytes], ctx: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for r in reqs:
        yield r


async def main(traceparent: str) -> None:
    tracing.setup_tracing("probe")
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    # The interceptor every service's server has (kernel/server.py), tracing in it once set up.
    server = grpc.aio.server(interceptors=[ObservingInterceptor(Metrics("probe"), tracing=tracing.installed())])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = aio_channel(f"127.0.0.1:{port}", [])
    out: dict[str, str] = {}

    async def two() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    with tracing.span("probe", parent=tracing.extract({"traceparent": traceparent})):
        calls = {
            "Unary": channel.unary_unary(f"/{SERVICE}/Unary")(b"x"),
            "ServerStream": channel.unary_stream(f"/{SERVICE}/ServerStream")(b"x"),
            "ClientStream": channel.stream_unary(f"/{SERVICE}/ClientStream")(two()),
            "Bidi": channel.stream_stream(f"/{SERVICE}/Bidi")(two()),
        }
        for name, call in calls.items():
            if name in ("ServerStream", "Bidi"):
                [_ async for _ in call]
            else:
                await call
            out[name] = dict(await call.trailing_metadata()).get(tracing.TRACE_ID_KEY, "")
        failing = channel.unary_unary(f"/{SERVICE}/Unary")(b"missing")
        try:
            await failing
        except grpc.aio.AioRpcError as err:
            out["error_code"] = err.code().name
            out["error"] = dict(err.trailing_metadata() or ()).get(tracing.TRACE_ID_KEY, "")
    await channel.close()
    await server.stop(0)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
