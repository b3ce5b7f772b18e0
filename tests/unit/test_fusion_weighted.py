"""Weighted fusion reuses the dense candidates' exact scores for their z-normalisation (they
lead the candidate union); the result equals the formula computed from scratch."""

from __future__ import annotations

import numpy as np
import pytest

from services.retriever.fusion import fuse, topk


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_fusion_matches_the_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(2000, 16)).astype(np.float32)
    q = rng.normal(size=16).astype(np.float32)
    bm_all = rng.gamma(2.0, size=2000).astype(np.float32)
    bm_rows, de_rows = topk(bm_all, 60), topk(vecs @ q, 60)
    calls: list[int] = []

    def vectors_at(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return vecs[rows]

    hits = fuse(bm_rows, de_rows, bm_all, vectors_at, q, mode="hybrid", fusion="weighted", rrf_k=60, dense_weight=0.6)

    def z(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return (x - ref.mean()) / ref.std()

    rows = np.array([h.row for h in hits])
    want = 0.6 * z((vecs[rows] @ q).astype(np.float64), (vecs[de_rows] @ q).astype(np.float64)) + 0.4 * z(
        bm_all[rows].astype(np.float64), bm_all[bm_rows].astype(np.float64)
    )
    np.testing.assert_allclose([h.score for h in hits], want, rtol=1e-5, atol=1e-6)
    assert sorted(rows.tolist()) == sorted(set(bm_rows.tolist()) | set(de_rows.tolist()))
    assert calls == [len(rows)]  # one vector read for the whole union
