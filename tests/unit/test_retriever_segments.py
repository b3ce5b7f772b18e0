"""The segmented index with no network: many commits rank exactly as one build; commits write only
what they add; merges, garbage collection, the fence, format-1 indexes, and replicas following
CURRENT (missing segments refused, staleness reported)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kernel.errors import ErrorKind, ServiceError
from services.retriever import segments
from services.retriever.catalog import Catalog
from services.retriever.core import Retriever, SearchParams, Settings
from services.retriever.follower import Follower
from services.retriever.index import ChunkRecord, CollectionIndex, DocumentInfo
from services.retriever.lexical import Analyzer
from services.retriever.merge import MergePolicy
from services.retriever.ports import ObjectMeta, PutOutcome
from tests.support.retriever_doubles import DictStore, HashingEncoder

WORDS = (
    "gpu tensor matrix object bucket latency bread yeast flour protein cell gene virus vaccine storage "
    "network neural model cache disk memory query index segment merge replica lease fence vector score"
).split()
QUERIES = ["tensor matrix gpu", "bread yeast", "gene virus vaccine cell", "object bucket latency", "index merge"]


class CountingStore(DictStore):
    """DictStore that counts the bytes written, keeps each object's time, and can be cut off (the
    store is unreachable)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_written = 0
        self.down = False
        self.mtime: dict[str, int] = {}
        self.reads = self.lists = 0

    async def put_many(self, items: Sequence[tuple[str, bytes]], *, backend: str = "") -> list[PutOutcome]:
        if self.down:
            raise OSError("store unreachable")
        self.bytes_written += sum(len(v) for _, v in items)
        self.mtime.update({k: time.time_ns() for k, _ in items})
        return await super().put_many(items, backend=backend)

    async def read(self, key: str, *, backend: str = "") -> tuple[bytes, str]:
        if self.down:
            raise OSError("store unreachable")
        self.reads += 1
        return await super().read(key, backend=backend)

    async def list(self, prefix: str, *, backend: str = "") -> list[ObjectMeta]:
        self.lists += 1
        if self.down:
            raise OSError("store unreachable")
        return [replace(o, last_modified_unix_ns=self.mtime.get(o.key, 0)) for o in await super().list(prefix)]


def corpus(n_docs: int, seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)
    return {
        f"doc{i:03d}": [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))) for _ in range(rng.randint(1, 4))
        ]
        for i in range(n_docs)
    }


async def batch(docs: dict[str, list[str]]) -> tuple[dict[str, DocumentInfo], list[ChunkRecord], np.ndarray]:
    infos, recs = {}, []
    for d, texts in docs.items():
        infos[d] = DocumentInfo(d, f"{d}.txt", f"docs/kb/{d}/{d}.txt", 1, "x", len(texts), {"topic": d[-1]})
        for i, t in enumerate(texts):
            recs.append(
                ChunkRecord(
                    hashlib.sha256(f"{d}/{i}/{t}".encode()).hexdigest()[:20], d, f"{d}.txt", i, t, {"topic": d[-1]}
                )
            )
    vecs = await HashingEncoder().encode([r.text for r in recs])
    return infos, recs, vecs


async def make(tmp: Path, store: DictStore, **kw: object) -> Retriever:
    values: dict[str, object] = {"follow_interval_s": 0, "merge_factor": 0, **kw}
    r = Retriever(store, HashingEncoder(), Settings(state_dir=tmp, **values), Catalog(store))  # type: ignore[arg-type]
    await r.start()
    return r


async def close(r: Retriever) -> None:
    await r.close()


def rankings(index: CollectionIndex, qvecs: np.ndarray, filters: dict[str, str] | None = None) -> list:
    out = []
    for q, qv in zip(QUERIES, qvecs, strict=True):
        for mode, fusion in (("hybrid", "weighted"), ("hybrid", "rrf"), ("bm25", "rrf"), ("dense", "rrf")):
            hits = index.search(q, qv, top_k=10, mode=mode, fusion=fusion, candidates=20, filters=filters)
            out.append([(index.record(h.row).chunk_id, h.score, h.bm25_rank, h.dense_rank) for h in hits])
    return out


async def test_many_commits_rank_exactly_as_one_build(tmp_path: Path) -> None:
    docs = corpus(60)
    store = DictStore()
    r = await make(tmp_path, store)
    names = list(docs)
    for i in range(0, 60, 6):  # ten commits, ten segments
        await r.commit("kb", *await batch({d: docs[d] for d in names[i : i + 6]}))
    # Replace two documents and delete one: delete sets on older segments.
    changed = {"doc003": ["bread yeast flour bread"], "doc031": ["gene gene virus"]}
    await r.commit("kb", *await batch(changed))
    await r.delete_document("kb", "doc010")
    view = r.collections["kb"].index
    assert len(view.segments) == 11 and len(view) == len(view.records)
    single = CollectionIndex(
        view.records,
        view.vectors_at(np.arange(view.n_rows)[np.concatenate(view.live)]),
        analyzer=Analyzer(),
        bm25_params=view.bm25_params,
    )
    qvecs = await HashingEncoder().encode(QUERIES)
    assert rankings(view, qvecs) == rankings(single, qvecs)
    assert rankings(view, qvecs, {"topic": "3"}) == rankings(single, qvecs, {"topic": "3"})
    assert "doc010" not in r.collections["kb"].live.documents and len(r.collections["kb"].live.documents) == 59

    # A merge changes nothing a search sees; a fresh replica loading the store agrees too.
    live = r.collections["kb"].live
    before = rankings(live.view, qvecs)
    r.opts.merge.__init__(factor=4, floor_chunks=1000)  # type: ignore[misc]
    while await live.merge_once():
        pass
    assert len(live.view.segments) < 11 and rankings(live.view, qvecs) == before
    r2 = await make(tmp_path / "b", store)
    assert r2.collections["kb"].live.version == live.version
    assert rankings(r2.collections["kb"].index, qvecs) == before
    await close(r)
    await close(r2)


async def test_a_commit_writes_only_what_it_adds(tmp_path: Path) -> None:
    store = CountingStore()
    r = await make(tmp_path, store)
    small = corpus(3, seed=9)
    await r.commit("empty", *await batch(small))
    empty_bytes = store.bytes_written
    await r.commit("big", *await batch(corpus(400, seed=1)))
    store.bytes_written = 0
    await r.commit("big", *await batch(small))
    assert store.bytes_written <= 1.5 * empty_bytes  # not the 400 documents again
    m = r.collections["big"].live.manifest
    assert len(m.segments) == 2 and m.chunks == len(r.collections["big"].index)
    await close(r)


async def test_merges_run_in_the_background_and_gc_waits_for_the_grace_period(tmp_path: Path) -> None:
    store = CountingStore()
    r = await make(tmp_path, store, merge_factor=3, gc_grace_s=3600)
    docs = corpus(9, seed=3)
    for d in docs:
        await r.commit("kb", *await batch({d: docs[d]}))
    live = r.collections["kb"].live
    await live.wait_merges()
    assert len(live.manifest.segments) < 9
    seg_dirs = {k.split("/")[3] for k in store.data[""] if k.startswith("index/kb/segments/")}
    assert len(seg_dirs) > len(live.manifest.segments)  # merged-away files stay within the grace period
    await segments.collect_garbage(store, "kb", live.manifest, 0.0)
    seg_dirs = {k.split("/")[3] for k in store.data[""] if k.startswith("index/kb/segments/")}
    assert seg_dirs == {e.id for e in live.manifest.segments}
    r2 = await make(tmp_path / "b", store)  # what is left loads and verifies
    assert r2.collections["kb"].live.version == live.version
    await close(r)
    await close(r2)


def test_tiered_policy() -> None:
    p = MergePolicy(factor=4, floor_chunks=100)
    assert p.pick([("a", 10, 10), ("b", 20, 20), ("c", 5000, 5000)]) == []
    assert p.pick([("x", 900, 900)] + [(s, 10, 10) for s in "abcde"]) == ["a", "b", "c", "d"]  # neighbours only
    assert p.pick([(s, 10, 10) for s in "ab"] + [("big", 9000, 9000)] + [(s, 10, 10) for s in "cd"]) == []
    assert p.pick([("a", 5000, 5000), ("b", 10, 10), ("c", 1000, 3000)]) == ["c"]  # mostly deleted: rewritten


async def test_stale_fence_is_refused(tmp_path: Path) -> None:
    store = DictStore()
    r = await make(tmp_path, store)
    await r.commit("kb", *await batch(corpus(2)), fence=5)
    with pytest.raises(ServiceError) as err:
        await r.commit("kb", *await batch(corpus(1, seed=4)), fence=4)
    assert err.value.reason == "FENCED_WRITE" and err.value.kind.name == "FAILED_PRECONDITION"
    assert "fence token 4" in err.value.message
    token = 7

    async def lease() -> int:
        return token

    r.fence_reader = lease
    with pytest.raises(ServiceError):
        await r.commit("kb", *await batch(corpus(1, seed=4)), fence=6)
    await r.commit("kb", *await batch(corpus(1, seed=4)), fence=7)
    assert r.collections["kb"].live.manifest.fence_token == 7

    class LostLease:  # the lease holder's own check fails right before CURRENT would be written
        token = 9

        async def check(self) -> None:
            raise ServiceError(ErrorKind.FAILED_PRECONDITION, "lease lost", reason="FENCED_WRITE")

    before = store.data[""]["index/kb/CURRENT"]
    with pytest.raises(ServiceError) as err:
        await r.commit("kb", *await batch(corpus(1, seed=5)), fence=LostLease())
    assert err.value.reason == "FENCED_WRITE" and store.data[""]["index/kb/CURRENT"] == before
    await close(r)


async def test_concurrent_writers_on_two_replicas_lose_nothing(tmp_path: Path) -> None:
    """CURRENT is written with a compare-and-swap: a writer that lost the race follows the
    winner's manifest and re-applies its own change on top of it."""
    store = DictStore()
    a, b = await make(tmp_path / "a", store), await make(tmp_path / "b", store)
    docs = corpus(12, seed=6)
    names = list(docs)
    batches = [await batch({d: docs[d]}) for d in names]
    await asyncio.gather(*(w.commit("kb", *bt) for w, bt in zip([a, b] * 6, batches, strict=True)))
    r = await make(tmp_path / "c", store)
    assert set(r.collections["kb"].live.documents) == set(names)
    assert len(r.collections["kb"].live.manifest.segments) == 12
    for x in (a, b, r):
        await close(x)


def write_format1(store: DictStore, collection: str, recs: list[ChunkRecord], vecs: np.ndarray, docs: dict) -> str:
    """An index exactly as the code before segments wrote it (format 1)."""
    files = {
        "chunks-00000.jsonl": "".join(
            json.dumps(
                {
                    "chunk_id": r.chunk_id,
                    "document_id": r.document_id,
                    "document_name": r.document_name,
                    "position": r.position,
                    "text": r.text,
                    "metadata": dict(r.metadata),
                }
            )
            + "\n"
            for r in recs
        ).encode(),
        "documents.json": json.dumps({k: v.__dict__ for k, v in docs.items()}).encode(),
    }
    buf = io.BytesIO()
    np.save(buf, vecs.astype(np.float32))
    files["vectors-00000.npy"] = buf.getvalue()
    hashes = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    version = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]
    manifest = {
        "format": 1,
        "collection": collection,
        "version": version,
        "chunks": len(recs),
        "documents": len(docs),
        "dimension": vecs.shape[1],
        "created_unix_ns": time.time_ns(),
        "files": {n: {"sha256": h, "size_bytes": len(files[n])} for n, h in hashes.items()},
    }
    for n, d in files.items():
        store.data[""][f"index/{collection}/{version}/{n}"] = d
    store.data[""][f"index/{collection}/{version}/manifest.json"] = json.dumps(manifest).encode()
    store.data[""][f"index/{collection}/CURRENT"] = version.encode()
    return version


async def test_format1_indexes_load_and_the_next_commit_keeps_them(tmp_path: Path) -> None:
    store = DictStore()
    infos, recs, vecs = await batch(corpus(10))
    version = write_format1(store, "old", recs, vecs, infos)
    r = await make(tmp_path, store)
    live = r.collections["old"].live
    assert live.version == version and len(live.view) == len(recs) and len(live.documents) == 10
    res = await r.search("old", "bread yeast", SearchParams(top_k=3, no_cache=True, mode="bm25"))
    assert res.hits
    await r.commit("old", *await batch({"new": ["tensor matrix"]}))
    m = live.manifest
    assert m.segments[0].path == f"{version}/" and m.segments[0].format == 1
    r2 = await make(tmp_path / "b", store)
    assert len(r2.collections["old"].index) == len(recs) + 1
    await close(r)
    await close(r2)


async def test_replica_follows_refuses_missing_segments_and_reports_staleness(tmp_path: Path) -> None:
    store = CountingStore()
    writer = await make(tmp_path / "w", store)
    reader = await make(tmp_path / "r", store, max_staleness_s=0.3, follow_interval_s=0.5)
    health: list[bool] = []

    async def on_health(ok: bool) -> None:
        health.append(ok)

    follower = Follower(reader, on_health)
    await writer.commit("kb", *await batch(corpus(5)))
    await follower.poll()
    assert reader.collections["kb"].live.version == writer.collections["kb"].live.version
    loaded = set(reader.collections["kb"].live.segments)

    await writer.commit("kb", *await batch(corpus(2, seed=8)))
    await follower.poll()
    assert set(reader.collections["kb"].live.segments) > loaded  # only the new segment was read
    good = reader.collections["kb"].live.version

    # A manifest that names a missing segment: refused, the replica keeps its version.
    await writer.commit("kb", *await batch(corpus(1, seed=11)))
    new_seg = writer.collections["kb"].live.manifest.segments[-1]
    for k in [k for k in store.data[""] if k.startswith(f"index/kb/{new_seg.path}")]:
        del store.data[""][k]
    await follower.poll()
    assert reader.collections["kb"].live.version == good and "kb" in follower.errors
    assert (await reader.search("kb", "gene", SearchParams(no_cache=True))).index_version == good

    # The store goes away: past the staleness bound the replica stops serving, visibly.
    store.down = True
    await follower._report()
    assert health == [True]
    await asyncio.sleep(0.35)
    with pytest.raises(OSError):
        await follower.poll()
    await follower._report()
    assert health == [True, False]
    with pytest.raises(ServiceError) as err:
        await reader.search("kb", "gene", SearchParams())
    assert err.value.reason == "INDEX_STALE"
    store.down = False
    await follower.poll()
    await follower._report()
    assert health == [True, False, True]
    await close(writer)
    await close(reader)
