"""Fusion of the lexical and dense candidate lists into one ranking.

`fuse` is reciprocal-rank (RRF) or a weighted sum of z-normalised scores, computed on the union of
both retrievers' candidates with each candidate's exact score in both retrievers. It is the one
place fusion happens: the service's search, the evaluation harness and the benchmarks all call it.

Reranking (a later, optional stage) reorders `fuse`'s first hits once their texts are fetched:
see `Retriever.rerank` in core.py and the rerank/ package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Hit:
    """One fused result: the chunk's row in the index view, its fused score and per-retriever
    1-based ranks (0 where that retriever did not return it)."""

    row: int
    score: float
    bm25_rank: int = 0
    dense_rank: int = 0


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the `k` highest scores, best first; ties go to the lower position, so the
    answer does not depend on how the scores were split or partitioned."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    cand = np.flatnonzero(scores >= scores[part].min())
    return cand[np.lexsort((cand, -scores[cand]))][:k]


def fuse(
    bm_rows: np.ndarray,
    de_rows: np.ndarray,
    bm_all: np.ndarray | None,
    vectors_at: Callable[[np.ndarray], np.ndarray],
    qvec: np.ndarray | None,
    *,
    mode: str,
    fusion: str,
    rrf_k: int,
    dense_weight: float,
    limit: int | None = None,
) -> list[Hit]:
    """Fuses the candidates (vectorised); returns the best `limit` (all when None).

    `bm_rows`/`de_rows` are each retriever's candidates, best first; `bm_all` every row's BM25
    score; `vectors_at(rows)` the rows' vectors (for exact dense scores)."""
    cat = np.concatenate([np.asarray(de_rows, np.int64), np.asarray(bm_rows, np.int64)])
    if not len(cat):
        return []
    _, first = np.unique(cat, return_index=True)
    rows = cat[np.sort(first)]  # dense candidates first, then BM25-only ones
    bm_rank = ranks(rows, np.asarray(bm_rows, np.int64))
    de_rank = ranks(rows, np.asarray(de_rows, np.int64))
    if mode == "bm25" or (mode == "hybrid" and qvec is None):
        scores = bm_all[rows].astype(np.float64) if bm_all is not None else np.zeros(len(rows))
    elif mode == "dense":
        scores = (vectors_at(rows) @ np.asarray(qvec, np.float32)).astype(np.float64)
    elif fusion == "rrf":
        scores = np.where(bm_rank > 0, 1.0 / (rrf_k + bm_rank), 0.0) + np.where(
            de_rank > 0, 1.0 / (rrf_k + de_rank), 0.0
        )
    else:
        # Exact scores of every candidate in both retrievers, z-normalised with the statistics
        # of each retriever's own candidate list.
        q = np.asarray(qvec, np.float32)
        bm = bm_all[rows].astype(np.float64) if bm_all is not None else np.zeros(len(rows))
        de = (vectors_at(rows) @ q).astype(np.float64)
        bm_ref = bm_all[bm_rows] if bm_all is not None and len(bm_rows) > 1 else bm
        n_de = len(de_rows)
        if n_de <= 1:
            de_ref = de
        elif np.array_equal(rows[:n_de], de_rows):  # distinct dense candidates lead `rows`: reuse their scores
            de_ref = de[:n_de]
        else:
            de_ref = vectors_at(np.asarray(de_rows, np.int64)) @ q
        scores = dense_weight * _z(de, de_ref) + (1 - dense_weight) * _z(bm, bm_ref)
    order = np.argsort(-scores, kind="stable")
    if limit is not None:
        order = order[:limit]
    return [Hit(int(rows[i]), float(scores[i]), int(bm_rank[i]), int(de_rank[i])) for i in order]


def ranks(rows: np.ndarray, ranked: np.ndarray) -> np.ndarray:
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
