"""The embedder over real gRPC: a real server on 127.0.0.1:0 with the real model (torch
backend, so results can be compared with sentence-transformers itself)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.base import ServiceCallError
from clients.embedder import EmbedderClient
from ddnrag.embedder.v1 import embedder_service_pb2 as pb
from ddnrag.embedder.v1 import embedder_service_pb2_grpc as pb_grpc
from embedding.packaged import packaged_model_dir
from kernel.config import load_env
from kernel.server import GrpcApp
from services.embedder.config import EmbedderConfig
from services.embedder.server import create_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = 8


async def wait_serving(port: int, timeout_s: float = 120.0) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            r = await health.Check(health_pb2.HealthCheckRequest(service="ddnrag.embedder.v1.EmbedderService"))
            if r.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.1)
    raise TimeoutError("the embedder did not become SERVING")


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(packaged_model_dir()), device="cpu", local_files_only=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[GrpcApp, int]]:
    cfg = load_env(
        EmbedderConfig,
        environ={},
        port=0,
        metrics_port=0,
        backend="torch",
        state_dir=str(tmp_path_factory.mktemp("embedder-state")),
        max_batch_texts=LIMIT,
        max_queue_texts=16,
    )
    app, port = await create_server(cfg)
    # Straight after start the model is still loading: health says NOT_SERVING and Embed says
    # UNAVAILABLE (the load takes seconds, so this is not a race in practice).
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        status = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pb_grpc.EmbedderServiceStub(ch).Embed(pb.EmbedRequest(texts=["x"]))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "loading" in (err.value.details() or "")
    await wait_serving(port)
    try:
        yield app, port
    finally:
        await app.stop(0)


@pytest_asyncio.fixture(loop_scope="module")
async def client(server: tuple[GrpcApp, int]) -> AsyncIterator[EmbedderClient]:
    c = EmbedderClient(f"127.0.0.1:{server[1]}", timeout_s=60)
    try:
        yield c
    finally:
        await c.close()


async def test_info(client: EmbedderClient) -> None:
    info = await client.info()
    assert info.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert (info.dimension, info.max_sequence_length) == (384, 256)
    assert (info.device, info.dtype, info.backend) == ("cpu", "float32", "torch")
    assert info.max_batch_texts == LIMIT
    assert info.max_batch_tokens >= 256


async def test_embed_matches_sentence_transformers(client: EmbedderClient, st_model) -> None:
    texts = ["DDN Infinia is an object store.", "GPUs run transformer models.", "A third, unrelated sentence."]
    res = await client.embed(texts)
    got = np.array([e.values for e in res.embeddings], dtype=np.float32)
    ref = st_model.encode(texts, normalize_embeddings=True)
    assert got.shape == (3, 384) and res.dimension == 384
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(got * ref, axis=1))) > 0.9999
    assert [e.tokens for e in res.embeddings] == [len(st_model.tokenize([t])["input_ids"][0]) for t in texts]
    assert res.metadata.compute_tokens == sum(e.tokens for e in res.embeddings)
    assert res.metadata.inference_time_ns > 0
    assert res.timings.total_ns >= res.timings.stages_sum_ns > 0
    assert {"tokenize", "queue", "inference"} <= {s.name for s in res.timings.stages}


async def test_empty_string_is_the_cls_sep_embedding(client: EmbedderClient, st_model) -> None:
    res = await client.embed([""])
    e = res.embeddings[0]
    assert e.tokens == 2 and not e.truncated
    ref = st_model.encode([""], normalize_embeddings=True)[0]
    assert float(np.dot(np.array(e.values), ref)) > 0.9999


async def test_bad_input(client: EmbedderClient) -> None:
    with pytest.raises(ServiceCallError) as err:
        await client.embed([])
    assert (err.value.code, err.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_INPUT")
    with pytest.raises(ServiceCallError) as err:
        await client.embed(["a"] * (LIMIT + 1))
    assert (err.value.code, err.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_TEXTS")
    assert f"limit is {LIMIT}" in err.value.message and err.value.metadata["limit"] == str(LIMIT)


async def test_truncate_flag(client: EmbedderClient, st_model) -> None:
    long_text = "storage " * 400
    res = await client.embed(["short", long_text], truncate=True)
    assert [e.truncated for e in res.embeddings] == [False, True]
    assert res.embeddings[1].tokens == 256
    ref = st_model.encode([long_text], normalize_embeddings=True)[0]  # sentence-transformers cuts too
    assert float(np.dot(np.array(res.embeddings[1].values), ref)) > 0.9999
    with pytest.raises(ServiceCallError) as err:
        await client.embed(["short", "fine", long_text + " different"], truncate=False)
    assert (err.value.code, err.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TEXT_TOO_LONG")
    assert "text 2" in err.value.message and "256" in err.value.message
    # A cached truncated text is refused just the same without truncate.
    with pytest.raises(ServiceCallError):
        await client.embed([long_text], truncate=False)


async def test_cache_hits_skip_the_model(client: EmbedderClient) -> None:
    await client.purge_cache()
    before = await client.cache_stats()
    texts = ["cache me once", "cache me twice"]
    first = await client.embed(texts)
    second = await client.embed(texts)
    assert [e.cache_hit for e in first.embeddings] == [False, False]
    assert [e.cache_hit for e in second.embeddings] == [True, True]
    assert second.metadata.cache_hits == 2 and second.metadata.compute_tokens == 0
    assert second.metadata.inference_time_ns == 0
    assert [list(e.values) for e in first.embeddings] == [list(e.values) for e in second.embeddings]
    assert [e.tokens for e in first.embeddings] == [e.tokens for e in second.embeddings]
    after = await client.cache_stats()
    assert after.entries == 2 and after.size_bytes > 2 * 384 * 4
    assert after.hits - before.hits == 2 and after.misses - before.misses == 2
    assert (await client.purge_cache()).removed == 2
    assert (await client.cache_stats()).entries == 0
    third = await client.embed(texts)
    assert [e.cache_hit for e in third.embeddings] == [False, False]


async def test_embed_array_splits_by_the_limit(client: EmbedderClient, st_model) -> None:
    texts = [f"sentence number {i} about object storage" for i in range(3 * LIMIT + 3)]
    arr = await client.embed_array(texts)
    assert arr.shape == (len(texts), 384) and arr.dtype == np.float32
    ref = st_model.encode(texts, normalize_embeddings=True)
    assert float(np.min(np.sum(arr * ref, axis=1))) > 0.9999
    assert (await client.embed_array([])).shape == (0, 384)


async def test_embed_stream_preserves_order(client: EmbedderClient, st_model) -> None:
    batches = [[f"stream {b} item {i} " + "word " * (b * 7 % 40) for i in range(1 + b % LIMIT)] for b in range(12)]

    async def source() -> AsyncIterator[list[str]]:
        for b in batches:
            yield b

    got = [r async for r in client.embed_stream(source())]
    assert [r.request_id for r in got] == [str(i) for i in range(len(batches))]
    for batch, r in zip(batches, got, strict=True):
        assert len(r.embeddings) == len(batch)
        ref = st_model.encode(batch, normalize_embeddings=True)
        vec = np.array([e.values for e in r.embeddings])
        assert float(np.min(np.sum(vec * ref, axis=1))) > 0.9999
        assert r.timings.total_ns > 0


async def test_embed_stream_bad_message_ends_stream(client: EmbedderClient) -> None:
    async def source() -> AsyncIterator[list[str]]:
        yield ["fine"]
        yield []

    got = []
    with pytest.raises(ServiceCallError) as err:
        async for r in client.embed_stream(source()):
            got.append(r)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(got) == 1


async def test_overload_is_resource_exhausted_and_service_survives(client: EmbedderClient) -> None:
    # Queue of 16 texts, 8 per request: 12 concurrent distinct requests cannot all fit.
    reqs = [[f"overload {r} {i} " + "padding " * 60 for i in range(LIMIT)] for r in range(12)]
    results = await asyncio.gather(*(client.embed(t) for t in reqs), return_exceptions=True)
    refused = [r for r in results if isinstance(r, ServiceCallError)]
    served = [r for r in results if isinstance(r, pb.EmbedResponse)]
    assert refused and served and len(refused) + len(served) == 12
    assert all(e.code == grpc.StatusCode.RESOURCE_EXHAUSTED and e.reason == "EMBEDDER_QUEUE_FULL" for e in refused)
    ok = await client.embed(["still alive"])
    assert len(ok.embeddings) == 1


async def test_state_dir_holds_the_cache(server: tuple[GrpcApp, int], tmp_path_factory) -> None:
    # The cache file lives under the configured state dir, in WAL mode.
    import sqlite3

    def journal_mode() -> str:
        roots = list(Path(tmp_path_factory.getbasetemp()).glob("embedder-state*/embedding_cache.sqlite3"))
        assert roots
        return sqlite3.connect(roots[0]).execute("PRAGMA journal_mode").fetchone()[0]

    mode = await asyncio.to_thread(journal_mode)
    assert mode == "wal"
