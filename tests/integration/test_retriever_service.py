"""The retriever over real gRPC: the real storage service on the real SeaweedFS, the real embedder
with the real model, and the retriever on 127.0.0.1:0 between them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.base import ServiceCallError
from clients.retriever import RetrieverClient
from clients.storage import StorageClient
from ddnrag.retriever.v1 import retriever_service_pb2 as pb
from kernel.config import load_env
from kernel.server import GrpcApp
from services.embedder.config import EmbedderConfig
from services.embedder.server import create_server as create_embedder
from services.retriever.config import RetrieverConfig
from services.retriever.server import create_server as create_retriever
from services.storage.config import StorageConfig
from services.storage.server import create_server as create_storage

pytestmark = pytest.mark.asyncio(loop_scope="module")

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


@dataclass
class Peers:
    embedder_addr: str
    storage_addr: str
    storage: StorageClient
    bucket: str
    s3: object


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def peers(seaweed, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Peers]:
    s3 = seaweed.boto3_client()
    bucket = f"retriever-{random.randrange(10**6)}"
    s3.create_bucket(Bucket=bucket)
    ecfg = load_env(
        EmbedderConfig,
        environ={},
        port=0,
        metrics_port=0,
        backend="torch",
        state_dir=str(tmp_path_factory.mktemp("embedder")),
    )
    eapp, eport = await create_embedder(ecfg)
    scfg = load_env(
        StorageConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path_factory.mktemp("storage")),
        default_endpoint=seaweed.endpoint,
        default_bucket=bucket,
        default_access_key_id=seaweed.access_key_id,
        default_secret_access_key=seaweed.secret_access_key,
    )
    sapp, sport = await create_storage(scfg)
    await wait_serving(eport, "ddnrag.embedder.v1.EmbedderService")
    storage = StorageClient(f"127.0.0.1:{sport}", timeout_s=30)
    try:
        yield Peers(f"127.0.0.1:{eport}", f"127.0.0.1:{sport}", storage, bucket, s3)
    finally:
        await storage.close()
        await sapp.stop(0)
        await eapp.stop(0)


async def start_retriever(peers: Peers, state_dir: Path, **overrides: object) -> tuple[GrpcApp, RetrieverClient]:
    cfg = load_env(
        RetrieverConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(state_dir),
        embedder_addr=peers.embedder_addr,
        storage_addr=peers.storage_addr,
        **overrides,
    )
    app, port = await create_retriever(cfg)
    await wait_serving(port, "ddnrag.retriever.v1.RetrieverService", 60)
    return app, RetrieverClient(f"127.0.0.1:{port}", timeout_s=60)


@pytest_asyncio.fixture(loop_scope="module")
async def retriever(peers: Peers, tmp_path: Path) -> AsyncIterator[RetrieverClient]:
    app, client = await start_retriever(peers, tmp_path / "retriever")
    client.app = app  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        await client.close()
        await app.stop(0)


def bucket_keys(peers: Peers, prefix: str) -> list[str]:
    pages = peers.s3.get_paginator("list_objects_v2").paginate(Bucket=peers.bucket, Prefix=prefix)  # type: ignore[attr-defined]
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


async def test_ingest_streams_progress_then_search_reads_chunks_from_storage(
    peers: Peers, retriever: RetrieverClient
) -> None:
    coll = "skeleton"
    await peers.storage.put(f"docs/{coll}/gpus/gpus.md", GPUS.encode())
    await peers.storage.put(f"docs/{coll}/store/storage.txt", STORAGE.encode())
    events = [
        ev async for ev in retriever.ingest(coll, [f"docs/{coll}/gpus/gpus.md", f"docs/{coll}/store/storage.txt"])
    ]
    seqs = [e.sequence for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert events[-1].terminal and not any(e.terminal for e in events[:-1])
    job = events[-1].job
    assert job.state == pb.JOB_STATE_SUCCEEDED, job
    assert job.documents_done == job.documents_total == 2
    assert job.chunks_done == job.chunks_total >= 2
    assert sorted(job.document_ids) == ["gpus", "store"]
    assert {"embed", "write", "index"} <= {e.job.stage for e in events}
    assert job.backends[0].objects_written == job.chunks_done and job.backends[0].write_p50_ns > 0
    assert job.index_version

    # Every chunk is its own object in the bucket, and the index is persisted with CURRENT.
    chunk_keys = bucket_keys(peers, f"chunks/{coll}/")
    assert len(chunk_keys) == job.chunks_done
    assert f"index/{coll}/CURRENT" in bucket_keys(peers, f"index/{coll}/")

    resp = await retriever.search(coll, "Which hardware multiplies matrices with tensor cores?", top_k=2)
    assert resp.chunks[0].document_id == "gpus" and resp.chunks[0].document_name == "gpus.md"
    top = resp.chunks[0]
    body = peers.s3.get_object(Bucket=peers.bucket, Key=top.object_key)["Body"].read().decode()  # type: ignore[attr-defined]
    assert top.text == body and "Tensor cores" in body
    assert top.status.code == 0 and top.object_key == f"chunks/{coll}/{top.chunk_id}"
    stages = {s.name: s for s in resp.timings.stages}
    assert {"embed", "bm25", "dense", "fusion", "fetch"} <= set(stages)
    assert stages["fetch"].ttfb_ns > 0 and stages["fetch"].backend and stages["fetch"].count == 2
    # bm25 runs while the query is embedded; the other stages are sequential.
    sequential = sum(stages[n].duration_ns for n in ("embed", "dense", "fusion", "fetch"))
    assert resp.timings.total_ns >= sequential > 0 and resp.timings.stages_sum_ns > 0
    assert resp.index_version == job.index_version

    # Re-ingesting the same files changes nothing.
    again = [e async for e in retriever.ingest(coll, [f"docs/{coll}/gpus/gpus.md"])][-1].job
    assert again.state == pb.JOB_STATE_SUCCEEDED and again.index_version == job.index_version
    assert bucket_keys(peers, f"chunks/{coll}/") == chunk_keys


async def test_default_collection_works_without_create(peers: Peers, retriever: RetrieverClient) -> None:
    await peers.storage.put("docs/default/s/storage.txt", STORAGE.encode())
    job = await retriever.start_ingest("default", ["docs/default/s/storage.txt"])
    events = [e async for e in retriever.watch_job(job.job_id)]
    assert events[-1].job.state == pb.JOB_STATE_SUCCEEDED
    resp = await retriever.search("default", "time to first byte of small objects", top_k=1)
    assert resp.chunks[0].document_id == "s" and "first byte" in resp.chunks[0].text
    names = [c.name for c in await retriever.list_collections()]
    assert "default" in names


async def test_bad_input_codes(retriever: RetrieverClient) -> None:
    with pytest.raises(ServiceCallError) as err:
        await retriever.search("nope", "anything")
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ServiceCallError) as err:
        await retriever.search("default", "anything", top_k=101)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.reason == "TOP_K_OUT_OF_RANGE"
    with pytest.raises(ServiceCallError) as err:
        await retriever.search("default", "   ")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ServiceCallError) as err:
        await retriever.get_job("missing")
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ServiceCallError) as err:
        await retriever.create_collection("Bad Name!")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_files_two_backends_restart_and_corrupt_segment(peers: Peers, seaweed, tmp_path: Path) -> None:
    from ddnrag.storage.v1 import storage_service_pb2 as spb

    coll = "mixed"
    # A second backend (another bucket on the same SeaweedFS) for side-by-side writes.
    second = f"second-{random.randrange(10**6)}"
    peers.s3.create_bucket(Bucket=second)  # type: ignore[attr-defined]
    await peers.storage.put_backend(
        spb.Backend(
            name="second",
            kind=spb.BACKEND_KIND_S3_COMPATIBLE,
            endpoint=seaweed.endpoint,
            bucket=second,
            region="us-east-1",
            access_key_id=seaweed.access_key_id,
            secret_access_key=seaweed.secret_access_key,
        )
    )
    await peers.storage.put(f"docs/{coll}/g/gpus.md", GPUS.encode())
    await peers.storage.put(f"docs/{coll}/p/broken.pdf", b"%PDF-1.7\nnot really")
    await peers.storage.put(f"docs/{coll}/e/empty.txt", b"")
    app, client = await start_retriever(peers, tmp_path / "r1")
    try:
        last = [
            e async for e in client.ingest(coll, [], source_prefix=f"docs/{coll}/", target_backends=["", "second"])
        ][-1].job
        assert last.state == pb.JOB_STATE_PARTIAL and last.documents_done == 3
        assert {e.name for e in last.file_errors} == {"broken.pdf", "empty.txt"}
        assert all(e.reason for e in last.file_errors)
        assert [b.backend for b in last.backends] == ["default", "second"]
        assert all(b.objects_written == last.chunks_done and b.write_ops_per_s > 0 for b in last.backends)
        listed = await client.list_jobs(coll)
        assert listed.jobs[0].job_id == last.job_id
        one = await client.search(coll, "tensor cores", top_k=1, backend="second")
        fetch = next(s for s in one.timings.stages if s.name == "fetch")
        assert fetch.backend == "second" and fetch.ttfb_ns > 0 and "Tensor cores" in one.chunks[0].text
        # The same outcome in the retriever's metrics (this replica ran the one job).
        reg = app.metrics.registry
        docs = {
            o: reg.get_sample_value("retriever_ingest_documents_total", {"collection": coll, "outcome": o})
            for o in ("done", "failed")
        }
        assert docs == {"done": 1, "failed": 2}
        assert reg.get_sample_value("retriever_ingest_errors_total", {"collection": coll, "kind": "file"}) == 2
        assert reg.get_sample_value("retriever_ingest_chunks_total", {"collection": coll}) == last.chunks_done
        assert reg.get_sample_value("retriever_stage_duration_seconds_count", {"stage": "fetch"}) >= 1
    finally:
        await client.close()
        await app.stop(0)

    # A fresh replica (empty state directory) loads and verifies the persisted index.
    app, client = await start_retriever(peers, tmp_path / "r2")
    try:
        again = await client.search(coll, "tensor cores", top_k=1)
        assert again.index_version == last.index_version and again.chunks[0].chunk_id == one.chunks[0].chunk_id
        docs = await client.list_documents(coll)
        assert docs.total == 1 and docs.documents[0].name == "gpus.md" and docs.documents[0].sha256
    finally:
        await client.close()
        await app.stop(0)

    # A corrupt segment is refused at start-up with a clear error and a rebuild path.
    key = next(k for k in bucket_keys(peers, f"index/{coll}/segments/") if "vectors-" in k)
    body = bytearray(peers.s3.get_object(Bucket=peers.bucket, Key=key)["Body"].read())  # type: ignore[attr-defined]
    body[-2] ^= 0xFF
    peers.s3.put_object(Bucket=peers.bucket, Key=key, Body=bytes(body))  # type: ignore[attr-defined]
    app, client = await start_retriever(peers, tmp_path / "r3")
    try:
        with pytest.raises(ServiceCallError) as err:
            await client.search(coll, "tensor cores")
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and err.value.reason == "INDEX_CORRUPT"
        assert "SHA-256" in err.value.message and f"docs/{coll}/" in err.value.message
        refused = app.metrics.registry.get_sample_value("retriever_index_refused_total", {"collection": coll})
        assert refused is not None and refused >= 1  # the follower may refuse the same version again
        rebuilt = [e async for e in client.ingest(coll, [], source_prefix=f"docs/{coll}/")][-1].job
        assert rebuilt.state == pb.JOB_STATE_PARTIAL
        assert (await client.search(coll, "tensor cores", top_k=1)).chunks[0].document_id == "g"
    finally:
        await client.close()
        await app.stop(0)
