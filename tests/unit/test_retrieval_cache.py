"""The retrieval cache's in-memory front (services/retriever/cache.py): hits answered without
SQLite, the file still the source after a restart, versions dropped from both, recency refreshed
without a write per hit."""

from __future__ import annotations

from pathlib import Path

from services.retriever import cache as cache_mod
from services.retriever.cache import RetrievalCache

VALUE = [["c1", 0.5, 1, 2, "d", "doc", 0, {"k": "v"}]]


def test_peek_answers_from_memory_and_get_from_the_file(tmp_path: Path) -> None:
    c = RetrievalCache(tmp_path / "c.sqlite", 1 << 20, hot_entries=2)
    assert c.peek("a") is None and c.get("a") is None
    c.put("a", "coll", "v1", VALUE)
    assert c.peek("a") == VALUE
    c.put("b", "coll", "v1", VALUE)
    c.put("c", "coll", "v1", VALUE)  # past hot_entries: "a" leaves memory, stays in the file
    assert c.peek("a") is None
    assert c.get("a") == VALUE and c.peek("a") == VALUE  # read back into memory
    c.close()
    again = RetrievalCache(tmp_path / "c.sqlite", 1 << 20)
    assert again.peek("a") is None and again.get("a") == VALUE
    assert again.stats()["hits"] == 1


def test_invalidate_and_purge_reach_the_memory_front(tmp_path: Path) -> None:
    c = RetrievalCache(tmp_path / "c.sqlite", 1 << 20)
    c.put("old", "coll", "v1", VALUE)
    c.put("new", "coll", "v2", VALUE)
    c.put("other", "other", "v1", VALUE)
    c.invalidate("coll", "v2")
    assert c.peek("old") is None and c.get("old") is None
    assert c.peek("new") == VALUE and c.peek("other") == VALUE
    c.purge()
    assert c.peek("new") is None and c.get("other") is None


def test_a_hit_refreshes_recency_at_most_once_per_touch_interval(tmp_path: Path, monkeypatch) -> None:
    c = RetrievalCache(tmp_path / "c.sqlite", 1 << 20, hot_entries=0)  # every get reads the file
    c.put("a", "coll", "v1", VALUE)
    (used0,) = c.conn.execute("SELECT used_ns FROM cache WHERE key='a'").fetchone()
    assert c.get("a") == VALUE
    assert c.conn.execute("SELECT used_ns FROM cache WHERE key='a'").fetchone()[0] == used0  # no write
    monkeypatch.setattr(cache_mod, "TOUCH_NS", -1)
    assert c.get("a") == VALUE
    assert c.conn.execute("SELECT used_ns FROM cache WHERE key='a'").fetchone()[0] > used0
