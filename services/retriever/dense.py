"""Dense search within one segment: exact inner product (numpy) or FAISS HNSW above a threshold."""

from __future__ import annotations

from typing import Any

import numpy as np

from .fusion import topk


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
