"""The HNSW part of bench/retriever.py: a clustered synthetic vector set (like real embeddings),
the retriever's own `DenseIndex` built over it as an HNSW graph, and recall@10 against exact
search with single-query latency. Also the synthetic vectors the 100k-chunk query collection uses."""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench._retriever.stack import log
from services.retriever.index import DenseIndex


def p50(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


def centers_of(k: int, dim: int, seed: int) -> np.ndarray:
    c = np.random.default_rng(seed).normal(size=(k, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def sample(centers: np.ndarray, n: int, seed: int, noise: float = 0.6) -> np.ndarray:
    """`n` unit vectors scattered around random `centers` (clustered, like real embeddings)."""
    rng = np.random.default_rng(seed)
    k, dim = centers.shape
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for i in range(0, n, step):
        m = min(step, n - i)
        x = centers[rng.integers(0, k, m)] + noise / np.sqrt(dim) * rng.normal(size=(m, dim)).astype(np.float32)
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


class Hnsw:
    """The HNSW graph of this run and its query set: built first, searched later (`measure`)."""

    def __init__(self, n: int, dim: int, queries: int = 200) -> None:
        log(f"hnsw: {n} clustered vectors, dim {dim}")
        centers = centers_of(2000, dim, seed=1)
        self.data = sample(centers, n, seed=2, noise=1.25)
        self.qs = sample(centers, queries, seed=3, noise=1.25)
        # Built on every run (nothing is reused across runs): `hnsw_build_s` is this run's build.
        t0 = time.perf_counter()
        self.index = DenseIndex(self.data, hnsw_threshold=0)
        self.build_s = time.perf_counter() - t0
        log(f"hnsw: built in {self.build_s:.0f}s")


def bench_hnsw(h: Hnsw) -> dict[str, object]:
    """Recall@10 against exact search and single-query latency, on a graph built earlier."""
    import faiss

    data, qs, index, build_s = h.data, h.qs, h.index, h.build_s
    n, dim = data.shape
    queries = len(qs)
    exact = faiss.IndexFlatIP(dim)
    exact.add(data)
    _, truth = exact.search(qs, 10)
    lat, rec = [], []
    for i, q in enumerate(qs):
        t = time.perf_counter()
        _, ids = index.search(q, 10)
        lat.append(time.perf_counter() - t)
        rec.append(len(set(ids.tolist()) & set(truth[i].tolist())) / 10)
    return {
        "hnsw_recall_at_10": round(float(np.mean(rec)), 4),
        "hnsw_p50_ms": round(p50(lat) * 1000, 3),
        "hnsw_vectors": n,
        "hnsw_dim": dim,
        "hnsw_params": {"M": 32, "efConstruction": 80, "efSearch": index.ef_search, "cluster_noise": 1.25},
        "hnsw_build_s": round(build_s, 1),  # while the stack started (see main_async)
        "hnsw_queries": queries,
    }
