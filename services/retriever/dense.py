"""Dense search within one segment: exact inner product (numpy) or FAISS HNSW above a threshold."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .fusion import topk

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def single_threaded_blas() -> Any | None:
    """Limits numpy's BLAS to one thread in this process, unless a thread variable is set (the
    operator's choice wins); returns the limiter (`restore_original_limits()` undoes it) or None. Exact dense search is a matrix-vector product,
    bound by memory bandwidth, not arithmetic: a second BLAS thread gains little on a quiet
    machine and, on a busy one, the product waits for whichever thread the OS runs last
    (OpenBLAS with 2 threads: 47 ms p50 for 30k x 384 at load 15 on 2 cores, 13 ms with 1;
    README, Performance). Called at the retriever's start and by bench/retriever.py's raw parts."""
    if any(os.environ.get(v) for v in THREAD_VARS):
        return None
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


class DenseIndex:
    """Inner-product search over L2-normalised vectors: exact (numpy), or FAISS HNSW above a
    threshold."""

    def __init__(self, vectors: np.ndarray, hnsw_threshold: int = 50_000, ef_search: int = 256) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = self.vectors.shape if self.vectors.ndim == 2 else (0, 0)
        self.kind = "hnsw" if n > hnsw_threshold else "exact"
        self.ef_search = ef_search
        self.index: Any = None
        if self.kind == "hnsw":
            import faiss

            self.index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = 80
            self.index.hnsw.efSearch = ef_search
            self.index.add(self.vectors)

    @property
    def size(self) -> int:
        return len(self.vectors) if self.vectors.ndim == 2 else 0

    def search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None = None, live: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top `k` rows by inner product; `allowed` (sorted row ids) restricts the search and
        `live` (a mask) drops deleted rows."""
        if self.size == 0 or k <= 0 or (allowed is not None and len(allowed) == 0):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        q = np.ascontiguousarray(np.asarray(q, np.float32).reshape(-1))
        if self.kind == "exact" or (allowed is not None and len(allowed) < 10_000):
            sims = self.vectors @ q
            keep = np.ones(self.size, bool) if live is None else live.copy()
            if allowed is not None:
                only = np.zeros(self.size, bool)
                only[allowed] = True
                keep &= only
            rows = np.flatnonzero(keep)
            top = rows[topk(sims[rows], k)] if len(rows) < self.size else topk(sims, k)
            return sims[top], top.astype(np.int64)
        return self._hnsw(q, k, allowed, live)

    def _hnsw(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, live: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        params = faiss.SearchParametersHNSW()
        if allowed is not None:
            if live is not None:
                allowed = allowed[live[allowed]]
            params.sel = faiss.IDSelectorBatch(allowed.astype(np.int64))
            want = min(k, len(allowed))
        else:
            # Deleted rows are few until a merge drops them: ask for that many more and drop them.
            dead = 0 if live is None else int((~live).sum())
            want = min(k + dead, self.size)
        params.efSearch = max(self.ef_search, want)  # per call: no shared state between threads
        scores, ids = self.index.search(q.reshape(1, -1), want, params=params)
        keep = ids[0] >= 0
        s, i = scores[0][keep], ids[0][keep].astype(np.int64)
        if live is not None and allowed is None:
            ok = live[i]
            s, i = s[ok], i[ok]
        return s[:k], i[:k]
