"""The retrieval cache: ranked hits keyed by collection, corpus version, query and parameters.

A local SQLite file, bounded in bytes (least recently used entries go first). The key holds the
index version, so a new version never serves an old ranking; entries of replaced versions are
dropped when a collection's version changes. Blocking: call through an executor, except `peek`.

In front of the file, the last `hot_entries` values read or written are kept decoded in memory:
`peek` answers those on the event loop, without a thread hop, SQLite or JSON (a question asked
again and again costs a dictionary look-up). The file is written without an fsync per commit
(WAL, `synchronous=NORMAL`: a crash may lose the last entries, which costs only time), and a hit
refreshes its entry's recency in the file at most once per `TOUCH_NS`, so a hit is not a write.

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
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cache_key(collection: str, version: str, query: str, params: dict[str, Any]) -> str:
    raw = json.dumps([collection, version, query, params], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


# A hit rewrites its entry's last-use time only when the stored one is older than this.
TOUCH_NS = 10_000_000_000


class RetrievalCache:
    def __init__(self, path: Path | None, max_bytes: int, hot_entries: int = 1024) -> None:
        self.max_bytes = max_bytes
        self.hot_entries = hot_entries
        # key -> (collection, version, value): the in-memory front (see the module's docstring).
        self._hot: OrderedDict[str, tuple[str, str, Any]] = OrderedDict()
        self._hot_lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.write_errors = 0
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, collection TEXT NOT NULL,"
            " version TEXT NOT NULL, value TEXT NOT NULL, size INTEGER NOT NULL, used_ns INTEGER NOT NULL)"
        )
        self.conn.execute("CREATE INDEX IF NOT EXISTS cache_used ON cache(used_ns)")
        self.conn.commit()

    def peek(self, key: str) -> Any | None:
        """The value of `key` if it is in the in-memory front, else None (non-blocking: call it
        on the event loop, then `get` through an executor when it says None)."""
        with self._hot_lock:
            entry = self._hot.get(key)
            if entry is None:
                return None
            self._hot.move_to_end(key)
            self.hits += 1
            return entry[2]

    def _remember(self, key: str, collection: str, version: str, value: Any) -> None:
        with self._hot_lock:
            self._hot[key] = (collection, version, value)
            self._hot.move_to_end(key)
            while len(self._hot) > self.hot_entries:
                self._hot.popitem(last=False)

    def get(self, key: str) -> Any | None:
        if (hot := self.peek(key)) is not None:
            return hot
        with self._lock:
            row = self.conn.execute(
                "SELECT value, collection, version, used_ns FROM cache WHERE key=?", (key,)
            ).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
            now = time.time_ns()
            if now - row[3] > TOUCH_NS:
                self._write(lambda: self.conn.execute("UPDATE cache SET used_ns=? WHERE key=?", (now, key)))
        value = json.loads(row[0])
        self._remember(key, row[1], row[2], value)
        return value

    def put(self, key: str, collection: str, version: str, value: Any) -> None:
        data = json.dumps(value)
        size = len(data) + len(key)
        if size > self.max_bytes:
            return
        with self._lock:
            self._write(lambda: self._insert(key, collection, version, data, size))
        self._remember(key, collection, version, json.loads(data))  # a copy: the caller keeps its own

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

        with self._hot_lock:
            for k in [k for k, (c, v, _) in self._hot.items() if c == collection and v != keep_version]:
                del self._hot[k]
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
        with self._hot_lock:
            self._hot.clear()
        with self._lock:
            cur = self.conn.execute("DELETE FROM cache")
            self.conn.commit()
            return cur.rowcount

    def close(self) -> None:
        self.conn.close()
