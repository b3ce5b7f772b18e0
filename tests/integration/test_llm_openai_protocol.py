"""The LLM gateway's Prometheus metrics over OpenAI-compatible test servers, and proof that the
test server (testkit/openai_server.py) speaks what the official `openai` client reads."""

from __future__ import annotations

import json
from pathlib import Path

from clients.llm import GenerationParams, LlmClient
from embedding.local import LocalEncoder
from kernel.config import load_env
from services.llm_gateway.config import LlmGatewayConfig
from services.llm_gateway.server import create_server
from testkit.openai_server import OpenAITestServer
from tests.integration.test_llm_openai import PASSAGES, Q, spec


async def test_prometheus_metrics_follow_streams_and_failures(tmp_path: Path) -> None:
    async with OpenAITestServer(status=500) as bad, OpenAITestServer() as good:
        cfg = load_env(
            LlmGatewayConfig,
            environ={},
            port=0,
            metrics_port=0,
            state_dir=str(tmp_path),
            backends=json.dumps([spec(bad, "a", retries=0), spec(good, "b")]),
            extractive_fallback=False,
        )
        app, port = await create_server(cfg, searcher=None, encoder=LocalEncoder())
        try:
            async with LlmClient(f"127.0.0.1:{port}") as client:
                [e async for e in client.generate(Q, PASSAGES)]  # a fails, b answers (not cached:
                # only the first choice's answers are, so an outage does not freeze fallbacks in)
                pinned = GenerationParams(backend="b")
                [e async for e in client.generate(Q, PASSAGES, params=pinned)]
                [e async for e in client.generate(Q, PASSAGES, params=pinned)]  # a cache hit
        finally:
            await app.stop(0)
    reg = app.metrics.registry
    assert (
        reg.get_sample_value("llm_gateway_backend_failures_total", {"backend": "a", "reason": "BACKEND_HTTP_ERROR"})
        == 1
    )
    assert reg.get_sample_value("llm_gateway_streams_total", {"backend": "b", "outcome": "done"}) == 2
    assert reg.get_sample_value("llm_gateway_streams_total", {"backend": "b", "outcome": "cache_hit"}) == 1
    assert reg.get_sample_value("llm_gateway_ttft_seconds_count", {"backend": "b"}) == 2
    completion = reg.get_sample_value("llm_gateway_tokens_total", {"backend": "b", "kind": "completion"})
    assert completion == 2 * len(good.tokens)
    assert reg.get_sample_value("llm_gateway_requests_total", {"method": "Generate", "code": "OK"}) == 3
    assert len(bad.records) == 1 and len(good.records) == 2
    # The standard names: gRPC semantic conventions (server and this process's client) and GenAI.
    generate = "ddnrag.llm.v1.LlmService/Generate"
    server = {"grpc_method": generate, "grpc_status": "OK"}
    assert reg.get_sample_value("grpc_server_call_duration_seconds_count", server) == 3
    client = {"grpc_method": generate, "grpc_status": "OK", "grpc_target": f"127.0.0.1:{port}"}
    assert reg.get_sample_value("grpc_client_attempt_duration_seconds_count", client) == 3
    gen_ai = {"gen_ai_request_model": good.model, "backend": "b"}
    assert reg.get_sample_value("gen_ai_server_time_to_first_token_seconds_count", gen_ai) == 2
    assert reg.get_sample_value("gen_ai_server_time_per_output_token_seconds_count", gen_ai) == 2


async def test_the_test_server_speaks_what_the_official_openai_client_reads() -> None:
    """The double is only as good as its protocol: the `openai` package reads it as a real server."""
    import openai

    async with OpenAITestServer(api_key="sk-x") as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-x", max_retries=0)
        try:
            stream = await client.chat.completions.create(
                model="test-model",
                messages=[{"role": "user", "content": "hi there"}],
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=4,
            )
            text, finish, usage = "", None, None
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
                if chunk.usage:
                    usage = chunk.usage
        finally:
            await client.close()
    assert text == "".join(srv.tokens[:4]) and finish == "length"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (2, 4)
