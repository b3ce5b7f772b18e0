"""The embedder's and llm_gateway's SQLite caches on a full disk: SQLite's own "database or disk is
full" (SQLITE_FULL, raised here by capping the file's page count, as a full file system would) costs
only the cache write. Nothing raises, what was cached still answers, and the failure is counted.
tests/faults/test_disk_full.py fills a real file system under the running services."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from services.embedder.cache import EmbeddingCache, cache_key
from services.llm_gateway.cache import AnswerCache, CachedAnswer
from services.llm_gateway.domain import Usage


def _freeze(db: sqlite3.Connection) -> None:
    """No page may be added to the file any more: the next growing write fails SQLITE_FULL."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {int(pages)}")


def test_the_embedding_cache_skips_writes_on_a_full_disk(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "e.sqlite3", 64 << 20, 4)
    kept = cache_key("m", True, "kept")
    cache.put_many([(kept, np.ones(4, np.float32), 1, False)])
    _freeze(cache.db)
    rows = [(cache_key("m", True, f"t{i}"), np.full(4, i, np.float32), 1, False) for i in range(2000)]
    cache.put_many(rows)  # raised sqlite3.OperationalError before
    assert cache.write_errors >= 1
    hit, miss = cache.get_many([kept, rows[-1][0]])
    assert hit is not None and hit.vector.tolist() == [1.0] * 4 and miss is None
    stats = cache.stats()
    assert stats.entries == 1  # recounted after the rollback
    cache.close()


async def test_the_answer_cache_skips_writes_on_a_full_disk(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path / "a.sqlite3", 64 << 20)
    await cache.open()

    def answer(text: str) -> CachedAnswer:
        return CachedAnswer("extractive", "m", (text,), "stop", Usage(1, 1, "estimate"), (1,))

    await cache.put("kept", answer("kept"))
    await cache._run(_freeze, cache._conn())
    await cache.put("big", answer("x" * 2_000_000))  # raised sqlite3.OperationalError before
    assert cache.write_errors == 1
    assert await cache.get("big") is None
    hit = await cache.get("kept")
    assert hit is not None and hit.pieces == ("kept",)
    await cache.close()
