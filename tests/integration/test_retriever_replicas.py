"""Two retriever processes against one storage service on one SeaweedFS: a commit through one
replica is searchable through the other within 2 s, in both directions, and each replica loads
only the segments it lacks."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from clients.retriever import RetrieverClient
from ddnrag.retriever.v1 import retriever_service_pb2 as pb
from tests.integration.test_retriever_service import GPUS, STORAGE, Peers, bucket_keys, peers, wait_serving

pytestmark = pytest.mark.asyncio(loop_scope="module")
ROOT = Path(__file__).resolve().parents[2]
__all__ = ["peers"]  # the module-scoped storage + embedder fixture, shared with the service tests


def start_replica(p: Peers, state_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Starts a replica process; returns it and the port it bound."""
    env = {
        **os.environ,
        "DDNRAG_RETRIEVER_STATE_DIR": str(state_dir),
        "DDNRAG_RETRIEVER_EMBEDDER_ADDR": p.embedder_addr,
        "DDNRAG_RETRIEVER_STORAGE_ADDR": p.storage_addr,
        "DDNRAG_RETRIEVER_FOLLOW_INTERVAL_S": "0.5",
    }
    read_fd, write_fd = os.pipe()
    env["PORT_FD"] = str(write_fd)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.retriever_process"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            preexec_fn=lambda: os.dup2(write_fd, 3),
        )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as port_pipe:
        line = port_pipe.readline()
    if not line:
        raise RuntimeError(f"the retriever process exited: {log.read_text()[-2000:]}")
    return proc, int(json.loads(line)["port"])


@pytest.fixture(scope="module")
def replica_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("replicas")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicas(peers: Peers, replica_dirs: Path) -> AsyncIterator[list[RetrieverClient]]:
    procs, clients = [], []
    try:
        for name in ("a", "b"):
            proc, port = start_replica(peers, replica_dirs / name, replica_dirs / f"{name}.log")
            procs.append(proc)
            await wait_serving(port, "ddnrag.retriever.v1.RetrieverService", 60)
            clients.append(RetrieverClient(f"127.0.0.1:{port}", timeout_s=60))
        yield clients
    finally:
        for c in clients:
            await c.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:  # off the loop: the storage service they release the lease through runs on it
            await asyncio.to_thread(proc.wait, 30)


async def visible_within(client: RetrieverClient, coll: str, query: str, document_id: str, limit_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        try:
            resp = await client.search(coll, query, top_k=3, no_cache=True)
            if any(c.document_id == document_id for c in resp.chunks):
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - the collection is not there yet on this replica
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{document_id} not visible on the other replica within {limit_s} s")


async def test_commit_on_one_replica_is_searchable_on_the_other_within_2s(
    peers: Peers, replicas: list[RetrieverClient]
) -> None:
    a, b = replicas
    coll = "replicated"
    await peers.storage.put(f"docs/{coll}/gpus/gpus.md", GPUS.encode())
    job = [e async for e in a.ingest(coll, [f"docs/{coll}/gpus/gpus.md"])][-1].job
    assert job.state == pb.JOB_STATE_SUCCEEDED
    assert await visible_within(b, coll, "tensor cores multiply matrices", "gpus", 2.0) < 2.0

    # A second commit adds one segment; the other replica reads only that one and sees it in time.
    await peers.storage.put(f"docs/{coll}/store/storage.txt", STORAGE.encode())
    job2 = [e async for e in a.ingest(coll, [f"docs/{coll}/store/storage.txt"])][-1].job
    assert job2.state == pb.JOB_STATE_SUCCEEDED
    assert await visible_within(b, coll, "time to first byte of objects in buckets", "store", 2.0) < 2.0
    on_b = await b.search(coll, "time to first byte", top_k=1, no_cache=True)
    assert on_b.index_version == job2.index_version
    segs = [k for k in bucket_keys(peers, f"index/{coll}/segments/") if k.endswith("documents.json")]
    assert len(segs) == 2  # two commits, two segments; nothing rewritten

    # And the other way: a delete through b disappears from a within 2 s.
    await b.delete_document(coll, "gpus")
    t0 = time.monotonic()
    while True:
        resp = await a.search(coll, "tensor cores multiply matrices", top_k=3, no_cache=True)
        if all(c.document_id != "gpus" for c in resp.chunks):
            break
        assert time.monotonic() - t0 < 2.0, "the delete did not reach replica a within 2 s"
        await asyncio.sleep(0.05)
    docs = await a.list_documents(coll)
    assert [d.document_id for d in docs.documents] == ["store"]


async def test_clearing_a_collection_removes_everything_and_every_replica_stops_serving_it(
    peers: Peers, replicas: list[RetrieverClient]
) -> None:
    from clients.base import ServiceCallError

    a, b = replicas
    coll = "to-clear"
    await peers.storage.put(f"docs/{coll}/gpus/gpus.md", GPUS.encode())
    job = [e async for e in a.ingest(coll, [f"docs/{coll}/gpus/gpus.md"])][-1].job
    assert job.state == pb.JOB_STATE_SUCCEEDED
    await visible_within(b, coll, "tensor cores multiply matrices", "gpus", 30.0)

    # The job's summary (read through the other replica): bytes, stage times, device, per-file rows.
    full = await b.get_job(job.job_id, include_files=True)
    assert full.bytes_total == len(GPUS.encode())
    assert min(full.fetch_ns, full.parse_ns, full.embed_ns, full.write_ns, full.index_ns) > 0, full
    assert full.embedder_device.startswith(("cpu", "cuda")), full.embedder_device
    [f] = full.files
    assert (f.name, f.status, f.size_bytes) == ("gpus.md", "done", len(GPUS.encode()))
    assert f.chunks >= 1 and min(f.fetch_ns, f.parse_ns, f.embed_ns, f.write_ns) > 0, f
    assert not (await b.get_job(job.job_id)).files  # only on request

    # Cleared with the CLI (`rag collections delete NAME --yes`) through b, the replica that did not ingest.
    rag = [str(Path(sys.executable).parent / "rag"), "collections", "delete", coll, "--yes", "--json"]
    proc = await asyncio.to_thread(
        subprocess.run, [*rag, "--retriever-addr", b.address], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert (out["cleared"], out["documents"], out["jobs_removed"], out["jobs_cancelled"]) == (coll, 1, 1, 0)
    assert out["chunks"] >= 1 and out["objects_deleted"] >= 3
    for prefix in (f"index/{coll}/", f"chunks/{coll}/", f"docs/{coll}/", f"collections/{coll}", f"jobs/{job.job_id}/"):
        assert bucket_keys(peers, prefix) == [], prefix
    assert not [k for k in bucket_keys(peers, "jobindex/") if k.endswith(job.job_id)]
    assert not (await a.list_jobs(coll)).jobs

    # Replica a follows CURRENT: it stops serving the collection (bounded wait, no timing asserted).
    deadline = time.monotonic() + 30
    while True:
        try:
            resp = await a.search(coll, "tensor cores multiply matrices", top_k=3, no_cache=True)
        except ServiceCallError as err:
            assert err.code.name == "NOT_FOUND", err
            break
        # Until a's next poll of CURRENT it may still rank the collection, but the chunk objects
        # are gone: a hit comes back with its own status (CHUNK_MISSING) and no text. No deleted
        # content is served.
        served = [c.chunk_id for c in resp.chunks if c.status.code == 0 or c.text]
        assert not served, f"a deleted collection's chunks were still served: {served}"
        assert time.monotonic() < deadline, "replica a still knows the deleted collection after 30 s"
        await asyncio.sleep(0.1)
    assert coll not in [c.name for c in await a.list_collections()]

    # A second clear (of a name that no longer exists) is a clear NOT_FOUND.
    try:
        await a.delete_collection(coll)
        raise AssertionError("clearing a missing collection succeeded")
    except ServiceCallError as err:
        assert err.code.name == "NOT_FOUND" and err.reason == "COLLECTION_NOT_FOUND", err
        assert "does not exist" in err.describe()
