"""The retriever runs numpy's BLAS on one thread (services/retriever/dense.py), unless the
operator set a thread variable."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info

from services.retriever.dense import THREAD_VARS, single_threaded_blas


def _blas_threads() -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_limits_blas_to_one_thread_and_can_be_undone(monkeypatch) -> None:
    for v in THREAD_VARS:
        monkeypatch.delenv(v, raising=False)
    before = _blas_threads()
    limiter = single_threaded_blas()
    try:
        assert limiter is not None and _blas_threads() <= {1}
    finally:
        limiter.restore_original_limits()
    assert _blas_threads() == before


@pytest.mark.parametrize("var", THREAD_VARS)
def test_an_operators_thread_variable_wins(monkeypatch, var: str) -> None:
    monkeypatch.setenv(var, "2")
    before = _blas_threads()
    assert single_threaded_blas() is None
    assert _blas_threads() == before
