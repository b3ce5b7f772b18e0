"""The LLM gateway over real gRPC: Answer (retrieve-then-generate) against a retriever test
double (a real grpc.aio RetrieverService returning fixed chunks, reached through the real
RetrieverClient), Generate, ListModels, the cache RPCs, bad input, and health/reflection.

The extractive generator embeds with the packaged MiniLM model in-process
(DDNRAG_LLM_GATEWAY_EMBEDDER_ADDR=local)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.base import ServiceCallError
from clients.llm import GenerationParams, LlmClient, Passage
from ddnrag.common.v1 import common_pb2
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
from ddnrag.retriever.v1 import retriever_service_pb2_grpc as rpb_grpc
from kernel.config import load_env
from services.llm_gateway.config import LlmGatewayConfig
from services.llm_gateway.server import create_server

CHUNKS = [
    common_pb2.ScoredChunk(
        chunk_id="c-gpu",
        document_id="d1",
        document_name="gpus.md",
        collection="default",
        object_key="chunks/default/c-gpu",
        text="GPUs have thousands of small cores that run the same instruction on many values at once. "
        "That makes them fast at matrix multiplication.",
        score=0.91,
        dense_rank=1,
        status=status_pb2.Status(code=0),
    ),
    common_pb2.ScoredChunk(
        chunk_id="c-missing",
        document_id="d2",
        document_name="gone.md",
        collection="default",
        object_key="chunks/default/c-missing",
        text="",
        score=0.5,
        status=status_pb2.Status(code=5, message="chunk object is missing"),
    ),
    common_pb2.ScoredChunk(
        chunk_id="c-s3",
        document_id="d3",
        document_name="object-storage.md",
        collection="default",
        object_key="chunks/default/c-s3",
        text="Object storage keeps data as objects in flat buckets. Each object has a key and metadata.",
        score=0.4,
        bm25_rank=2,
        status=status_pb2.Status(code=0),
    ),
]


class RetrieverDouble(rpb_grpc.RetrieverServiceServicer):
    """Test double of the retriever: Search returns CHUNKS, NOT_FOUND for collection "missing"."""

    def __init__(self) -> None:
        self.requests: list[rpb.SearchRequest] = []

    async def Search(self, request: rpb.SearchRequest, context: grpc.aio.ServicerContext) -> rpb.SearchResponse:
        self.requests.append(request)
        if request.collection == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "collection 'missing' does not exist")
        stage = common_pb2.StageTiming(name="fetch", duration_ns=1000, backend="seaweed", ttfb_ns=500, count=2)
        return rpb.SearchResponse(
            chunks=CHUNKS[: request.top_k or 5],
            index_version="v7",
            timings=common_pb2.Timings(total_ns=5000, stages=[stage], stages_sum_ns=1000),
        )


@pytest.fixture
async def retriever() -> AsyncIterator[tuple[RetrieverDouble, int]]:
    server = grpc.aio.server()
    double = RetrieverDouble()
    rpb_grpc.add_RetrieverServiceServicer_to_server(double, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield double, port
    finally:
        await server.stop(0)


@pytest.fixture
async def gateway(retriever: tuple[RetrieverDouble, int], tmp_path: Path) -> AsyncIterator[tuple[LlmClient, int]]:
    cfg = load_env(
        LlmGatewayConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path / "state"),
        retriever_addr=f"127.0.0.1:{retriever[1]}",
        embedder_addr="local",
    )
    app, port = await create_server(cfg)
    client = LlmClient(f"127.0.0.1:{port}", timeout_s=60)
    try:
        yield client, port
    finally:
        await client.close()
        await app.stop(0)


def kinds(events: list) -> list[str]:
    return [e.WhichOneof("event") for e in events]


async def test_answer_streams_retrieval_tokens_citations_done(
    gateway: tuple[LlmClient, int], retriever: tuple[RetrieverDouble, int]
) -> None:
    client, _ = gateway
    evs = [
        e
        async for e in client.answer(
            "Why are GPUs fast at matrix multiplication?", top_k=3, filters={"lang": "en"}, storage_backend="ddn"
        )
    ]
    k = kinds(evs)
    assert k[0] == "retrieval" and k[1] == "start" and k[-1] == "done"
    # Tokens ready together travel together (coalesce.py, at most 64 pieces a message): the
    # extractive answer is made at once, so it leaves in one message.
    assert k.count("token") == 1 and "citation" in k
    r = evs[0].retrieval
    assert [c.chunk_id for c in r.chunks] == ["c-gpu", "c-missing", "c-s3"]
    assert r.index_version == "v7" and r.timings.stages[0].ttfb_ns == 500
    assert r.chunks[1].status.code == 5  # passed through, but not used as a passage
    req = retriever[0].requests[0]
    assert (req.collection, req.top_k, req.backend, dict(req.filters)) == ("default", 3, "ddn", {"lang": "en"})

    done = evs[-1].done
    text = "".join(e.token.text for e in evs if e.WhichOneof("event") == "token")
    assert done.text == text and "[1]" in text and "matrix multiplication" in text
    cite = done.citations[0]
    assert (cite.number, cite.document_name, cite.chunk_id, cite.object_key) == (
        1,
        "gpus.md",
        "c-gpu",
        "chunks/default/c-gpu",
    )
    assert [e.citation for e in evs if e.WhichOneof("event") == "citation"] == list(done.citations)
    assert done.usage.source == "tokenizer" and done.usage.completion_tokens > 5 and done.usage.prompt_tokens > 20
    assert 0 < done.ttft_ns <= done.rag_ttft_ns
    assert done.finish_reason == "stop"
    names = [s.name for s in done.timings.stages]
    assert names[:2] == ["retrieve", "prompt"] and "generate" in names
    assert done.timings.stages_sum_ns <= done.timings.total_ns


async def test_answer_cache_hit_is_flagged_and_purge_empties_it(gateway: tuple[LlmClient, int]) -> None:
    client, _ = gateway
    q = "How does object storage keep data?"
    first = [e async for e in client.answer(q)]
    second = [e async for e in client.answer(q)]
    assert not first[1].start.cache_hit and second[1].start.cache_hit
    assert second[-1].done.text == first[-1].done.text
    stats = await client.cache_stats()
    assert (stats.entries, stats.hits) == (1, 1) and stats.size_bytes > 0
    assert (await client.purge_cache()).removed == 1
    third = [e async for e in client.answer(q)]
    assert not third[1].start.cache_hit


async def test_answer_errors_before_the_stream_are_statuses(gateway: tuple[LlmClient, int]) -> None:
    client, _ = gateway
    with pytest.raises(ServiceCallError) as info:
        [e async for e in client.answer("  ")]
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.reason == "EMPTY_QUESTION"
    with pytest.raises(ServiceCallError) as info:
        [e async for e in client.answer("q", top_k=50)]
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "top_k" in info.value.message
    with pytest.raises(ServiceCallError) as info:
        [e async for e in client.answer("q", collection="missing")]
    assert info.value.code == grpc.StatusCode.NOT_FOUND and "missing" in info.value.message
    with pytest.raises(ServiceCallError) as info:
        [e async for e in client.answer("q", params=GenerationParams(backend="gpt-9"))]
    assert info.value.code == grpc.StatusCode.NOT_FOUND and info.value.reason == "UNKNOWN_BACKEND"


async def test_answer_with_the_retriever_down_is_unavailable_naming_it(tmp_path: Path) -> None:
    cfg = load_env(
        LlmGatewayConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path),
        retriever_addr="127.0.0.1:1",
        embedder_addr="local",
        retrieval_timeout_s=2.0,
    )
    app, port = await create_server(cfg)
    try:
        async with LlmClient(f"127.0.0.1:{port}") as client:
            with pytest.raises(ServiceCallError) as info:
                [e async for e in client.answer("q")]
        assert info.value.code == grpc.StatusCode.UNAVAILABLE and "retriever" in info.value.message
    finally:
        await app.stop(0)


async def test_generate_over_given_passages(gateway: tuple[LlmClient, int]) -> None:
    client, _ = gateway
    ps = [
        Passage(text="Bananas are yellow fruit that grow in bunches.", chunk_id="b", document_name="fruit.md"),
        Passage(text="A bucket is a container for objects in object storage.", chunk_id="k", document_name="s3.md"),
    ]
    evs = [e async for e in client.generate("What is a bucket?", ps)]
    assert kinds(evs)[0] == "start" and evs[0].start.backend == "extractive"
    done = evs[-1].done
    # Passage 2 answers; citations are numbered in order of appearance, so it is cited as [1].
    assert done.text == "A bucket is a container for objects in object storage [1]."
    assert [(c.number, c.chunk_id) for c in done.citations] == [(1, "k")]
    evs = [e async for e in client.generate("Who won the 1998 World Cup?", ps)]
    assert "do not answer" in evs[-1].done.text and not evs[-1].done.citations


async def test_leaving_the_stream_early_cancels_it(gateway: tuple[LlmClient, int]) -> None:
    client, _ = gateway
    ps = [Passage(text="A bucket is a container for objects in object storage.", chunk_id="k")]
    stream = client.generate("What is a bucket?", ps, params=GenerationParams(no_cache=True))
    async with contextlib.aclosing(stream):
        first = await anext(stream)
        assert first.WhichOneof("event") == "start"
    # The channel still works and the gateway holds no slot for the abandoned stream.
    evs = [e async for e in client.generate("What is a bucket?", ps)]
    assert kinds(evs)[-1] == "done"


async def test_list_models_health_and_reflection(gateway: tuple[LlmClient, int]) -> None:
    client, port = gateway
    models = (await client.list_models()).models
    assert [(m.id, m.backend, m.kind, m.priority) for m in models] == [("extractive-v1", "extractive", "extractive", 0)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="ddnrag.llm.v1.LlmService")
        )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_generate_with_the_embedder_down_is_unavailable_naming_it(tmp_path: Path) -> None:
    cfg = load_env(
        LlmGatewayConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path),
        embedder_addr="127.0.0.1:1",
    )
    app, port = await create_server(cfg)
    try:
        async with LlmClient(f"127.0.0.1:{port}") as client:
            with pytest.raises(ServiceCallError) as info:
                [
                    e
                    async for e in client.generate(
                        "What is a bucket?", [Passage(text="A bucket holds the objects of one tenant.")]
                    )
                ]
        assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.reason == "EMBEDDER_FAILED"
        assert "embedder service at 127.0.0.1:1" in info.value.message
    finally:
        await app.stop(0)
