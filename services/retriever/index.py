"""The in-process hybrid index of one collection: bm25s for lexical, FAISS for dense.

A `CollectionIndex` is an immutable snapshot: ingestion builds a new one and swaps it in, so a
search never sees a half-updated index. Dense search is exact (`IndexFlatIP`) below
`hnsw_threshold` vectors and HNSW above it. Fusion is reciprocal-rank (RRF) or a weighted sum of
z-normalised scores, computed on the union of both retrievers' candidates with each candidate's
exact score in both retrievers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .chunking import _CJK

_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with we our from has have had been were which can its also than".split()
)
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+", re.UNICODE)


class Analyzer:
    """BM25 tokens: lower-cased words, English stopwords removed, Snowball-stemmed; CJK text as
    character unigrams and bigrams (no spaces to split on)."""

    def __init__(self) -> None:
        import Stemmer

        self.stemmer = Stemmer.Stemmer("english")

    def tokens(self, text: str) -> list[str]:
        raw = _TOKEN.findall(text.lower())
        out: list[str] = []
        prev_cjk = ""
        for t in raw:
            if len(t) == 1 and _CJK.match(t):
                out.append(t)
                if prev_cjk:
                    out.append(prev_cjk + t)
                prev_cjk = t
                continue
            prev_cjk = ""
            if t not in _STOPWORDS:
                out.append(t)
        return [w if _CJK.match(w) else s for w, s in zip(out, self.stemmer.stemWords(out), strict=True)]

    def many(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.tokens(t) for t in texts]


@dataclass(frozen=True)
class ChunkRecord:
    """What the index keeps about one chunk (its text lives in object storage too)."""

    chunk_id: str
    document_id: str
    document_name: str
    position: int
    text: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One fused result: the chunk's row in the snapshot, its fused score and per-retriever ranks."""

    row: int
    score: float
    bm25_rank: int = 0
    dense_rank: int = 0


class BM25:
    """bm25s over pre-analysed tokens; `scores` gives every chunk's score for a query."""

    def __init__(self, tokens: Sequence[list[str]], k1: float = 1.2, b: float = 0.75) -> None:
        import bm25s

        self.n = len(tokens)
        self.model = bm25s.BM25(k1=k1, b=b)
        if self.n:
            self.model.index([t if t else [""] for t in tokens], show_progress=False)

    def scores(self, query_tokens: list[str]) -> np.ndarray:
        if not self.n:
            return np.zeros(0, dtype=np.float32)
        ids = self.model.get_tokens_ids(query_tokens)
        if not ids:
            return np.zeros(self.n, dtype=np.float32)
        return np.asarray(self.model.get_scores_from_ids(ids), dtype=np.float32)


class DenseIndex:
    """FAISS inner-product search over L2-normalised vectors: exact, or HNSW above a threshold."""

    def __init__(self, vectors: np.ndarray, hnsw_threshold: int = 50_000, ef_search: int = 256) -> None:
        import faiss

        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = self.vectors.shape if self.vectors.ndim == 2 else (0, 0)
        self.kind = "hnsw" if n > hnsw_threshold else "exact"
        self.ef_search = ef_search
        if self.kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = 80
            self.index.hnsw.efSearch = ef_search
            self.index.add(self.vectors)
        else:
            self.index = faiss.IndexFlatIP(dim) if dim else None
            if self.index is not None and n:
                self.index.add(self.vectors)

    @property
    def size(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top `k` rows by inner product; `allowed` (sorted row ids) restricts the search."""
        import faiss

        if self.size == 0 or k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        q = np.ascontiguousarray(q.reshape(1, -1), dtype=np.float32)
        if allowed is not None:
            if len(allowed) == 0:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            if self.kind == "exact" or len(allowed) < 10_000:
                sims = self.vectors[allowed] @ q[0]
                top = _topk(sims, k)
                return sims[top], allowed[top]
            params = faiss.SearchParametersHNSW(sel=faiss.IDSelectorBatch(allowed.astype(np.int64)))
            params.efSearch = max(self.ef_search, k)
            scores, ids = self.index.search(q, min(k, len(allowed)), params=params)
        elif self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)  # per call: no shared state between threads
            scores, ids = self.index.search(q, min(k, self.size), params=params)
        else:
            scores, ids = self.index.search(q, min(k, self.size))
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Row positions of the `k` highest scores, best first."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def corpus_version(chunk_ids: Sequence[str]) -> str:
    """Content-addressed corpus version: the hash of the sorted chunk ids."""
    h = hashlib.sha256()
    for cid in sorted(chunk_ids):
        h.update(cid.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


class CollectionIndex:
    """An immutable snapshot of one collection's chunks, vectors, BM25 and FAISS indexes."""

    def __init__(
        self,
        records: Sequence[ChunkRecord],
        vectors: np.ndarray,
        *,
        analyzer: Analyzer,
        hnsw_threshold: int = 50_000,
        dim: int = 0,
        dense_factory: Callable[[np.ndarray, str], Any] | None = None,
        bm25_params: tuple[float, float] = (1.2, 0.75),
    ) -> None:
        """`dense_factory(vectors, corpus_version)` builds another dense index (Milvus)."""
        if len(records) != (len(vectors) if len(records) else 0):
            raise ValueError(f"{len(records)} records but {len(vectors)} vectors")
        self.records = list(records)
        self.analyzer = analyzer
        dim = vectors.shape[1] if len(records) else dim
        self.vectors = np.asarray(vectors, dtype=np.float32).reshape(len(records), dim)
        self.version = corpus_version([r.chunk_id for r in self.records]) if self.records else ""
        self.bm25 = BM25(analyzer.many([r.text for r in self.records]), *bm25_params)
        if dense_factory is not None:
            self.dense = dense_factory(self.vectors, self.version or "empty")
        else:
            self.dense = DenseIndex(self.vectors, hnsw_threshold)
        self.row_of = {r.chunk_id: i for i, r in enumerate(self.records)}
        postings: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(self.records):
            for kv in r.metadata.items():
                postings.setdefault(kv, []).append(i)
        self._postings = {kv: np.asarray(v, dtype=np.int64) for kv, v in postings.items()}
        docs: dict[str, int] = {}
        for r in self.records:
            docs[r.document_id] = docs.get(r.document_id, 0) + 1
        self.doc_chunks = docs

    @classmethod
    def empty(cls, analyzer: Analyzer, dim: int = 0) -> CollectionIndex:
        return cls([], np.zeros((0, dim), np.float32), analyzer=analyzer, dim=dim)

    def __len__(self) -> int:
        return len(self.records)

    def allowed_rows(self, filters: Mapping[str, str]) -> np.ndarray | None:
        """Rows whose metadata has every filter pair; None when there is no filter."""
        if not filters:
            return None
        rows: np.ndarray | None = None
        for kv in filters.items():
            posting = self._postings.get(kv, np.zeros(0, np.int64))
            rows = posting if rows is None else np.intersect1d(rows, posting, assume_unique=True)
        return rows

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
        import time

        t = timings if timings is not None else {}
        cands = self.retrieve(query, qvec, n_cand=max(candidates, top_k), mode=mode, filters=filters, timings=t)
        if cands is None:
            return []
        t0 = time.perf_counter_ns()
        hits = self._fuse(*cands, qvec, mode, fusion, rrf_k, dense_weight, limit=top_k)
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
        """Each retriever's candidates: (bm25 rows, dense rows, every chunk's BM25 score); None
        when nothing can match."""
        import time

        t = timings if timings is not None else {}
        if not self.records:
            return None
        allowed = self.allowed_rows(filters or {})
        if allowed is not None and len(allowed) == 0:
            return None
        bm_rows = np.zeros(0, np.int64)
        bm_all = None
        if mode in ("hybrid", "bm25"):
            t0 = time.perf_counter_ns()
            bm_all = self.bm25.scores(self.analyzer.tokens(query))
            if allowed is not None:
                sub = _topk(bm_all[allowed], n_cand)
                bm_rows = allowed[sub]
            else:
                bm_rows = _topk(bm_all, n_cand)
            bm_rows = bm_rows[bm_all[bm_rows] > 0]
            t["bm25"] = time.perf_counter_ns() - t0
        de_rows = np.zeros(0, np.int64)
        if mode in ("hybrid", "dense") and qvec is not None:
            t0 = time.perf_counter_ns()
            _, de_rows = self.dense.search(qvec, n_cand, allowed)
            t["dense"] = time.perf_counter_ns() - t0
        return bm_rows, de_rows, bm_all

    def _fuse(
        self,
        bm_rows: np.ndarray,
        de_rows: np.ndarray,
        bm_all: np.ndarray | None,
        qvec: np.ndarray | None,
        mode: str,
        fusion: str,
        rrf_k: int,
        dense_weight: float,
        limit: int | None = None,
    ) -> list[Hit]:
        """Fuses the candidates (vectorised); returns the best `limit` (all when None)."""
        cat = np.concatenate([np.asarray(de_rows, np.int64), np.asarray(bm_rows, np.int64)])
        if not len(cat):
            return []
        _, first = np.unique(cat, return_index=True)
        rows = cat[np.sort(first)]  # dense candidates first, then BM25-only ones
        bm_rank = _ranks(rows, np.asarray(bm_rows, np.int64))
        de_rank = _ranks(rows, np.asarray(de_rows, np.int64))
        if mode == "bm25" or (mode == "hybrid" and qvec is None):
            scores = bm_all[rows].astype(np.float64) if bm_all is not None else np.zeros(len(rows))
        elif mode == "dense":
            scores = (self.vectors[rows] @ np.asarray(qvec, np.float32)).astype(np.float64)
        elif fusion == "rrf":
            scores = np.where(bm_rank > 0, 1.0 / (rrf_k + bm_rank), 0.0) + np.where(
                de_rank > 0, 1.0 / (rrf_k + de_rank), 0.0
            )
        else:
            # Exact scores of every candidate in both retrievers, z-normalised with the statistics
            # of each retriever's own candidate list.
            q = np.asarray(qvec, np.float32)
            bm = bm_all[rows].astype(np.float64)
            de = (self.vectors[rows] @ q).astype(np.float64)
            bm_ref = bm_all[bm_rows] if len(bm_rows) > 1 else bm
            de_ref = self.vectors[de_rows] @ q if len(de_rows) > 1 else de
            scores = dense_weight * _z(de, de_ref) + (1 - dense_weight) * _z(bm, bm_ref)
        order = np.argsort(-scores, kind="stable")
        if limit is not None:
            order = order[:limit]
        return [Hit(int(rows[i]), float(scores[i]), int(bm_rank[i]), int(de_rank[i])) for i in order]


def _ranks(rows: np.ndarray, ranked: np.ndarray) -> np.ndarray:
    """1-based rank of each of `rows` in `ranked`; 0 where absent."""
    out = np.zeros(len(rows), np.int64)
    if not len(ranked):
        return out
    order = np.argsort(ranked, kind="stable")
    sorted_ranked = ranked[order]
    pos = np.searchsorted(sorted_ranked, rows)
    pos_c = np.minimum(pos, len(ranked) - 1)
    found = sorted_ranked[pos_c] == rows
    out[found] = order[pos_c[found]] + 1
    return out


def _z(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    std = float(np.std(ref))
    if std < 1e-9:
        return np.zeros_like(x)
    return (x - float(np.mean(ref))) / std
