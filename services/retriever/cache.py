"""The retrieval cache: ranked hits keyed by collection, corpus version, query and parameters.

A local SQLite file, bounded in bytes (least recently used entries go first). The key holds the
index version, so a new version never serves an old ranking; entries of replaced versions are
dropped when a collection's version changes. Blocking: call through an executor.

Writes are best effort: a cache that cannot be written (a full disk, a locked file) costs only
time, so the failure is logged and counted and the search it belongs to still answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cache_key(collection: str, version: str, query: str, params: dict[str, Any]) -> str:
    raw = json.dumps([collection, version, query, params], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


class RetrievalCache:
    def __init__(self, path: Path | None, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.write_errors = 0
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, collection TEXT NOT NULL,"
            " version TEXT NOT NULL, value TEXT NOT NULL, size INTEGER NOT NULL, used_ns INTEGER NOT NULL)"
        )
        self.conn.execute("CREATE INDEX IF NOT EXISTS cache_used ON cache(used_ns)")
        self.conn.commit()

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self.conn.execute("SELECT value FROM cache WHERE key=?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
            self._write(lambda: self.conn.execute("UPDATE cache SET used_ns=? WHERE key=?", (time.time_ns(), key)))
            return json.loads(row[0])

    def put(self, key: str, collection: str, version: str, value: Any) -> None:
        data = json.dumps(value)
        size = len(data) + len(key)
        if size > self.max_bytes:
            return
        with self._lock:
            self._write(lambda: self._insert(key, collection, version, data, size))

    def _insert(self, key: str, collection: str, version: str, data: str, size: int) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO cache VALUES (?,?,?,?,?,?)",
            (key, collection, version, data, size, time.time_ns()),
        )
        (total,) = self.conn.execute("SELECT COALESCE(SUM(size),0) FROM cache").fetchone()
        while total > self.max_bytes:
            row = self.conn.execute("SELECT key, size FROM cache ORDER BY used_ns LIMIT 1").fetchone()
            if row is None:
                break
            self.conn.execute("DELETE FROM cache WHERE key=?", (row[0],))
            total -= row[1]

    def _write(self, fn: Callable[[], object]) -> None:
        """Runs one write and commits it; on an SQLite error rolls back, logs and counts it."""
        try:
            fn()
            self.conn.commit()
        except sqlite3.Error as err:
            self.conn.rollback()
            self.write_errors += 1
            log.warning("retrieval cache write skipped: %s", err)

    def invalidate(self, collection: str, keep_version: str = "") -> int:
        """Drops the collection's entries of every version but `keep_version`."""
        dropped = 0

        def delete() -> None:
            nonlocal dropped
            q = "DELETE FROM cache WHERE collection=? AND version<>?"
            dropped = self.conn.execute(q, (collection, keep_version)).rowcount

        with self._lock:
            self._write(delete)
        return dropped

    def stats(self) -> dict[str, int]:
        with self._lock:
            n, size = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(size),0) FROM cache").fetchone()
        return {
            "entries": n,
            "size_bytes": size,
            "max_size_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
        }

    def purge(self) -> int:
        with self._lock:
            cur = self.conn.execute("DELETE FROM cache")
            self.conn.commit()
            return cur.rowcount

    def close(self) -> None:
        self.conn.close()
