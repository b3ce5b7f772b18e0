"""The retriever's core with no network: index and fusion, commits and persisted segments,
corrupt-segment refusal, jobs (pipeline, per-file errors, cancel, resume after a restart), the
retrieval cache and bucket-prefix watches.

The test doubles (`DictStore`, `HashingEncoder`) are in tests/support/retriever_doubles.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from kernel.errors import ServiceError, unavailable
from services.retriever import job_runner, segments
from services.retriever.catalog import Catalog
from services.retriever.core import SearchParams
from services.retriever.index import Analyzer, ChunkRecord, CollectionIndex, DenseIndex
from services.retriever.job_model import SourceSpec
from services.retriever.job_state import JobStore
from services.retriever.ports import PreconditionFailed
from services.retriever.prefix_watch import PrefixWatchManager
from tests.support.retriever_doubles import DOCS, DictStore, HashingEncoder, close, finish, make, upload


def test_dense_index_is_exact_below_threshold_and_hnsw_above() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(3000, 32)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    exact, hnsw = DenseIndex(v, hnsw_threshold=10_000), DenseIndex(v, hnsw_threshold=1000)
    assert exact.kind == "exact" and hnsw.kind == "hnsw"
    q = v[:50] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    recall = np.mean([len(set(exact.search(x, 10)[1]) & set(hnsw.search(x, 10)[1])) / 10 for x in q])
    assert recall >= 0.9
    assert list(exact.search(v[7], 1)[1]) == [7]
    allowed = np.array([3, 5, 9], dtype=np.int64)
    assert set(exact.search(v[7], 10, allowed)[1]) == {3, 5, 9}
    assert set(hnsw.search(v[7], 10, allowed)[1]) <= {3, 5, 9}


async def test_fusion_modes_filters_and_ranks() -> None:
    enc = HashingEncoder()
    recs = [ChunkRecord(f"c{i}", d, d, 0, t, {"topic": d}) for i, (d, t) in enumerate(DOCS.items())]
    idx = CollectionIndex(recs, await enc.encode([r.text for r in recs]), analyzer=Analyzer())
    q = "tensor cores for neural networks"
    qv = (await enc.encode([q]))[0]
    for mode, fusion in [("hybrid", "rrf"), ("hybrid", "weighted"), ("bm25", ""), ("dense", "")]:
        hits = idx.search(q, qv, top_k=2, mode=mode, fusion=fusion)
        assert idx.records[hits[0].row].document_id == "gpus", (mode, fusion)
        assert len(hits) <= 2
    rrf = idx.search(q, qv, top_k=3, fusion="rrf", rrf_k=10)
    assert rrf[0].bm25_rank == 1 and rrf[0].dense_rank == 1
    assert rrf[0].score == pytest.approx(2 / 11)
    only = idx.search(q, qv, top_k=3, filters={"topic": "s3"})
    assert [idx.records[h.row].document_id for h in only] == ["s3"]
    assert idx.search(q, qv, top_k=3, filters={"topic": "none"}) == []
    assert Analyzer().tokens("对象存储") == ["对", "象", "对象", "存", "象存", "储", "存储"]


async def test_ingest_search_and_persisted_segments(tmp_path: Path) -> None:
    store = DictStore()
    r, jobs = await make(tmp_path / "a", store)
    specs = await upload(store, "kb", DOCS)
    job = await jobs.start_ingest("kb", specs)
    events = await finish(jobs, job.job_id)
    last = events[-1][1]
    assert last.state == "succeeded" and last.documents_done == 3 and last.chunks_done >= 3
    assert [e[0] for e in events] == sorted({e[0] for e in events})
    assert sum(k.startswith("chunks/kb/") for k in store.data[""]) == last.chunks_done
    current = (await store.get("index/kb/CURRENT")).decode()
    assert current.startswith("manifests/") and current.endswith(f"-{last.index_version}.json")
    version = last.index_version
    res = await r.search("kb", "bread dough yeast", SearchParams(top_k=1))
    assert res.hits[0].document_id == "cooking" and "yeast" in res.hits[0].text
    assert {s.name for s in res.timer.stages} >= {"embed", "bm25", "dense", "fusion", "fetch"}
    # Ranking only (an A/B run reads the chunks itself): the same hit, no fetch, no text.
    ranked = await r.search("kb", "bread dough yeast", SearchParams(top_k=1, no_cache=True, no_fetch=True))
    assert [h.chunk_id for h in ranked.hits] == [res.hits[0].chunk_id] and ranked.hits[0].text == ""
    assert "fetch" not in {s.name for s in ranked.timer.stages}
    await close(r, jobs)

    # A new process loads and verifies the same version, with no re-embedding.
    r2, jobs2 = await make(tmp_path / "b", store)
    assert r2.collections["kb"].snapshot.version == version
    res2 = await r2.search("kb", "bread dough yeast", SearchParams(top_k=1, no_cache=True))
    assert res2.hits[0].chunk_id == res.hits[0].chunk_id
    assert r2.encoder.calls == 1  # the query only
    await close(r2, jobs2)

    # A corrupt segment is refused with a clear error and a rebuild path; the rebuild works.
    key = next(k for k in store.data[""] if k.startswith("index/kb/segments/") and "/vectors-" in k)
    blob = bytearray(store.data[""][key])
    blob[-3] ^= 0xFF  # one flipped byte in a vector
    store.data[""][key] = bytes(blob)
    r3, jobs3 = await make(tmp_path / "c", store)
    with pytest.raises(ServiceError) as err:
        await r3.search("kb", "bread", SearchParams())
    assert err.value.reason == "INDEX_CORRUPT" and "SHA-256" in err.value.message
    assert "source_prefix='docs/kb/'" in err.value.message
    job = await jobs3.start_ingest("kb", [], source_prefix="docs/kb/")
    assert (await finish(jobs3, job.job_id))[-1][1].state == "succeeded"
    assert (await r3.search("kb", "bread dough", SearchParams(top_k=1))).hits[0].document_id == "cooking"
    await close(r3, jobs3)


async def test_reingest_is_idempotent_and_changed_file_replaces_its_chunks(tmp_path: Path) -> None:
    store = DictStore()
    r, jobs = await make(tmp_path, store)
    specs = await upload(store, "kb", DOCS)
    v1 = (await finish(jobs, (await jobs.start_ingest("kb", specs)).job_id))[-1][1]
    chunks_before = sorted(k for k in store.data[""] if k.startswith("chunks/"))
    calls = r.encoder.calls
    v2 = (await finish(jobs, (await jobs.start_ingest("kb", specs)).job_id))[-1][1]
    assert v2.index_version == v1.index_version and r.encoder.calls == calls
    assert sorted(k for k in store.data[""] if k.startswith("chunks/")) == chunks_before

    await store.put_many([("docs/kb/cooking/cooking.txt", b"Pasta is boiled in salted water for ten minutes.")])
    v3 = (await finish(jobs, (await jobs.start_ingest("kb", specs[2:])).job_id))[-1][1]
    assert v3.index_version != v1.index_version
    texts = [rec.text for rec in r.collections["kb"].snapshot.records if rec.document_id == "cooking"]
    assert texts == ["Pasta is boiled in salted water for ten minutes."]
    chunk_objs = [v.decode() for k, v in store.data[""].items() if k.startswith("chunks/kb/")]
    assert not any("yeast" in t for t in chunk_objs)  # the old chunks are gone from storage
    res = await r.search("kb", "bread yeast", SearchParams(top_k=3, mode="bm25"))
    assert all(h.document_id != "cooking" or "Pasta" in h.text for h in res.hits)

    docs, _, total = r.list_documents("kb", 10, "")
    assert total == 3 and {d.document_id for d in docs} == set(DOCS)
    await r.delete_document("kb", "gpus")
    assert "gpus" not in r.collections["kb"].snapshot.documents
    await close(r, jobs)


async def test_bad_files_are_reported_and_the_job_goes_on(tmp_path: Path) -> None:
    store = DictStore()
    r, jobs = await make(tmp_path, store, max_file_bytes=10_000)
    good = await upload(store, "kb", {"gpus": DOCS["gpus"]})
    await store.put_many(
        [
            ("docs/kb/e/empty.txt", b""),
            ("docs/kb/p/bad.pdf", b"%PDF-1.4 garbage"),
            ("docs/kb/b/big.txt", b"x " * 10_000),
        ]
    )
    extra = [
        SourceSpec(k) for k in ("docs/kb/e/empty.txt", "docs/kb/p/bad.pdf", "docs/kb/b/big.txt", "docs/kb/x/gone.md")
    ]
    last = (await finish(jobs, (await jobs.start_ingest("kb", good + extra)).job_id))[-1][1]
    assert last.state == "partial" and last.documents_done == 5
    reasons = {e.name: e.reason for e in last.file_errors}
    assert set(reasons) == {"empty.txt", "bad.pdf", "big.txt", "gone.md"}
    assert "empty" in reasons["empty.txt"] and "PDF" in reasons["bad.pdf"] and "limit" in reasons["big.txt"]
    assert r.collections["kb"].snapshot.documents.keys() == {"gpus"}
    only_bad = (await finish(jobs, (await jobs.start_ingest("kb", extra[:1])).job_id))[-1][1]
    assert only_bad.state == "failed" and "empty" in only_bad.error
    await close(r, jobs)


async def test_cancel_leaves_the_index_at_its_last_version(tmp_path: Path) -> None:
    store = DictStore()
    r, jobs = await make(tmp_path, store)
    v1 = await finish(jobs, (await jobs.start_ingest("kb", await upload(store, "kb", {"gpus": DOCS["gpus"]}))).job_id)
    version = v1[-1][1].index_version
    r.encoder.gate = asyncio.Event()  # embedding blocks: the job cannot finish
    job = await jobs.start_ingest("kb", await upload(store, "kb", {"s3": DOCS["s3"], "cooking": DOCS["cooking"]}))
    await asyncio.sleep(0.1)
    view = await jobs.cancel(job.job_id)
    assert view.state == "cancelled"
    assert r.collections["kb"].snapshot.version == version
    assert (await store.get("index/kb/CURRENT")).decode().endswith(f"-{version}.json")
    assert (await jobs.get(job.job_id)).state == "cancelled"
    await close(r, jobs)


async def test_job_resumes_after_restart_without_loss_or_duplicates(tmp_path: Path) -> None:
    store = DictStore()
    docs = {f"d{i}": f"Document {i} is about topic {i}. " * 6 for i in range(12)}
    r, jobs = await make(tmp_path, store, write_batch=2, embed_batch=2)
    specs = await upload(store, "kb", docs)
    store.delay_s = 0.05  # each batch write takes a while, so the "crash" lands mid-job
    job = await jobs.start_ingest("kb", specs)
    # Let a few batches commit, then "crash": stop the process's tasks without cancelling the job.
    while (await jobs.get(job.job_id)).documents_done < 4:
        await asyncio.sleep(0.01)
    await close(r, jobs)
    state = JobStore(store)
    files, _chunks = await state.batches((await state.read(job.job_id)).batches)
    done_before = {f.document_id for f in files if f.status == "done"}
    assert 0 < len(done_before) < 12

    store.delay_s = 0.0
    r2, jobs2 = await make(tmp_path, store, write_batch=2, embed_batch=2)  # resumes the job
    last = (await finish(jobs2, job.job_id))[-1][1]
    assert last.state == "succeeded" and last.documents_done == 12
    recs = r2.collections["kb"].snapshot.records
    ids = [x.chunk_id for x in recs]
    assert len(ids) == len(set(ids))
    assert {x.document_id for x in recs} == set(docs)
    assert sum(k.startswith("chunks/kb/") for k in store.data[""]) == len(ids)
    await close(r2, jobs2)


async def test_a_long_job_rides_out_a_peer_outage_that_starts_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for an unavailable peer counts from the last committed batch: a job already
    running longer than that wait still retries (it failed at once when the window was counted
    from the job's start)."""
    monkeypatch.setattr(job_runner, "PEER_WAIT_S", 1.5)
    store = DictStore()
    docs = {f"d{i}": f"Document {i} is about topic {i}. " * 6 for i in range(40)}
    r, jobs = await make(tmp_path, store, write_batch=2, embed_batch=2, embed_concurrency=1)
    enc = r.encoder
    plain = enc.encode
    t0 = asyncio.get_running_loop().time()
    failed: list[float] = []

    async def encode(texts: Sequence[str], *, timeout: float | None = None) -> np.ndarray:
        await asyncio.sleep(0.1)
        if not failed and asyncio.get_running_loop().time() - t0 > 2.0:
            failed.append(asyncio.get_running_loop().time() - t0)
            raise unavailable("the embedder is restarting")
        return await plain(texts, timeout=timeout)

    enc.encode = encode  # type: ignore[method-assign]
    job = await jobs.start_ingest("kb", await upload(store, "kb", docs))
    last = (await finish(jobs, job.job_id))[-1][1]
    assert failed, "the outage never happened: the job ended before it"
    assert last.state == "succeeded" and last.documents_done == 40, last
    await close(r, jobs)


class LostReplyStore(DictStore):
    """A store whose next CURRENT write lands but then reports 412, as a write retried after a
    lost reply sees its own change."""

    lose_next = False

    async def put_if(
        self, key: str, data: bytes, *, if_match: str = "", if_none_match: bool = False, backend: str = ""
    ) -> str:
        etag = await super().put_if(key, data, if_match=if_match, if_none_match=if_none_match, backend=backend)
        if self.lose_next and key.endswith("/CURRENT"):
            self.lose_next = False
            raise PreconditionFailed(key)
        return etag


async def test_a_publish_whose_reply_was_lost_is_not_published_twice(tmp_path: Path) -> None:
    store = LostReplyStore()
    r, jobs = await make(tmp_path, store)
    await finish(jobs, (await jobs.start_ingest("kb", await upload(store, "kb", {"gpus": DOCS["gpus"]}))).job_id)
    store.lose_next = True
    last = (await finish(jobs, (await jobs.start_ingest("kb", await upload(store, "kb", {"s3": DOCS["s3"]}))).job_id))[
        -1
    ][1]
    assert last.state == "succeeded", last
    current = (await store.get("index/kb/CURRENT")).decode()
    assert current.endswith(f"-{last.index_version}.json"), (current, last.index_version)
    assert r.collections["kb"].snapshot.version == last.index_version
    assert sorted({x.document_id for x in r.collections["kb"].snapshot.records}) == ["gpus", "s3"]
    await close(r, jobs)


async def test_multiple_target_backends_and_search_per_backend(tmp_path: Path) -> None:
    store = DictStore()
    r, jobs = await make(tmp_path, store)
    specs = await upload(store, "kb", DOCS)
    last = (await finish(jobs, (await jobs.start_ingest("kb", specs, target_backends=["", "s3"])).job_id))[-1][1]
    assert [b.backend for b in last.backends] == ["default", "s3"]
    assert all(b.objects_written == last.chunks_done and b.ops_per_s > 0 and b.p50_ns > 0 for b in last.backends)
    res = await r.search("kb", "buckets", SearchParams(top_k=1, backend="s3"))
    fetch = next(s for s in res.timer.stages if s.name == "fetch")
    assert fetch.backend == "s3" and fetch.ttfb_ns == 500 and res.hits[0].text
    missing = await r.search("kb", "buckets", SearchParams(top_k=1, backend="other", no_cache=True))
    assert missing.hits[0].error is not None and missing.hits[0].error.reason == "CHUNK_MISSING"
    await close(r, jobs)


async def test_retrieval_cache_hits_and_is_invalidated_by_a_new_version(tmp_path: Path) -> None:
    store = DictStore()
    r, jobs = await make(tmp_path, store)
    await finish(jobs, (await jobs.start_ingest("kb", await upload(store, "kb", DOCS))).job_id)
    a = await r.search("kb", "tensor cores", SearchParams(top_k=2))
    b = await r.search("kb", "tensor cores", SearchParams(top_k=2))
    assert not a.cache_hit and b.cache_hit and [h.chunk_id for h in a.hits] == [h.chunk_id for h in b.hits]
    assert not {s.name for s in b.timer.stages} & {"embed", "bm25"} and b.hits[0].text
    assert r.cache_stats()["hits"] == 1
    await finish(jobs, (await jobs.start_ingest("kb", await upload(store, "kb", {"new": "tensor cores again"}))).job_id)
    c = await r.search("kb", "tensor cores", SearchParams(top_k=2))
    assert not c.cache_hit and c.index_version != a.index_version
    assert await r.purge_cache() >= 1
    await close(r, jobs)


async def test_search_validation(tmp_path: Path) -> None:
    r, jobs = await make(tmp_path)
    for params, reason in [
        (SearchParams(top_k=101), "TOP_K_OUT_OF_RANGE"),
        (SearchParams(dense_weight=1.5), "INVALID_ARGUMENT"),
        (SearchParams(mode="magic"), "INVALID_ARGUMENT"),
    ]:
        with pytest.raises(ServiceError) as err:
            await r.search("default", "q", params)
        assert err.value.reason == reason
    with pytest.raises(ServiceError) as err:
        await r.search("missing", "q", SearchParams())
    assert err.value.reason == "COLLECTION_NOT_FOUND"
    assert (await r.search("default", "q", SearchParams())).hits == []
    await close(r, jobs)


async def test_watch_ingests_new_and_changed_objects_once(tmp_path: Path) -> None:
    store = DictStore()
    r, jobs = await make(tmp_path, store)
    catalog = Catalog(store)
    watches = PrefixWatchManager(jobs, catalog)
    w = await watches.start_watch("auto", "auto_ingest/", interval_s=3600)
    await watches.stop()  # drive polls by hand

    async def poll() -> str:
        return await watches.poll(await catalog.prefix_watch(w["watch_id"]))

    await store.put_many([("auto_ingest/a.txt", DOCS["gpus"].encode())])
    assert await poll()
    assert await poll() == ""  # nothing new
    await store.put_many([("auto_ingest/a.txt", DOCS["s3"].encode()), ("auto_ingest/b.md", DOCS["cooking"].encode())])
    assert await poll()
    w = await catalog.prefix_watch(w["watch_id"])
    assert {f["status"] for f in w["files"].values()} == {"ingested"}
    assert [x["watch_id"] for x in await watches.list()] == [w["watch_id"]]
    assert not (await watches.stop_watch(w["watch_id"]))["active"]
    assert not (await catalog.prefix_watch(w["watch_id"]))["active"]
    snap = r.collections["auto"].snapshot
    assert len(snap.documents) == 2 and any("buckets" in x.text for x in snap.records)
    assert (await segments.read_current(store, "auto")).endswith(f"-{snap.version}.json")
    await close(r, jobs)


@pytest.mark.slow
async def test_milvus_backend_gives_the_same_answers_as_faiss(tmp_path: Path) -> None:
    """An index written by the in-process backend, opened in stateless Milvus mode: the replica fills
    the empty Milvus collection from the index files, keeps no rows itself, and dense search (and
    a metadata filter) answers exactly as FAISS does. Hybrid ranks with Milvus's BM25 (its own
    parameters), so only its best hit is compared here; test_milvus_hybrid.py measures the rest."""
    store = DictStore()
    specs = await upload(store, "kb", DOCS)
    answers = {}
    for backend in ("faiss", "milvus"):
        r, jobs = await make(tmp_path / backend, store, index_backend=backend, milvus_uri=str(tmp_path / "milvus.db"))
        if backend == "faiss":
            await finish(jobs, (await jobs.start_ingest("kb", specs)).job_id)
        else:  # loaded from the persisted segments: no rows in this replica, all of them in Milvus
            live = r.collections["kb"].live
            assert live.view.n_rows == 0 and live.chunks == live.manifest.chunks > 0
            assert live.milvus is not None and live.milvus.count() == live.chunks
        out = []
        for q in ("tensor cores", "buckets and objects", "bake bread"):
            res = await r.search("kb", q, SearchParams(top_k=3, mode="dense", no_cache=True))
            # Ties (equal scores) may come back in either order: compare canonically.
            out.append(sorted((-round(h.score, 4), h.chunk_id) for h in res.hits))
            res = await r.search("kb", q, SearchParams(top_k=3, mode="hybrid", no_cache=True))
            out.append(res.hits[0].document_id)
        flt = await r.search("kb", "tensor cores", SearchParams(top_k=3, mode="dense", filters={"topic": "s3"}))
        out.append([h.document_id for h in flt.hits])
        answers[backend] = out
        await close(r, jobs)
    assert answers["milvus"] == answers["faiss"]
    assert answers["faiss"][-1] == ["s3"]
