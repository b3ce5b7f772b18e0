"""The answer cache: SQLite (WAL) in the state directory, bounded in bytes, least recently used
evicted first. Keys are computed by `cache_key` (question, context chunk hashes, backend,
model, sampling parameters); a hit streams through `replay`. All SQLite work runs on one worker thread, never on the event loop.

Writes are best effort: a cache that cannot be written (a full disk, a locked file) costs only
time, so the failed write is rolled back, logged and counted (`write_errors`) and the answer it
belongs to is still streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kernel.timing import Timer

from .domain import Citation, CitationEvent, DoneEvent, GenerateEvent, GenParams, StartEvent, TokenEvent, Usage
from .prompt import Prompt
from .stats import StreamStats

T = TypeVar("T")
log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
  key TEXT PRIMARY KEY,
  value BLOB NOT NULL,
  size_bytes INTEGER NOT NULL,
  created_unix_ns INTEGER NOT NULL,
  last_used_unix_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS answers_last_used ON answers(last_used_unix_ns);
"""


@dataclass(frozen=True)
class CachedAnswer:
    """A complete answer as streamed: who answered, its token pieces, usage, citations used."""

    backend: str
    model: str
    pieces: tuple[str, ...]
    finish_reason: str
    usage: Usage
    citation_numbers: tuple[int, ...]
    # Backend tokens in each piece (pieces were sent as they arrived); empty means 1 each.
    counts: tuple[int, ...] = ()

    def to_bytes(self) -> bytes:
        doc = {
            "backend": self.backend,
            "model": self.model,
            "pieces": list(self.pieces),
            "finish_reason": self.finish_reason,
            "usage": [self.usage.prompt_tokens, self.usage.completion_tokens, self.usage.source],
            "citations": list(self.citation_numbers),
            "counts": list(self.counts),
        }
        return json.dumps(doc, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> CachedAnswer:
        d: dict[str, Any] = json.loads(raw)
        pt, ct, src = d["usage"]
        return cls(
            backend=d["backend"],
            model=d["model"],
            pieces=tuple(d["pieces"]),
            finish_reason=d["finish_reason"],
            usage=Usage(int(pt), int(ct), str(src)),
            citation_numbers=tuple(int(n) for n in d["citations"]),
            counts=tuple(int(n) for n in d.get("counts", ())),
        )


@dataclass(frozen=True)
class CacheStats:
    entries: int
    size_bytes: int
    max_size_bytes: int
    hits: int
    misses: int
    evictions: int


class AnswerCache:
    """Size-bounded LRU answer cache in one SQLite file."""

    def __init__(self, path: Path, max_size_bytes: int) -> None:
        self.path = Path(path)
        self.max_size_bytes = max_size_bytes
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.write_errors = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-cache")
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        await self._run(self._conn)

    # ---- blocking parts (worker thread) ----
    def _get(self, key: str) -> bytes | None:
        db = self._conn()
        row = db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            db.execute("UPDATE answers SET last_used_unix_ns = ? WHERE key = ?", (time.time_ns(), key))
        except sqlite3.Error as err:  # recency is a hint: the hit stands
            self._skipped(db, err)
        return bytes(row[0])

    def _skipped(self, db: sqlite3.Connection, err: sqlite3.Error) -> None:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        self.write_errors += 1
        log.warning("answer cache write skipped: %s", err)

    def _put(self, key: str, value: bytes) -> int:
        size = len(value) + len(key)
        if size > self.max_size_bytes:
            return 0
        db = self._conn()
        now = time.time_ns()
        evicted = 0
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT OR REPLACE INTO answers(key, value, size_bytes, created_unix_ns, last_used_unix_ns)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, value, size, now, now),
            )
            (total,) = db.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM answers").fetchone()
            if total > self.max_size_bytes:
                rows = db.execute(
                    "SELECT key, size_bytes FROM answers WHERE key != ? ORDER BY last_used_unix_ns, key", (key,)
                ).fetchall()
                doomed = []
                for k, s in rows:
                    if total <= self.max_size_bytes:
                        break
                    doomed.append((k,))
                    total -= s
                db.executemany("DELETE FROM answers WHERE key = ?", doomed)
                evicted = len(doomed)
            db.execute("COMMIT")
        except sqlite3.Error as err:  # a full disk: this answer is not cached, nothing else
            self._skipped(db, err)
            return 0
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return evicted

    def _stats(self) -> tuple[int, int]:
        row = self._conn().execute("SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM answers").fetchone()
        return int(row[0]), int(row[1])

    def _purge(self) -> int:
        cur = self._conn().execute("DELETE FROM answers")
        return int(cur.rowcount)

    # ---- async API ----
    async def get(self, key: str) -> CachedAnswer | None:
        raw = await self._run(self._get, key)
        if raw is None:
            self.misses += 1
            return None
        try:
            value = CachedAnswer.from_bytes(raw)
        except (ValueError, KeyError, TypeError):
            # A corrupt row is a miss, never an error for the caller.
            self.misses += 1
            return None
        self.hits += 1
        return value

    async def put(self, key: str, value: CachedAnswer) -> None:
        self.evictions += await self._run(self._put, key, value.to_bytes())

    async def stats(self) -> CacheStats:
        entries, size = await self._run(self._stats)
        return CacheStats(entries, size, self.max_size_bytes, self.hits, self.misses, self.evictions)

    async def purge(self) -> int:
        return await self._run(self._purge)

    async def close(self) -> None:
        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(_close)
        self._pool.shutdown(wait=True)


def cache_key(question: str, prompt: Prompt, backend: str, model: str, params: GenParams) -> str:
    """sha256 over the question, each context chunk's content hash, the backend and model the
    request goes to first, and the sampling parameters."""
    doc = {
        "v": 2,  # 2: text stored with citations renumbered in order of appearance
        "q": question.strip(),
        "history": [[m["role"], m["content"]] for m in prompt.messages[1:-1]],
        "chunks": [[p.chunk_id, hashlib.sha256(p.text.encode("utf-8")).hexdigest()] for p in prompt.passages],
        "backend": backend,
        "model": model,
        "max_tokens": params.effective_max_tokens,
        "temperature": round(params.temperature, 4),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()


async def replay(
    hit: CachedAnswer, prompt: Prompt, timer: Timer, t0: int, rag_t0_ns: int
) -> AsyncIterator[GenerateEvent]:
    """A cache hit streams at once, flagged `cache_hit`."""
    stats = StreamStats(t0)
    counts = hit.counts or (1,) * len(hit.pieces)
    if hit.pieces:
        stats.mark(counts[0])  # the first token is ready now
    yield StartEvent(hit.backend, hit.model, True)
    index = 0
    for i, (piece, count) in enumerate(zip(hit.pieces, counts, strict=True)):
        if i:
            stats.mark(count)
        yield TokenEvent(piece, index, count)
        index += count
    cmap = prompt.citation_map
    # The stored text is already renumbered; citation_numbers[i] is the passage cited as [i + 1].
    citations = tuple(Citation(i + 1, cmap[n]) for i, n in enumerate(hit.citation_numbers) if n in cmap)
    for c in citations:
        yield CitationEvent(c)
    p50, p99 = stats.inter_token()
    yield DoneEvent(
        usage=hit.usage,
        ttft_ns=stats.ttft_ns,
        rag_ttft_ns=(stats.times[0] - rag_t0_ns) if (rag_t0_ns and stats.times) else 0,
        generation_ns=stats.generation_ns,
        tokens_per_s=stats.tokens_per_s(hit.usage.completion_tokens),
        inter_token_p50_ns=p50,
        inter_token_p99_ns=p99,
        finish_reason=hit.finish_reason,
        citations=citations,
        text="".join(hit.pieces),
        stages=tuple(timer.stages),
        total_ns=timer.total_ns(),
    )
