"""The in-memory hybrid index of one collection: immutable segments seen through one view.

A `Segment` holds some chunks with their vectors, postings (lexical statistics) and dense index;
it never changes once built. A `CollectionIndex` is a view over the live segments minus the
deleted documents, numbering their rows one after the other. A commit adds a segment and a merge
replaces several with one; each builds a new view and swaps it in, so a search never sees a
half-updated index. BM25 uses collection-wide statistics (see `lexical.py`) and dense search takes
each segment's best and merges them, so a view ranks exactly as one segment holding the same
chunks in the same order would. Dense search is exact below `hnsw_threshold` vectors per segment
and HNSW above it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .dense import DenseIndex
from .fusion import Hit, fuse, topk
from .lexical import Analyzer, Postings, bm25_scores

__all__ = ["Analyzer", "ChunkRecord", "CollectionIndex", "DenseIndex", "DocumentInfo", "Hit", "Segment", "topk"]


@dataclass(frozen=True)
class ChunkRecord:
    """What the index keeps about one chunk (its text lives in object storage too)."""

    chunk_id: str
    document_id: str
    document_name: str
    position: int
    text: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass
class DocumentInfo:
    document_id: str
    name: str
    object_key: str
    size_bytes: int
    sha256: str
    chunks: int
    metadata: dict[str, str] = field(default_factory=dict)
    ingested_unix_ns: int = 0
    # The chunking the document was cut with ("size/overlap"); a change re-chunks it.
    chunking: str = ""


def corpus_version(chunk_ids: Sequence[str]) -> str:
    """Content-addressed corpus version: the hash of the sorted chunk ids."""
    h = hashlib.sha256()
    for cid in sorted(chunk_ids):
        h.update(cid.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


class Segment:
    """Immutable chunks of one collection: records, vectors, postings, dense index, documents."""

    def __init__(
        self,
        seg_id: str,
        records: Sequence[ChunkRecord],
        vectors: np.ndarray,
        documents: Mapping[str, DocumentInfo],
        postings: Postings,
        *,
        hnsw_threshold: int = 50_000,
        created_unix_ns: int = 0,
    ) -> None:
        if len(records) != len(vectors) and len(records):
            raise ValueError(f"{len(records)} records but {len(vectors)} vectors")
        self.id = seg_id
        self.records = list(records)
        dim = vectors.shape[1] if vectors.ndim == 2 else 0
        self.vectors = np.asarray(vectors, np.float32).reshape(len(self.records), dim)
        self.documents = dict(documents)
        self.postings = postings
        self.created_unix_ns = created_unix_ns or time.time_ns()
        self.dense = DenseIndex(self.vectors, hnsw_threshold)
        self.row_of = {r.chunk_id: i for i, r in enumerate(self.records)}
        meta: dict[tuple[str, str], list[int]] = {}
        docs: dict[str, list[int]] = {}
        for i, r in enumerate(self.records):
            docs.setdefault(r.document_id, []).append(i)
            for kv in r.metadata.items():
                meta.setdefault(kv, []).append(i)
        self.meta = {kv: np.asarray(v, np.int64) for kv, v in meta.items()}
        self.doc_rows = {d: np.asarray(v, np.int64) for d, v in docs.items()}

    def __len__(self) -> int:
        return len(self.records)

    def live_mask(self, deleted: frozenset[str] | set[str]) -> np.ndarray:
        live = np.ones(len(self.records), bool)
        for d in deleted:
            rows = self.doc_rows.get(d)
            if rows is not None:
                live[rows] = False
        return live


class _RowOf(Mapping[str, int]):
    """chunk id -> row of the view, over the segments' own maps (nothing built per view)."""

    def __init__(self, view: CollectionIndex) -> None:
        self.view = view

    def __getitem__(self, cid: str) -> int:
        for seg, live, off in zip(self.view.segments, self.view.live, self.view.offsets, strict=False):
            row = seg.row_of.get(cid)
            if row is not None and live[row]:
                return int(off) + row
        raise KeyError(cid)

    def __iter__(self) -> Iterator[str]:
        for seg, live in zip(self.view.segments, self.view.live, strict=True):
            for cid, row in seg.row_of.items():
                if live[row]:
                    yield cid

    def __len__(self) -> int:
        return len(self.view)


class CollectionIndex:
    """A view over live segments minus deleted documents; rows are numbered segment after segment."""

    def __init__(
        self,
        records: Sequence[ChunkRecord],
        vectors: np.ndarray,
        *,
        analyzer: Analyzer,
        hnsw_threshold: int = 50_000,
        dim: int = 0,
        bm25_params: tuple[float, float] = (1.2, 0.75),
    ) -> None:
        """One segment built from `records` and `vectors` (evaluation, tests)."""
        dim = vectors.shape[1] if len(records) else dim
        vecs = np.asarray(vectors, np.float32).reshape(len(records), dim)
        seg = Segment(
            "single",
            records,
            vecs,
            {},
            Postings.build(analyzer.many([r.text for r in records])),
            hnsw_threshold=hnsw_threshold,
        )
        self._setup([seg], {}, analyzer, bm25_params)
        self.version = corpus_version([r.chunk_id for r in records]) if records else ""

    @classmethod
    def over(
        cls,
        segments: Sequence[Segment],
        deleted: Mapping[str, frozenset[str]],
        *,
        analyzer: Analyzer,
        bm25_params: tuple[float, float],
        version: str = "",
    ) -> CollectionIndex:
        view = cls.__new__(cls)
        view._setup(segments, deleted, analyzer, bm25_params)
        view.version = version
        return view

    def _setup(
        self,
        segments: Sequence[Segment],
        deleted: Mapping[str, frozenset[str]],
        analyzer: Analyzer,
        bm25_params: tuple[float, float],
    ) -> None:
        self.segments = list(segments)
        self.deleted = {s.id: frozenset(deleted.get(s.id, ())) for s in self.segments}
        self.live = [s.live_mask(self.deleted[s.id]) for s in self.segments]
        self.offsets = np.cumsum([0] + [len(s) for s in self.segments])[:-1].astype(np.int64)
        self.n_rows = sum(len(s) for s in self.segments)
        self.analyzer = analyzer
        self.bm25_params = bm25_params
        self.row_of: Mapping[str, int] = _RowOf(self)
        self._live_count = int(sum(int(m.sum()) for m in self.live))
        dims = [s.vectors.shape[1] for s in self.segments if len(s)]
        self.dim = dims[0] if dims else 0

    @classmethod
    def empty(cls, analyzer: Analyzer, dim: int = 0) -> CollectionIndex:
        return cls([], np.zeros((0, dim), np.float32), analyzer=analyzer, dim=dim)

    def __len__(self) -> int:
        return self._live_count

    @property
    def records(self) -> list[ChunkRecord]:
        """Every live record, in row order (O(n): for tests and tools, not the search path)."""
        return [
            r
            for s, live in zip(self.segments, self.live, strict=True)
            for r, ok in zip(s.records, live, strict=True)
            if ok
        ]

    def _locate(self, row: int) -> tuple[int, int]:
        i = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return i, row - int(self.offsets[i])

    def record(self, row: int) -> ChunkRecord:
        i, local = self._locate(row)
        return self.segments[i].records[local]

    def vectors_at(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        out = np.zeros((len(rows), self.dim), np.float32)
        seg = np.searchsorted(self.offsets, rows, side="right") - 1
        for i in np.unique(seg):
            sel = seg == i
            out[sel] = self.segments[i].vectors[rows[sel] - self.offsets[i]]
        return out

    def allowed_rows(self, filters: Mapping[str, str]) -> np.ndarray | None:
        """Live rows whose metadata has every filter pair; None when there is no filter."""
        if not filters:
            return None
        parts = []
        for seg, live, off in zip(self.segments, self.live, self.offsets, strict=True):
            rows: np.ndarray | None = None
            for kv in filters.items():
                posting = seg.meta.get(kv, np.zeros(0, np.int64))
                rows = posting if rows is None else np.intersect1d(rows, posting, assume_unique=True)
            if rows is not None and len(rows):
                parts.append(rows[live[rows]] + off)
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def bm25_all(self, query: str) -> np.ndarray:
        """Every row's BM25 score (0 for deleted rows), with collection-wide statistics."""
        parts = list(zip((s.postings for s in self.segments), self.live, strict=True))
        per = bm25_scores(self.analyzer.tokens(query), parts, *self.bm25_params)
        return np.concatenate(per) if per else np.zeros(0, np.float32)

    def dense_search(self, qvec: np.ndarray, k: int, allowed: np.ndarray | None) -> np.ndarray:
        """The best `k` live rows by inner product over all segments (ties: lower row first)."""
        scores, rows = [], []
        for seg, live, off in zip(self.segments, self.live, self.offsets, strict=True):
            local = None
            if allowed is not None:
                sel = (allowed >= off) & (allowed < off + len(seg))
                local = allowed[sel] - off
            s, r = seg.dense.search(qvec, k, local, None if live.all() else live)
            scores.append(np.asarray(s, np.float32))
            rows.append(np.asarray(r, np.int64) + off)
        if not scores:
            return np.zeros(0, np.int64)
        s, r = np.concatenate(scores), np.concatenate(rows)
        return r[np.lexsort((r, -s))][:k]

    def search(
        self,
        query: str,
        qvec: np.ndarray | None,
        *,
        top_k: int,
        mode: str = "hybrid",
        fusion: str = "weighted",
        rrf_k: int = 60,
        dense_weight: float = 0.5,
        candidates: int = 100,
        filters: Mapping[str, str] | None = None,
        timings: dict[str, int] | None = None,
    ) -> list[Hit]:
        """Hybrid (or single-retriever) search; `timings` receives bm25/dense/fusion ns."""
        t = timings if timings is not None else {}
        cands = self.retrieve(query, qvec, n_cand=max(candidates, top_k), mode=mode, filters=filters, timings=t)
        if cands is None:
            return []
        t0 = time.perf_counter_ns()
        hits = fuse(
            *cands,
            self.vectors_at,
            qvec,
            mode=mode,
            fusion=fusion,
            rrf_k=rrf_k,
            dense_weight=dense_weight,
            limit=top_k,
        )
        t["fusion"] = time.perf_counter_ns() - t0
        return hits

    def retrieve(
        self,
        query: str,
        qvec: np.ndarray | None,
        *,
        n_cand: int,
        mode: str = "hybrid",
        filters: Mapping[str, str] | None = None,
        timings: dict[str, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """Each retriever's candidates: (bm25 rows, dense rows, every row's BM25 score); None
        when nothing can match."""
        t = timings if timings is not None else {}
        if not len(self):
            return None
        allowed = self.allowed_rows(filters or {})
        if allowed is not None and len(allowed) == 0:
            return None
        bm_rows = np.zeros(0, np.int64)
        bm_all = None
        if mode in ("hybrid", "bm25"):
            t0 = time.perf_counter_ns()
            bm_all = self.bm25_all(query)
            bm_rows = allowed[topk(bm_all[allowed], n_cand)] if allowed is not None else topk(bm_all, n_cand)
            bm_rows = bm_rows[bm_all[bm_rows] > 0]
            t["bm25"] = time.perf_counter_ns() - t0
        de_rows = np.zeros(0, np.int64)
        if mode in ("hybrid", "dense") and qvec is not None:
            t0 = time.perf_counter_ns()
            de_rows = self.dense_search(qvec, n_cand, allowed)
            t["dense"] = time.perf_counter_ns() - t0
        return bm_rows, de_rows, bm_all
