"""Answer over the real services: SeaweedFS, the storage service, the embedder with the real model,
the retriever, and the llm_gateway (whose extractive generator embeds through the embedder
service) all on 127.0.0.1:0, with no doubles anywhere."""

from __future__ import annotations

import random
from pathlib import Path

from clients.llm import LlmClient
from clients.retriever import RetrieverClient
from clients.storage import StorageClient
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
from testkit.services import rag_services
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
        finally:
            for c in clients:
                await c.close()
