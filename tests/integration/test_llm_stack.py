"""Answer over the real services: SeaweedFS, the storage service, the embedder with the real model,
the retriever, and the llm_gateway (whose extractive generator embeds through the embedder
service) all on 127.0.0.1:0, with no doubles anywhere."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clients.embedder import EmbedderClient
from clients.llm import LlmClient
from clients.retriever import RetrieverClient
from clients.storage import StorageClient
from ddnrag.llm.v1 import llm_service_pb2 as lpb
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
from kernel.config import load_env
from kernel.pb import sentence_vectors_from_pb
from kernel.sentences import sentence_key, whole_sentences
from services.llm_gateway.adapters import EmbedderEncoder, RetrieverSearcher
from services.llm_gateway.config import LlmGatewayConfig
from services.llm_gateway.server import create_server as create_llm
from testkit.services import Ports, rag_services
from tests.conftest import S3Server

GPUS = (
    "# GPUs\n\nA graphics processing unit runs thousands of threads in parallel. Tensor cores multiply "
    "matrices in mixed precision, which is why GPUs train and serve neural networks quickly.\n"
)
STORAGE = (
    "Object storage keeps data as objects in buckets, addressed by key. DDN Infinia and Amazon S3 speak "
    "the S3 protocol; time to first byte decides how fast a small object comes back."
)


async def test_answer_through_the_real_retriever_and_embedder(seaweed: S3Server, tmp_path: Path) -> None:
    bucket = f"llm-{random.randrange(10**6)}"
    seaweed.boto3_client().create_bucket(Bucket=bucket)
    creds = (seaweed.access_key_id, seaweed.secret_access_key)
    clients = []
    async with rag_services(seaweed.endpoint, bucket, *creds, tmp_path, llm_storage=False) as ports:
        sport, rport, lport = ports.storage, ports.retriever, ports.llm_gateway
        try:
            storage = StorageClient(f"127.0.0.1:{sport}", timeout_s=30)
            retriever = RetrieverClient(f"127.0.0.1:{rport}", timeout_s=60)
            llm = LlmClient(f"127.0.0.1:{lport}", timeout_s=60)
            clients += [storage, retriever, llm]
            await storage.put("docs/llm/gpus/gpus.md", GPUS.encode())
            await storage.put("docs/llm/store/storage.txt", STORAGE.encode())
            job = [e async for e in retriever.ingest("llm", ["docs/llm/gpus/gpus.md", "docs/llm/store/storage.txt"])][
                -1
            ].job
            assert job.state == rpb.JOB_STATE_SUCCEEDED, job

            evs = [
                e async for e in llm.answer("Which hardware multiplies matrices with tensor cores?", collection="llm")
            ]
            kinds = [e.WhichOneof("event") for e in evs]
            assert kinds[0] == "retrieval" and kinds[1] == "start" and kinds[-1] == "done", kinds
            retrieval, done = evs[0].retrieval, evs[-1].done
            assert retrieval.chunks[0].document_name == "gpus.md" and retrieval.index_version == job.index_version
            assert {"fetch"} <= {s.name for s in retrieval.timings.stages}
            assert evs[1].start.backend == "extractive"
            assert "Tensor cores multiply matrices" in done.text and "[1]" in done.text
            cite = done.citations[0]
            assert cite.document_name == "gpus.md" and cite.object_key == f"chunks/llm/{cite.chunk_id}"
            assert cite.collection == "llm" and cite.document_id == "gpus"
            assert 0 < done.ttft_ns < done.rag_ttft_ns
            await check_sentence_vectors(ports, retriever, storage, tmp_path)
        finally:
            for c in clients:
                await c.close()


class CountingEncoder:
    """The llm_gateway's embedder adapter, recording the texts of every call."""

    def __init__(self, inner: EmbedderEncoder) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return await self.inner.encode(texts)

    async def close(self) -> None:
        await self.inner.close()


async def check_sentence_vectors(
    ports: Ports, retriever: RetrieverClient, storage: StorageClient, tmp_path: Path
) -> None:
    """Ingestion stored each chunk's sentence vectors; Search returns them when asked; an answer
    then embeds only its question, and without them (what chunks written before they existed
    get) gives the same answer, embedding the sentences as before."""
    question = "Which hardware multiplies matrices with tensor cores?"
    res = await retriever.search("llm", question, top_k=2, sentence_vectors=True)
    hit = res.chunks[0]
    assert hit.HasField("sentence_vectors") and hit.sentence_vectors.dimension == 384
    sv = sentence_vectors_from_pb(hit.sentence_vectors)
    assert sv is not None and sv.model and sv.keys == tuple(sentence_key(s) for s in whole_sentences(hit.text))
    assert not (await retriever.search("llm", question, top_k=2)).chunks[0].HasField("sentence_vectors")

    counting = CountingEncoder(EmbedderEncoder(EmbedderClient(ports.addr("embedder"))))
    cfg = load_env(
        LlmGatewayConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path / "l2"),
        retriever_addr=ports.addr("retriever"),
        embedder_addr=ports.addr("embedder"),
        verify="off",  # the groundedness check embeds on its own; this counts the generator's calls
        cache_max_bytes=0,
    )
    searcher = RetrieverSearcher(RetrieverClient(ports.addr("retriever")), sentence_vectors=True)
    app, port = await create_llm(cfg, encoder=counting, searcher=searcher)
    llm = LlmClient(f"127.0.0.1:{port}", timeout_s=60)
    try:

        async def answer() -> str:
            evs = [e async for e in llm.answer(question, collection="llm", params=lpb.GenerationParams(no_cache=True))]
            assert evs[-1].WhichOneof("event") == "done", evs[-1]
            return evs[-1].done.text

        stored = await answer()
        assert "Tensor cores multiply matrices" in stored
        assert counting.calls == [[question]], counting.calls  # no passage sentence embedded
        searcher.sentence_vectors = False  # what chunks ingested before sentence vectors get
        assert await answer() == stored
        assert counting.calls[-1][0] == question and len(counting.calls[-1]) > 1
    finally:
        await llm.close()
        await app.stop(0)
