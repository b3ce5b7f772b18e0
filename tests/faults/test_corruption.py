"""Corruption on the real stack: flipped bytes in an index segment and in a chunk object.

A segment that fails its SHA-256 is refused with a clear error naming the file and the rebuild
path (searches get FAILED_PRECONDITION / INDEX_CORRUPT), and the rebuild (re-ingesting the raw
documents) brings the collection back. A chunk object whose body no longer hashes to its
content-addressed id is reported (CHUNK_CORRUPT), never served as text, through gRPC and the
gateway alike.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import grpc
import pytest

from clients.base import ServiceCallError
from clients.retriever import RetrieverClient
from ddnrag.retriever.v1 import retriever_service_pb2 as pb
from testkit.faults import harness, scenarios
from testkit.stack import RunningStack

pytestmark = [pytest.mark.e2e]


def _flip(s3: object, key: str, at: int = 40) -> None:
    body = bytearray(s3.get_object(Bucket=harness.BUCKET, Key=key)["Body"].read())  # type: ignore[attr-defined]
    body[at % len(body)] ^= 0x5A
    s3.put_object(Bucket=harness.BUCKET, Key=key, Body=bytes(body))  # type: ignore[attr-defined]


async def _ingest(stack: RunningStack, collection: str, n: int) -> dict[str, bytes]:
    docs = harness.make_corpus(n, seed=collection)
    prefix = await asyncio.to_thread(harness.put_corpus, harness.s3_client(stack), collection, docs)
    job = await harness.wait_job(stack, await scenarios.start_job(stack, collection, prefix))
    assert pb.JobState.Name(job.state) == "JOB_STATE_SUCCEEDED", job
    return docs


async def _search(stack: RunningStack, collection: str, q: str) -> pb.SearchResponse:
    client = RetrieverClient(stack.addr("DDNRAG_RETRIEVER_PORT"))
    try:
        return await client.search(collection, q, top_k=5, no_cache=True, timeout=30)
    finally:
        await client.close()


async def test_corrupt_index_segment_is_refused_and_rebuild_works(stack: RunningStack) -> None:
    coll = "corrupt-seg"
    docs = await _ingest(stack, coll, 12)
    s3 = harness.s3_client(stack)
    segment = harness.live_manifest(s3, coll)["segments"][0]  # type: ignore[index]
    _flip(s3, f"index/{coll}/{segment['path']}chunks-00000.jsonl")
    # A restarted retriever loads and verifies every collection.
    old = harness.sigkill(stack, "retriever")
    await asyncio.to_thread(harness.wait_restarted, stack, "retriever", old)
    with pytest.raises(ServiceCallError) as err:
        await _search(stack, coll, "glycol turbine")
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and err.value.reason == "INDEX_CORRUPT", err.value
    assert "chunks-00000.jsonl" in err.value.message and "SHA-256" in err.value.message, err.value.message
    assert f"docs/{coll}/" in err.value.message  # the rebuild path is named
    # Other collections still answer.
    assert (await _search(stack, "default", "time to first byte")).chunks
    # The rebuild path: re-ingest the raw documents.
    job = await harness.wait_job(stack, await scenarios.start_job(stack, coll, f"docs/{coll}/"))
    assert pb.JobState.Name(job.state) == "JOB_STATE_SUCCEEDED", job
    resp = await _search(stack, coll, "glycol turbine")
    assert resp.chunks and all(c.text for c in resp.chunks)
    a = harness.audit(s3, coll, harness.expected_chunks(coll, docs))
    harness.record("corrupt_segment", {"scenarios": 1, "chunks_lost": a.lost, "chunks_duplicated": a.duplicated})
    assert a.lost == 0 and a.duplicated == 0 and a.text_mismatch == 0, a.as_dict()


async def test_corrupt_chunk_is_reported_never_served(stack: RunningStack) -> None:
    coll = "corrupt-chunk"
    docs = await _ingest(stack, coll, 6)
    q = "Record 3.2 of the corrupt-chunk corpus"
    first = await _search(stack, coll, q)
    target = first.chunks[0]
    s3 = harness.s3_client(stack)
    good = s3.get_object(Bucket=harness.BUCKET, Key=target.object_key)["Body"].read()
    _flip(s3, target.object_key, at=len(good) // 2)
    resp = await _search(stack, coll, q)
    hit = next(c for c in resp.chunks if c.chunk_id == target.chunk_id)
    assert hit.text == "", "a corrupt chunk was served as text"
    assert hit.status.code == grpc.StatusCode.DATA_LOSS.value[0], hit.status
    assert "corrupt" in hit.status.message and target.object_key in hit.status.message
    others = [c for c in resp.chunks if c.chunk_id != target.chunk_id]
    assert all(c.text and not c.status.code for c in others)
    # Through the gateway: the answer does not quote the corrupt bytes.
    corrupt_text = bytearray(good)
    corrupt_text[len(good) // 2] ^= 0x5A
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{stack.url}/api/rag/query", json={"q": q, "collection": coll}) as r:
            body = await r.text()
            assert r.status < 500, body
    assert bytes(corrupt_text).decode("utf-8", "replace")[:60] not in body
    # Repair: re-putting the original bytes makes it whole again (content-addressed).
    s3.put_object(Bucket=harness.BUCKET, Key=target.object_key, Body=good)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        again = await _search(stack, coll, q)
        if all(c.text for c in again.chunks):
            break
        await asyncio.sleep(0.5)
    assert all(c.text for c in again.chunks)
    a = harness.audit(s3, coll, harness.expected_chunks(coll, docs))
    harness.record("corrupt_chunk", {"scenarios": 1, "chunks_lost": a.lost, "chunks_duplicated": a.duplicated})
    assert a.lost == 0
