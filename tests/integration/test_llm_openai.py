"""The LLM gateway against OpenAI-compatible servers on loopback (testkit/openai_server.py:
the real streaming protocol, with normal, slow, stalled, malformed, erroring, dropping and
disconnect-recording variants), through real gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients.base import ServiceCallError
from clients.llm import GenerationParams, LlmClient, Passage
from embedding.local import LocalEncoder
from kernel.config import load_env
from services.llm_gateway.config import LlmGatewayConfig
from services.llm_gateway.server import create_server
from testkit.openai_server import OpenAITestServer, split_tokens

PASSAGES = [
    Passage(text="Object storage keeps data as objects in flat buckets.", chunk_id="c1", document_name="s3.md"),
    Passage(text="GPUs read objects in parallel.", chunk_id="c2", document_name="gpus.md"),
]
Q = "How does object storage keep data?"

GatewayFactory = Callable[..., Awaitable[LlmClient]]


def spec(srv: OpenAITestServer, name: str = "vllm", **limits: Any) -> dict[str, Any]:
    return {"name": name, "kind": "openai", "base_url": srv.base_url, "model": srv.model, **limits}


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Starts a gateway over the given backend specs (extractive fallback off unless asked)."""
    apps: list[Any] = []
    clients: list[LlmClient] = []

    async def factory(backends: list[dict[str, Any]], **cfg: Any) -> LlmClient:
        cfg.setdefault("extractive_fallback", False)
        config = load_env(
            LlmGatewayConfig,
            environ={},
            port=0,
            metrics_port=0,
            state_dir=str(tmp_path / f"state{len(apps)}"),
            backends=json.dumps(backends),
            **cfg,
        )
        app, port = await create_server(config, searcher=None, encoder=LocalEncoder())
        apps.append(app)
        client = LlmClient(f"127.0.0.1:{port}", timeout_s=30)
        clients.append(client)
        return client

    try:
        yield factory
    finally:
        for c in clients:
            await c.close()
        for a in apps:
            await a.stop(0)


def kinds(events: list) -> list[str]:
    """Event kinds, with consecutive token events shown once (tokens that arrive together are
    sent as one event)."""
    out: list[str] = []
    for e in events:
        k = e.WhichOneof("event")
        if not (k == "token" and out and out[-1] == "token"):
            out.append(k)
    return out


def token_count(events: list) -> int:
    return sum(e.token.count for e in events if e.WhichOneof("event") == "token")


NO_CACHE = GenerationParams(no_cache=True)


async def test_streams_tokens_with_backend_usage_and_metrics(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer(token_delay_s=0.002) as srv:
        client = await make_gateway([spec(srv)])
        evs = [e async for e in client.generate(Q, PASSAGES, params=GenerationParams(temperature=0.3, max_tokens=64))]
    k = kinds(evs)
    assert k[0] == "start" and evs[0].start.backend == "vllm" and evs[0].start.model == "test-model"
    toks = [e.token for e in evs if e.WhichOneof("event") == "token"]
    assert "".join(t.text for t in toks) == "".join(srv.tokens) and token_count(evs) == len(srv.tokens)
    assert [t.index for t in toks] == [sum(t.count for t in toks[:i]) for i in range(len(toks))]
    done = evs[-1].done
    assert done.text == "".join(srv.tokens) and done.finish_reason == "stop"
    assert [(c.number, c.chunk_id) for c in done.citations] == [(1, "c1"), (2, "c2")]
    assert k.count("citation") == 2
    assert done.usage.source == "backend" and done.usage.completion_tokens == len(srv.tokens)
    body = srv.records[0].body
    assert done.usage.prompt_tokens == sum(len(m["content"].split()) for m in body["messages"])
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 64 and body["temperature"] == 0.3 and body["model"] == "test-model"
    assert "[1] (source: s3.md)" in body["messages"][1]["content"]
    assert done.ttft_ns > 0 and done.generation_ns >= 0.002 * 1e9 * (len(toks) - 2)
    assert done.inter_token_p50_ns >= 1_500_000 and done.inter_token_p99_ns >= done.inter_token_p50_ns
    assert 50 < done.tokens_per_s < 600


async def test_without_backend_usage_counts_with_the_tokenizer(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer(send_usage=False) as srv:
        client = await make_gateway([spec(srv)])
        evs = [e async for e in client.generate(Q, PASSAGES)]
    usage = evs[-1].done.usage
    assert usage.source == "tokenizer" and usage.completion_tokens > 0 and usage.prompt_tokens > 50


async def test_max_tokens_reports_length(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer() as srv:
        client = await make_gateway([spec(srv)])
        evs = [e async for e in client.generate(Q, PASSAGES, params=GenerationParams(max_tokens=3))]
    assert evs[-1].done.finish_reason == "length" and token_count(evs) == 3


async def test_5xx_is_retried_before_the_first_token(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer(status=503, fail_first=1) as srv:
        client = await make_gateway([spec(srv, retries=1, backoff_s=0.01)])
        evs = [e async for e in client.generate(Q, PASSAGES)]
    assert kinds(evs)[-1] == "done" and [r.status for r in srv.records] == [503, 200]


async def test_failover_to_the_next_backend(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer(status=500) as bad, OpenAITestServer(model="other") as good:
        client = await make_gateway([spec(bad, "a", retries=1, backoff_s=0.01), spec(good, "b")])
        evs = [e async for e in client.generate(Q, PASSAGES)]
    assert evs[0].start.backend == "b" and evs[0].start.model == "other"
    assert len(bad.records) == 2 and len(good.records) == 1
    stages = [(s.name, s.backend) for s in evs[-1].done.timings.stages]
    assert stages.count(("backend_attempt", "a")) == 2 and ("first_token", "b") in stages


async def test_unreachable_backend_fails_over_to_the_extractive_generator(make_gateway: GatewayFactory) -> None:
    dead = {"name": "dead", "base_url": "http://127.0.0.1:1/v1", "model": "m", "retries": 0}
    client = await make_gateway([dead], extractive_fallback=True)
    evs = [e async for e in client.generate(Q, PASSAGES)]
    assert evs[0].start.backend == "extractive" and "[1]" in evs[-1].done.text


async def test_first_token_timeout_then_failover(make_gateway: GatewayFactory) -> None:
    # No wall-clock bound (a loaded machine stretches any): the slow backend was left before its
    # first token, and the answer came from the other one.
    async with OpenAITestServer(first_token_delay_s=5) as slow, OpenAITestServer() as fast:
        client = await make_gateway([spec(slow, "slow", first_token_timeout_s=0.3, retries=0), spec(fast, "fast")])
        evs = [e async for e in client.generate(Q, PASSAGES)]
        await asyncio.sleep(0.1)
        assert slow.records[0].disconnected_ns > 0  # the slow request was aborted, not left running
        assert slow.records[0].first_token_ns == 0  # before it sent a token
    assert evs[0].start.backend == "fast"


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT, "BACKEND_REJECTED"),
        (401, grpc.StatusCode.UNAVAILABLE, "BACKEND_AUTH"),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED, "BACKEND_BUSY"),
        (500, grpc.StatusCode.UNAVAILABLE, "BACKEND_HTTP_ERROR"),
    ],
)
async def test_http_errors_before_the_stream_are_clear_statuses(
    make_gateway: GatewayFactory, status: int, code: grpc.StatusCode, reason: str
) -> None:
    async with OpenAITestServer(status=status, error_message="model overloaded or misconfigured") as srv:
        client = await make_gateway([spec(srv, retries=0)])
        with pytest.raises(ServiceCallError) as info:
            [e async for e in client.generate(Q, PASSAGES)]
    assert info.value.code == code and info.value.reason == reason
    assert f"backend 'vllm' answered HTTP {status}: model overloaded or misconfigured" in info.value.message


async def test_http_error_after_retrieval_is_an_error_event(tmp_path: Path) -> None:
    """In Answer the stream has started (retrieval) when the backend fails: an error event."""
    from services.llm_gateway.domain import Passage as DPassage
    from services.llm_gateway.domain import RetrievedChunk, SearchResult

    class FixedSearcher:  # test double of the retriever
        async def search(self, *a: Any, **k: Any) -> SearchResult:
            return SearchResult(chunks=(RetrievedChunk(DPassage("Object storage keeps data.", chunk_id="c")),))

    async with OpenAITestServer(status=500) as srv:
        cfg = load_env(
            LlmGatewayConfig,
            environ={},
            port=0,
            metrics_port=0,
            state_dir=str(tmp_path),
            backends=json.dumps([spec(srv, retries=0)]),
            extractive_fallback=False,
        )
        app, port = await create_server(cfg, searcher=FixedSearcher(), encoder=LocalEncoder())
        try:
            async with LlmClient(f"127.0.0.1:{port}") as client:
                evs = [e async for e in client.answer(Q)]
        finally:
            await app.stop(0)
    assert kinds(evs) == ["retrieval", "error"]
    assert evs[-1].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "answered HTTP 500" in evs[-1].error.message


async def test_malformed_chunk_mid_stream_is_an_error_event(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer(malformed_after=2) as srv:
        client = await make_gateway([spec(srv)])
        evs = [e async for e in client.generate(Q, PASSAGES, params=NO_CACHE)]
    assert kinds(evs) == ["start", "token", "error"] and token_count(evs) == 2
    assert "sent a malformed chunk" in evs[-1].error.message and len(srv.records) == 1


async def test_dropped_connection_mid_stream_is_an_error_event(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer(drop_after=3) as srv:
        client = await make_gateway([spec(srv)])
        evs = [e async for e in client.generate(Q, PASSAGES)]
    assert kinds(evs) == ["start", "token", "error"] and token_count(evs) == 3
    assert "mid-stream" in evs[-1].error.message or "ended the stream" in evs[-1].error.message


async def test_stalled_backend_hits_the_idle_timeout_and_is_aborted(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer(stall_after=2) as srv:
        client = await make_gateway([spec(srv, idle_timeout_s=0.3)])
        t0 = time.perf_counter()
        evs = [e async for e in client.generate(Q, PASSAGES)]
        assert time.perf_counter() - t0 < 3
        await asyncio.sleep(0.1)
        assert srv.records[0].disconnected_ns > 0
    assert kinds(evs) == ["start", "token", "error"] and token_count(evs) == 2
    assert evs[-1].error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "stalled: nothing for 0.3 s" in evs[-1].error.message


async def test_caller_cancel_aborts_the_backend_request_within_100ms(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer(token_delay_s=0.05, tokens=split_tokens("word " * 200)) as srv:
        client = await make_gateway([spec(srv)])
        stream = client.generate(Q, PASSAGES)
        async with contextlib.aclosing(stream):
            got = 0
            async for ev in stream:
                got += ev.token.count if ev.WhichOneof("event") == "token" else 0
                if got >= 3:
                    break
            cancelled_ns = time.perf_counter_ns()
        deadline = time.perf_counter() + 2
        while not srv.records[0].disconnected_ns and time.perf_counter() < deadline:
            await asyncio.sleep(0.002)
        rec = srv.records[0]
    assert rec.disconnected_ns, "the backend never saw the disconnect"
    assert (rec.disconnected_ns - cancelled_ns) / 1e6 < 100
    assert not rec.completed and rec.tokens_sent < 20


async def test_concurrency_limit_gives_resource_exhausted(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer(stall_after=1) as srv:
        client = await make_gateway([spec(srv, max_concurrency=1, idle_timeout_s=10)])
        first = client.generate(Q, PASSAGES)
        async with contextlib.aclosing(first):
            assert (await anext(first)).WhichOneof("event") == "start"
            with pytest.raises(ServiceCallError) as info:
                [e async for e in client.generate(Q, PASSAGES)]
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "concurrency limit" in info.value.message
        assert len(srv.records) == 1


async def test_api_key_is_sent_and_never_logged(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("TEST_LLM_KEY", secret)
    caplog.set_level(logging.DEBUG)
    async with OpenAITestServer(api_key=secret) as good, OpenAITestServer(api_key="other") as wrong:
        client = await make_gateway([spec(good, "good", api_key_env="TEST_LLM_KEY")])
        evs = [e async for e in client.generate(Q, PASSAGES)]
        assert kinds(evs)[-1] == "done"
        assert good.records[0].headers["Authorization"] == f"Bearer {secret}"
        keyfile = tmp_path / "key"
        keyfile.write_text(secret)
        client2 = await make_gateway([spec(wrong, "wrong", retries=0, api_key_file=str(keyfile))])
        with pytest.raises(ServiceCallError) as info:
            [e async for e in client2.generate(Q, PASSAGES)]
        assert info.value.reason == "BACKEND_AUTH"
    assert secret not in str(info.value) and secret not in caplog.text


async def test_cache_hit_skips_the_backend(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer() as srv:
        client = await make_gateway([spec(srv)])
        a = [e async for e in client.generate(Q, PASSAGES)]
        b = [e async for e in client.generate(Q, PASSAGES)]
        c = [e async for e in client.generate(Q, PASSAGES, params=GenerationParams(temperature=0.5))]
    assert len(srv.records) == 2  # the third differs in temperature: a miss
    assert not a[0].start.cache_hit and b[0].start.cache_hit and not c[0].start.cache_hit
    assert b[-1].done.text == a[-1].done.text and b[-1].done.usage == a[-1].done.usage
    stages = [st.name for st in b[-1].done.timings.stages]
    assert "cache_lookup" in stages and "first_token" not in stages


async def test_list_models_in_failover_order(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer() as srv:
        s = spec(srv, "vllm")
        s["models"] = ["second-model"]
        client = await make_gateway([s], extractive_fallback=True)
        models = (await client.list_models()).models
        evs = [e async for e in client.generate(Q, PASSAGES, params=GenerationParams(model="second-model"))]
    assert [(m.id, m.backend, m.kind, m.priority) for m in models] == [
        ("test-model", "vllm", "openai", 0),
        ("second-model", "vllm", "openai", 0),
        ("extractive-v1", "extractive", "extractive", 1),
    ]
    assert evs[0].start.model == "second-model" and srv.records[0].body["model"] == "second-model"


async def test_tokens_that_arrive_together_are_sent_together(make_gateway: GatewayFactory) -> None:
    """A reader slower than the backend gets fewer, larger token events, never lost tokens."""
    tokens = [f"w{i} " for i in range(3000)]
    async with OpenAITestServer(tokens=tokens) as srv:
        client = await make_gateway([spec(srv)])
        evs = []
        async for ev in client.generate(Q, PASSAGES, params=GenerationParams(max_tokens=4000)):
            evs.append(ev)
            if len(evs) == 2:
                await asyncio.sleep(0.2)  # a slow reader: the backend's tokens pile up meanwhile
    toks = [e.token for e in evs if e.WhichOneof("event") == "token"]
    assert "".join(t.text for t in toks) == "".join(tokens) == evs[-1].done.text
    assert token_count(evs) == 3000 == evs[-1].done.usage.completion_tokens
    assert max(t.count for t in toks) > 1 and len(toks) < 3000
    assert [t.index for t in toks] == [sum(t.count for t in toks[:i]) for i in range(len(toks))]


async def test_connect_timeout_then_failover(make_gateway: GatewayFactory) -> None:
    """A listener whose backlog is full never completes the TCP handshake: connect times out."""
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(hole.getsockname())
        fillers.append(c)
    try:
        async with OpenAITestServer() as good:
            dead = {
                "name": "hole",
                "base_url": f"http://127.0.0.1:{hole.getsockname()[1]}/v1",
                "model": "m",
                "connect_timeout_s": 0.3,
                "retries": 0,
            }
            client = await make_gateway([dead, spec(good, "good")])
            t0 = time.perf_counter()
            evs = [e async for e in client.generate(Q, PASSAGES)]
            assert evs[0].start.backend == "good" and time.perf_counter() - t0 < 3
            client2 = await make_gateway([dead])
            with pytest.raises(ServiceCallError) as info:
                [e async for e in client2.generate(Q, PASSAGES)]
        assert info.value.reason == "BACKEND_UNREACHABLE" and "within 0.3 s" in info.value.message
    finally:
        for c in fillers:
            c.close()
        hole.close()


async def test_caller_deadline_ends_the_call_and_aborts_the_backend(make_gateway: GatewayFactory) -> None:
    async with OpenAITestServer(first_token_delay_s=5) as srv:
        client = await make_gateway([spec(srv, first_token_timeout_s=30)])
        t0 = time.perf_counter()
        with pytest.raises(ServiceCallError) as info:
            [e async for e in client.generate(Q, PASSAGES, timeout=0.5)]
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and time.perf_counter() - t0 < 2
        deadline = time.perf_counter() + 2
        while not srv.records[0].disconnected_ns and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        assert srv.records[0].disconnected_ns, "the backend request outlived the caller's deadline"
