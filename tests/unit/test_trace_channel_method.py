"""A traced channel's multi-callables keep their method name, which the clients' call metrics
(`grpc_client_attempt_duration_seconds{grpc_method}`) label: the Prometheus test found every
upstream call of the gateway recorded under an empty method once tracing wrapped the channels."""

from __future__ import annotations

import grpc

from kernel.metrics import method_of
from kernel.trace_grpc import TracedChannel


async def test_a_traced_multicallable_keeps_its_method_name() -> None:
    channel = TracedChannel(grpc.aio.insecure_channel("127.0.0.1:9"))
    try:
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            call = getattr(channel, kind)("/ddnrag.llm.v1.LlmService/Answer")
            assert method_of(call) == "ddnrag.llm.v1.LlmService/Answer", kind
    finally:
        await channel.close()
