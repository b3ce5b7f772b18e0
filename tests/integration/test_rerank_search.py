"""The rerank stage inside the retriever service: over real gRPC, configured by its variables,
against a local TEI-protocol server; scores, the `rerank` timing stage and the fail modes show
in the SearchResponse."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.base import ServiceCallError
from clients.retriever import RetrieverClient
from kernel.config import load_env
from services.retriever.config import RetrieverConfig
from services.retriever.server import create_server
from tests.support.rerank_server import RerankTestServer
from tests.support.retriever_doubles import DictStore, HashingEncoder

DOCS = {
    "a": "Latency of object storage: object storage serves small objects.",
    "b": "TTFB first byte latency matters: time to first byte of object storage decides latency.",
    "c": "Bread needs flour and yeast.",
}


async def _retriever(tmp: Path, rr: RerankTestServer, **cfg: object) -> tuple[object, RetrieverClient]:
    config = load_env(
        RetrieverConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(tmp),
        embedder_addr="unused:1",
        storage_addr="unused:1",
        chunk_size_tokens=64,
        rerank="tei",
        rerank_url=rr.url,
        rerank_top_n=3,
        **cfg,
    )
    app, port = await create_server(config, store=DictStore(), encoder=HashingEncoder())
    await app.ready_task  # type: ignore[attr-defined]
    client = RetrieverClient(f"127.0.0.1:{port}")
    for d, text in DOCS.items():
        await app.retriever.store.put_many([(f"docs/kb/{d}/{d}.txt", text.encode())])  # type: ignore[attr-defined]
    async for _ in client.ingest("kb", [f"docs/kb/{d}/{d}.txt" for d in DOCS]):
        pass
    return app, client


@pytest.fixture
async def rr() -> AsyncIterator[RerankTestServer]:
    srv = await RerankTestServer().start()
    yield srv
    await srv.stop()


async def test_search_is_reranked_and_says_so(tmp_path: Path, rr: RerankTestServer) -> None:
    app, client = await _retriever(tmp_path, rr)
    try:
        q = "ttfb first byte latency"
        plain = await client.search("kb", q, top_k=2, no_rerank=True)
        assert not plain.HasField("rerank") and not plain.chunks[0].HasField("rerank_score")
        res = await client.search("kb", q, top_k=2)
        assert res.rerank.status == "ok" and res.rerank.scored == 3 and res.rerank.backend.startswith("tei:")
        assert len(res.chunks) == 2 and res.chunks[0].document_id == "b"
        assert res.chunks[0].rerank_score >= res.chunks[1].rerank_score
        stage = next(s for s in res.timings.stages if s.name == "rerank")
        assert stage.count == 3 and stage.duration_ns > 0
        assert len(rr.bodies[-1]["texts"]) == 3  # fusion handed the reranker its top 3

        # The reranker goes down: fusion order, the reason shown, no scores.
        rr.status = 503
        res = await client.search("kb", q, top_k=2, no_cache=True)
        assert res.rerank.status == "fallback" and "HTTP 503" in res.rerank.message
        assert [c.document_id for c in res.chunks] == [c.document_id for c in plain.chunks]
        assert not any(c.HasField("rerank_score") for c in res.chunks)
    finally:
        await client.close()
        await app.stop(0)  # type: ignore[attr-defined]


async def test_fail_mode_error_is_unavailable(tmp_path: Path, rr: RerankTestServer) -> None:
    app, client = await _retriever(tmp_path, rr, rerank_fail_mode="error")
    try:
        rr.malformed = "missing_index"
        with pytest.raises(ServiceCallError) as err:
            await client.search("kb", "object storage latency", top_k=2)
        assert err.value.reason == "RERANK_FAILED" and "got no score" in err.value.message
    finally:
        await client.close()
        await app.stop(0)  # type: ignore[attr-defined]
