"""Disk full in the retriever's state directory: a small tmpfs (mounting needs root; the test is
skipped, saying so, where mounting is not permitted). The retriever runs in this process over the
stack's storage and embedder with its state on the tmpfs, which is filled up. Job state lives in
the object store (shared by every replica) and the state directory holds only caches, so a full
disk must cost nothing but cache writes: the ingestion completes with exactly the expected
chunks, the service stays SERVING, and searches (which write the retrieval cache) still answer.
The llm_gateway's answer cache gets the same full disk: answers still stream, uncached.
(tests/unit/test_cache_disk_full.py covers the embedder's and llm_gateway's caches without a mount.)"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.llm import LlmClient
from clients.retriever import RetrieverClient
from ddnrag.retriever.v1 import retriever_service_pb2 as pb
from kernel.config import load_env
from services.llm_gateway.config import LlmGatewayConfig
from services.llm_gateway.server import create_server as create_llm
from services.retriever.config import RetrieverConfig
from services.retriever.server import create_server
from testkit.faults import harness
from testkit.stack import RunningStack

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "state"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()[:120]}); disk-full not exercised")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> Path:
    """Writes a filler file until the file system is full."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:
        block = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                f.write(block)
        with contextlib.suppress(OSError):
            while True:  # the last few bytes
                f.write(b"\0" * 512)
    try:
        with open(path / "probe", "wb", buffering=0) as p:
            p.write(b"x" * 4096)
            os.fsync(p.fileno())
    except OSError as err:
        assert err.errno == errno.ENOSPC
    return filler


async def _wait(client: RetrieverClient, job_id: str, timeout_s: float = 180) -> pb.Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = await client.get_job(job_id, timeout=10)
        if pb.JobState.Name(job.state) in harness.TERMINAL:
            return job
        await asyncio.sleep(0.2)
    raise TimeoutError(job_id)


async def test_full_state_dir_costs_only_cache_writes(stack: RunningStack, small_disk: Path) -> None:
    cfg = load_env(
        RetrieverConfig,
        {},
        port=0,
        metrics_port=0,
        state_dir=str(small_disk / "retriever"),
        storage_addr=stack.addr("DDNRAG_STORAGE_PORT"),
        embedder_addr=stack.addr("DDNRAG_EMBEDDER_PORT"),
    )
    app, port = await create_server(cfg)
    client = RetrieverClient(f"127.0.0.1:{port}", retries=0)
    coll = "diskfull"
    docs = harness.make_corpus(40, seed=coll)
    prefix = await asyncio.to_thread(harness.put_corpus, harness.s3_client(stack), coll, docs)
    health = health_pb2_grpc.HealthStub(client.channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    try:
        deadline = time.monotonic() + 120  # the retriever loads every collection before SERVING
        while (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status != serving:
            assert time.monotonic() < deadline, "the retriever never became SERVING"
            await asyncio.sleep(0.5)
        filler = await asyncio.to_thread(_fill, small_disk)
        try:
            job = await client.start_ingest(coll, [], source_prefix=prefix, timeout=30)
            job = await _wait(client, job.job_id)
            assert pb.JobState.Name(job.state) == "JOB_STATE_SUCCEEDED", f"{pb.JobState.Name(job.state)}: {job.error}"
            assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == serving
            deadline = time.monotonic() + 30  # the new version is followed on the replica's schedule
            while not (await client.search(coll, "turbine glycol", top_k=1, timeout=10)).chunks:
                assert time.monotonic() < deadline, f"{coll} never became searchable with the disk full"
                await asyncio.sleep(0.2)
        finally:
            filler.unlink()
    finally:
        await client.close()
        await app.stop(0)
    a = harness.audit(harness.s3_client(stack), coll, harness.expected_chunks(coll, docs))
    harness.record("disk_full", {"scenarios": 1, "chunks_lost": a.lost, "chunks_duplicated": a.duplicated})
    assert a.lost == 0 and a.duplicated == 0 and a.text_mismatch == 0, a.as_dict()


async def test_full_state_dir_costs_the_llm_gateway_only_its_answer_cache(
    stack: RunningStack, small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_env(
        LlmGatewayConfig,
        {},
        port=0,
        metrics_port=0,
        state_dir=str(small_disk / "llm"),
        retriever_addr=stack.addr("DDNRAG_RETRIEVER_PORT"),
        embedder_addr=stack.addr("DDNRAG_EMBEDDER_PORT"),
        storage_addr=stack.addr("DDNRAG_STORAGE_PORT"),
    )
    app, port = await create_llm(cfg)
    client = LlmClient(f"127.0.0.1:{port}", retries=0)
    filler = await asyncio.to_thread(_fill, small_disk)
    try:
        for _ in range(2):  # the second would be a cache hit, had the first been stored
            kinds = [
                m.WhichOneof("event")
                async for m in client.answer("What does the sample corpus say about S3?", timeout=120)
            ]
            assert kinds[-1] == "done", kinds
        assert "answer cache write skipped" in caplog.text
    finally:
        filler.unlink()
        await client.close()
        await app.stop(0)
