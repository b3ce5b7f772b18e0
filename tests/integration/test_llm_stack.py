"""Answer over the real services: SeaweedFS, the storage service, the embedder with the real model,
the retriever, and the llm_gateway (whose extractive generator embeds through the embedder
service) all on 127.0.0.1:0, with no doubles anywhere."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.llm import LlmClient
from clients.retriever import RetrieverClient
from clients.storage import StorageClient
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
from kernel.config import load_env
from services.embedder.config import EmbedderConfig
from services.embedder.server import create_server as create_embedder
from services.llm_gateway.config import LlmGatewayConfig
from services.llm_gateway.server import create_server as create_llm
from services.retriever.config import RetrieverConfig
from services.retriever.server import create_server as create_retriever
from services.storage.config import StorageConfig
from services.storage.server import create_server as create_storage
from tests.conftest import S3Server

GPUS = (
    "# GPUs\n\nA graphics processing unit runs thousands of threads in parallel. Tensor cores multiply "
    "matrices in mixed precision, which is why GPUs train and serve neural networks quickly.\n"
)
STORAGE = (
    "Object storage keeps data as objects in buckets, addressed by key. DDN Infinia and Amazon S3 speak "
    "the S3 protocol; time to first byte decides how fast a small object comes back."
)


async def wait_serving(port: int, service: str, timeout_s: float = 180.0) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            r = await health.Check(health_pb2.HealthCheckRequest(service=service))
            if r.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{service} did not become SERVING")


async def test_answer_through_the_real_retriever_and_embedder(seaweed: S3Server, tmp_path: Path) -> None:
    bucket = f"llm-{random.randrange(10**6)}"
    seaweed.boto3_client().create_bucket(Bucket=bucket)
    apps = []
    clients = []
    try:
        eapp, eport = await create_embedder(
            load_env(EmbedderConfig, environ={}, port=0, metrics_port=0, backend="torch", state_dir=str(tmp_path / "e"))
        )
        apps.append(eapp)
        sapp, sport = await create_storage(
            load_env(
                StorageConfig,
                environ={},
                port=0,
                metrics_port=0,
                state_dir=str(tmp_path / "s"),
                default_endpoint=seaweed.endpoint,
                default_bucket=bucket,
                default_access_key_id=seaweed.access_key_id,
                default_secret_access_key=seaweed.secret_access_key,
            )
        )
        apps.append(sapp)
        await wait_serving(eport, "ddnrag.embedder.v1.EmbedderService")
        rapp, rport = await create_retriever(
            load_env(
                RetrieverConfig,
                environ={},
                port=0,
                metrics_port=0,
                state_dir=str(tmp_path / "r"),
                embedder_addr=f"127.0.0.1:{eport}",
                storage_addr=f"127.0.0.1:{sport}",
            )
        )
        apps.append(rapp)
        await wait_serving(rport, "ddnrag.retriever.v1.RetrieverService", 60)
        lapp, lport = await create_llm(
            load_env(
                LlmGatewayConfig,
                environ={},
                port=0,
                metrics_port=0,
                state_dir=str(tmp_path / "l"),
                retriever_addr=f"127.0.0.1:{rport}",
                embedder_addr=f"127.0.0.1:{eport}",
            )
        )
        apps.append(lapp)

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

        evs = [e async for e in llm.answer("Which hardware multiplies matrices with tensor cores?", collection="llm")]
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
        for a in reversed(apps):
            await a.stop(0)
