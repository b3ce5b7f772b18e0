"""The ingestion pipeline over real gRPC (issue 19): embedding requests cut across files, chunk
objects written while the embedder is still busy, and nothing lost or duplicated on the way,
including when the embedder fails mid-job and the job resumes from its last committed batch.

The retriever is the real service on 127.0.0.1:0 and the job is driven through its Ingest
stream; its store and encoder are the in-memory doubles of the unit tests, to keep this fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from clients.retriever import RetrieverClient
from kernel import sentences
from kernel.errors import unavailable
from services.retriever.chunking import Chunker
from services.retriever.embed_plan import planned_texts
from tests.support.retriever_doubles import DictStore, HashingEncoder, serve_retriever

pytestmark = pytest.mark.asyncio

EMBED_BATCH, WRITE_BATCH = 3, 5
CHUNK_TOKENS = 24  # about two of the documents' sentences per chunk
DOCS = {
    f"d{i}": " ".join(f"Document {i} sentence {j} is about topic {i * j % 7}." for j in range(3 + i % 4))
    for i in range(14)
}


class RecordingEncoder(HashingEncoder):
    """Records every request's texts; can fail one request (UNAVAILABLE) or hold every request."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[list[str]] = []
        self.fail_at = -1
        self.hold: asyncio.Event | None = None

    async def encode(self, texts: Sequence[str], *, timeout: float | None = None) -> np.ndarray:
        if self.hold is not None:
            await self.hold.wait()
        n = len(self.requests)
        self.requests.append(list(texts))
        if n == self.fail_at:
            raise unavailable("the embedder restarted (test)")
        return await super().encode(texts)


@pytest_asyncio.fixture(params=[False], ids=["chunks-only"])
async def service(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """The service; `sentence_vectors` off unless a test asks (its requests are then the chunks'
    alone, so their sizes can be checked exactly)."""
    store, encoder = DictStore(), RecordingEncoder()
    app, port = await serve_retriever(
        tmp_path,
        store,
        encoder,
        chunk_size_tokens=CHUNK_TOKENS,
        chunk_overlap_tokens=2,
        write_batch=WRITE_BATCH,
        embed_batch=EMBED_BATCH,
        lease_duration_s=3.0,
        sentence_vectors=request.param,
    )
    for d, text in DOCS.items():
        await store.put_many([(f"docs/kb/{d}/{d}.txt", text.encode())])
    client = RetrieverClient(f"127.0.0.1:{port}")
    try:
        yield {"app": app, "store": store, "encoder": encoder, "client": client, "sentences": request.param}
    finally:
        await client.close()
        await app.stop(0)


SOURCES = [f"docs/kb/{d}/{d}.txt" for d in DOCS]


def expected_chunks() -> dict[str, str]:
    chunker = Chunker(CHUNK_TOKENS, 2)
    return {c.chunk_id: c.text for d, text in DOCS.items() for c in chunker.chunks("kb", d, text)}


async def assert_index_exact(app: Any, store: DictStore, want: dict[str, str]) -> None:
    """The live index holds every expected chunk once, with the vector of its own text, and each
    chunk object is stored once, with that text."""
    state = app.retriever.collections["kb"]
    recs = state.snapshot.records
    ids = [r.chunk_id for r in recs]
    assert len(ids) == len(set(ids)), "a chunk was indexed twice"
    assert set(ids) == set(want), "chunks were lost or invented"
    assert all(r.text == want[r.chunk_id] for r in recs)
    got = state.index.vectors_at(np.array([state.index.row_of[c] for c in ids]))
    truth = await HashingEncoder().encode([r.text for r in recs])
    assert np.allclose(got, truth), "a chunk was indexed with another chunk's vector"
    keys = sorted(k for k in store.data[""] if k.startswith("chunks/kb/"))
    assert keys == sorted(f"chunks/kb/{c}" for c in want)
    assert all(store.data[""][f"chunks/kb/{c}"].decode() == t for c, t in want.items())


@pytest.mark.parametrize("service", [False, True], ids=["chunks-only", "with-sentence-vectors"], indirect=True)
async def test_requests_cut_across_files_and_every_chunk_lands_once(service: dict[str, Any]) -> None:
    want = expected_chunks()
    assert len(want) > 4 * WRITE_BATCH  # several batches, each several requests
    events = [ev async for ev in service["client"].ingest("kb", SOURCES)]
    job = events[-1].job
    assert events[-1].terminal and job.state == 3, job  # JOB_STATE_SUCCEEDED
    assert job.chunks_done == len(want) and job.documents_done == len(DOCS)
    # Progress streamed while the job ran, in order.
    done = [e.job.chunks_done for e in events]
    assert done == sorted(done) and any(0 < d < len(want) for d in done)
    # Every request but the last carried exactly `embed_batch` texts, whatever the files' sizes,
    # and every chunk was embedded once; with sentence vectors on, each batch's distinct sentences
    # rode in the same requests as its chunks (no second, separate pass), in the order
    # `planned_texts` gives (what bench/retriever.py's raw side embeds).
    reqs = service["encoder"].requests
    assert all(len(r) == EMBED_BATCH for r in reqs[:-1]) and 0 < len(reqs[-1]) <= EMBED_BATCH
    sent = [t for r in reqs for t in r]
    chunker = Chunker(CHUNK_TOKENS, 2)
    per_doc = [[c.text for c in chunker.chunks("kb", d, text)] for d, text in DOCS.items()]
    plan = planned_texts(per_doc, write_batch=WRITE_BATCH, sentence_vectors=service["sentences"])
    assert sent == plan
    if not service["sentences"]:
        assert sorted(sent) == sorted(want.values())
    else:
        # The sentences ride in the chunks' requests (one that is a whole chunk reuses its vector).
        assert set(want.values()) <= set(sent) and len(sent) > len(want)
        assert any(set(r) & set(want.values()) and set(r) - set(want.values()) for r in reqs)
        # Each chunk's stored record holds its own sentences' vectors.
        store = service["store"]
        for cid, text in want.items():
            rec = sentences.decode(store.data[""][f"sentences/kb/{cid}"])
            assert rec is not None
            ss = sentences.whole_sentences(text)
            assert rec.keys == tuple(sentences.sentence_key(x) for x in ss)
            if ss:
                truth = await HashingEncoder().encode(ss)
                assert np.allclose(rec.vectors.astype(np.float32), truth, atol=2e-3)
    # Stage times and the embedder's idle time are reported beside the job's wall time.
    assert job.run_ns > 0 and job.embed_ns > 0 and job.write_ns > 0
    assert 0 <= job.embed_idle_ns <= job.run_ns
    await assert_index_exact(service["app"], service["store"], want)


@pytest.mark.parametrize("service", [False, True], ids=["chunks-only", "with-sentence-vectors"], indirect=True)
async def test_chunk_objects_are_written_while_embedding_waits(service: dict[str, Any]) -> None:
    enc, store = service["encoder"], service["store"]
    enc.hold = asyncio.Event()  # the embedder answers nothing until released
    client = service["client"]
    job = await client.start_ingest("kb", SOURCES)
    try:
        for _ in range(1000):  # bound: 10 s
            if sum(k.startswith("chunks/kb/") for k in store.data[""]) >= WRITE_BATCH:
                break
            await asyncio.sleep(0.01)
        assert sum(k.startswith("chunks/kb/") for k in store.data[""]) >= WRITE_BATCH, (
            "no chunk object was written while the embedder was busy"
        )
        assert enc.requests == []  # still no vector: the writes did not wait for the embedder
    finally:
        enc.hold.set()
    last = [ev async for ev in client.watch_job(job.job_id)][-1]
    assert last.job.state == 3
    await assert_index_exact(service["app"], store, expected_chunks())


@pytest.mark.parametrize("service", [False, True], ids=["chunks-only", "with-sentence-vectors"], indirect=True)
async def test_a_failed_request_mid_job_resumes_without_loss_or_duplicates(service: dict[str, Any]) -> None:
    enc = service["encoder"]
    enc.fail_at = 4  # after the first batches committed
    events = [ev async for ev in service["client"].ingest("kb", SOURCES)]
    job = events[-1].job
    assert job.state == 3 and job.chunks_done == len(expected_chunks()), job
    assert len(enc.requests) > 5  # the job went on after the failed request
    await assert_index_exact(service["app"], service["store"], expected_chunks())
    stored = {k.rsplit("/", 1)[1] for k in service["store"].data[""] if k.startswith("sentences/kb/")}
    assert stored == (set(expected_chunks()) if service["sentences"] else set())
