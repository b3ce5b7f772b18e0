"""The SQLite embedding cache: hits, misses, LRU eviction by size, purge, persistence."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.embedder.cache import ENTRY_OVERHEAD, EmbeddingCache, cache_key

DIM = 8
ENTRY = DIM * 4 + 32 + ENTRY_OVERHEAD  # vector + sha256 key + overhead


def vec(x: float) -> np.ndarray:
    return np.full(DIM, x, dtype=np.float32)


def keys(*texts: str) -> list[bytes]:
    return [cache_key("m|torch|float32", True, t) for t in texts]


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[EmbeddingCache]:
    c = EmbeddingCache(tmp_path / "c.sqlite3", max_size_bytes=10 * ENTRY, dimension=DIM)
    yield c
    c.close()


def test_keys_are_content_addressed() -> None:
    a = cache_key("m|torch|float32", True, "text")
    assert a == cache_key("m|torch|float32", True, "text")
    assert a != cache_key("m|torch|float32", False, "text")  # normalisation
    assert a != cache_key("m|openvino-int8|int8", True, "text")  # model / backend
    assert a != cache_key("m|torch|float32", True, "text ")
    assert len(a) == 32


def test_miss_then_hit_with_counters(cache: EmbeddingCache) -> None:
    k = keys("a", "b")
    assert cache.get_many(k) == [None, None]
    cache.put_many([(k[0], vec(1), 5, False), (k[1], vec(2), 256, True)])
    got = cache.get_many([k[1], k[0], *keys("zzz")])
    assert got[0] is not None and got[0].tokens == 256 and got[0].truncated
    assert np.array_equal(got[0].vector, vec(2))
    assert got[1] is not None and got[1].tokens == 5 and not got[1].truncated
    assert got[2] is None
    s = cache.stats()
    assert (s.entries, s.hits, s.misses, s.evictions) == (2, 2, 3, 0)
    assert s.size_bytes == 2 * ENTRY and s.max_size_bytes == 10 * ENTRY


def test_replacing_a_key_does_not_double_count(cache: EmbeddingCache) -> None:
    k = keys("a")[0]
    cache.put_many([(k, vec(1), 5, False)])
    cache.put_many([(k, vec(3), 5, False), (k, vec(4), 5, False)])
    s = cache.stats()
    assert (s.entries, s.size_bytes) == (1, ENTRY)


def test_lru_eviction_keeps_recently_used(cache: EmbeddingCache) -> None:
    ks = keys(*[f"t{i}" for i in range(10)])
    for i, k in enumerate(ks):
        cache.put_many([(k, vec(i), 3, False)])
    assert cache.stats().evictions == 0 and cache.stats().entries == 10
    cache.get_many([ks[0], ks[1]])  # the two oldest become the most recent
    cache.put_many([(k, vec(9), 3, False) for k in keys("new1", "new2")])
    s = cache.stats()
    assert s.size_bytes <= s.max_size_bytes
    assert s.evictions >= 2
    survivors = cache.get_many(ks)
    assert survivors[0] is not None and survivors[1] is not None  # used recently: kept
    assert survivors[2] is None and survivors[3] is None  # least recently used: evicted
    assert all(x is not None for x in cache.get_many(keys("new1", "new2")))


def test_bound_holds_under_bulk_insert(tmp_path: Path) -> None:
    c = EmbeddingCache(tmp_path / "c.sqlite3", max_size_bytes=50 * ENTRY, dimension=DIM)
    try:
        for start in range(0, 1000, 100):
            c.put_many([(k, vec(1), 3, False) for k in keys(*[f"x{i}" for i in range(start, start + 100)])])
            assert c.stats().size_bytes <= 50 * ENTRY
        rows = sqlite3.connect(tmp_path / "c.sqlite3").execute("SELECT COUNT(*), SUM(size) FROM embeddings").fetchone()
        assert rows == (c.stats().entries, c.stats().size_bytes)
    finally:
        c.close()


def test_purge_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    c = EmbeddingCache(path, max_size_bytes=10 * ENTRY, dimension=DIM)
    c.put_many([(k, vec(1), 3, False) for k in keys("a", "b", "c")])
    c.close()
    c = EmbeddingCache(path, max_size_bytes=10 * ENTRY, dimension=DIM)
    try:
        assert c.stats().entries == 3 and c.stats().size_bytes == 3 * ENTRY
        assert all(x is not None for x in c.get_many(keys("a", "b", "c")))
        assert c.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.purge() == 3
        assert c.stats().entries == 0 and c.get_many(keys("a")) == [None]
    finally:
        c.close()


def test_zero_bound_stores_nothing(tmp_path: Path) -> None:
    c = EmbeddingCache(tmp_path / "c.sqlite3", max_size_bytes=0, dimension=DIM)
    try:
        c.put_many([(keys("a")[0], vec(1), 3, False)])
        assert c.stats().entries == 0
    finally:
        c.close()
