"""The embedding cache: SQLite in WAL mode, bounded by size with least-recently-used eviction.

Keys are content addresses: sha256 over the model key (model id, backend and dtype, since an int8
model gives slightly different vectors), the normalisation flag and the text. A hit returns the
stored vector, its token count and truncation flag, and the model does not run for it.

All methods are blocking and must be called from one thread (the core gives the cache its own
single-thread executor). Counters (hits, misses, evictions) count since the process started.

Writes are best effort: a cache that cannot be written (a full disk, a locked file) costs only
time, so the failed write is rolled back, logged and counted (`write_errors`) and the embedding
it belongs to is still returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Bytes an entry costs beyond its vector and key (row header, index entry), so the size bound
# tracks the file's growth.
ENTRY_OVERHEAD = 64
# After an eviction the cache is brought down to this fraction of its bound, so that a full
# cache does not evict on every insert.
EVICT_TO = 0.9
# SQLite's default limit on host parameters is 32766; stay well below.
CHUNK = 500


@dataclass(frozen=True)
class CachedEmbedding:
    vector: np.ndarray
    tokens: int
    truncated: bool


@dataclass(frozen=True)
class CacheStats:
    entries: int
    size_bytes: int
    max_size_bytes: int
    hits: int
    misses: int
    evictions: int


def cache_key(model_key: str, normalize: bool, text: str) -> bytes:
    h = hashlib.sha256()
    h.update(model_key.encode())
    h.update(b"\0n1\0" if normalize else b"\0n0\0")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.digest()


class EmbeddingCache:
    """A size-bounded LRU cache of vectors in one SQLite file."""

    def __init__(self, path: Path, max_size_bytes: int, dimension: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_size_bytes = max_size_bytes
        self.dimension = dimension
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.write_errors = 0
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings ("
            " key BLOB PRIMARY KEY, vector BLOB NOT NULL, tokens INTEGER NOT NULL,"
            " truncated INTEGER NOT NULL, size INTEGER NOT NULL, last_used INTEGER NOT NULL"
            ") WITHOUT ROWID"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS embeddings_lru ON embeddings(last_used)")
        row = self.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(last_used), 0) FROM embeddings")
        self._entries, self._size, self._clock = (int(x) for x in row.fetchone())

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def get_many(self, keys: list[bytes]) -> list[CachedEmbedding | None]:
        """Looks up `keys`; hits become the most recently used."""
        out: list[CachedEmbedding | None] = [None] * len(keys)
        if not keys:
            return out
        with self._lock:
            found: dict[bytes, tuple[bytes, int, int]] = {}
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), CHUNK):
                part = unique[start : start + CHUNK]
                marks = ",".join("?" * len(part))
                for key, vec, tokens, truncated in self.db.execute(
                    f"SELECT key, vector, tokens, truncated FROM embeddings WHERE key IN ({marks})", part
                ):
                    found[key] = (vec, tokens, truncated)
            for i, key in enumerate(keys):
                hit = found.get(key)
                if hit is None:
                    self.misses += 1
                    continue
                self.hits += 1
                out[i] = CachedEmbedding(np.frombuffer(hit[0], dtype=np.float32), int(hit[1]), bool(hit[2]))
            if found:
                now = self._tick()
                try:
                    self.db.execute("BEGIN")
                    self.db.executemany("UPDATE embeddings SET last_used = ? WHERE key = ?", [(now, k) for k in found])
                    self.db.execute("COMMIT")
                except sqlite3.Error as err:  # recency is a hint: the hits stand
                    self._skipped(err)
        return out

    def _skipped(self, err: sqlite3.Error) -> None:
        """Rolls back a failed write, recounts the table, logs and counts the failure."""
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.Error):
            row = self.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM embeddings").fetchone()
            self._entries, self._size = int(row[0]), int(row[1])
        self.write_errors += 1
        log.warning("embedding cache write skipped: %s", err)

    def put_many(self, entries: list[tuple[bytes, np.ndarray, int, bool]]) -> None:
        """Stores (key, vector, tokens, truncated) rows in one transaction, then evicts the least
        recently used entries while the cache is over its bound."""
        if not entries or self.max_size_bytes <= 0:
            return
        with self._lock:
            now = self._tick()
            rows: list[tuple[bytes, bytes, int, int, int, int]] = []
            for key, vec, tokens, truncated in entries:
                blob = np.ascontiguousarray(vec, dtype=np.float32).tobytes()
                rows.append((key, blob, int(tokens), int(truncated), len(blob) + len(key) + ENTRY_OVERHEAD, now))
            try:
                self.db.execute("BEGIN")
                # Replacing an existing key must not count its size twice.
                old = 0
                existing = 0
                keys = [r[0] for r in rows]
                for start in range(0, len(keys), CHUNK):
                    part = keys[start : start + CHUNK]
                    marks = ",".join("?" * len(part))
                    n, s = self.db.execute(
                        f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM embeddings WHERE key IN ({marks})", part
                    ).fetchone()
                    existing += int(n)
                    old += int(s)
                self.db.executemany(
                    "INSERT OR REPLACE INTO embeddings(key, vector, tokens, truncated, size, last_used)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                unique = {r[0]: r[4] for r in rows}
                self._entries += len(unique) - existing
                self._size += sum(unique.values()) - old
                if self._size > self.max_size_bytes:
                    self._evict_locked(int(self.max_size_bytes * EVICT_TO))
                self.db.execute("COMMIT")
            except sqlite3.Error as err:  # a full disk: these vectors are not cached, nothing else
                self._skipped(err)
            except BaseException:
                self.db.execute("ROLLBACK")
                row = self.db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM embeddings").fetchone()
                self._entries, self._size = int(row[0]), int(row[1])
                raise

    def _evict_locked(self, target: int) -> None:
        to_free = self._size - target
        victims: list[bytes] = []
        freed = 0
        for key, size in self.db.execute("SELECT key, size FROM embeddings ORDER BY last_used, key"):
            if freed >= to_free:
                break
            victims.append(key)
            freed += int(size)
        self.db.executemany("DELETE FROM embeddings WHERE key = ?", [(k,) for k in victims])
        self._entries -= len(victims)
        self._size -= freed
        self.evictions += len(victims)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._entries, self._size, self.max_size_bytes, self.hits, self.misses, self.evictions)

    def purge(self) -> int:
        """Removes every entry; returns how many there were."""
        with self._lock:
            n = int(self.db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
            self.db.execute("DELETE FROM embeddings")
            self._entries = 0
            self._size = 0
            return n
