"""Ingestion jobs persisted in SQLite (WAL) so a restarted retriever resumes them.

A job's files are recorded when it starts; each committed batch records its chunks (with their
vectors) and marks the files it finished, in one transaction. After a restart the job skips the
finished files and keeps their committed chunks, so no chunk is lost and, since chunk ids are
the primary key, none is duplicated. Every method is blocking: callers run them through
`JobDB.run` (one worker thread, so SQLite sees a single writer).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from services.common.errors import ErrorKind, ServiceError

T = TypeVar("T")

ACTIVE_STATES = ("queued", "running")
TERMINAL_STATES = ("succeeded", "partial", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  job_id TEXT PRIMARY KEY, collection TEXT NOT NULL, state TEXT NOT NULL, stage TEXT NOT NULL,
  request TEXT NOT NULL, created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL,
  error TEXT NOT NULL DEFAULT '', index_version TEXT NOT NULL DEFAULT '', stats TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_ns);
CREATE TABLE IF NOT EXISTS job_files (
  job_id TEXT NOT NULL, seq INTEGER NOT NULL, object_key TEXT NOT NULL, name TEXT NOT NULL,
  document_id TEXT NOT NULL, metadata TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
  reason TEXT NOT NULL DEFAULT '', size_bytes INTEGER NOT NULL DEFAULT 0, sha256 TEXT NOT NULL DEFAULT '',
  chunks INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (job_id, object_key)
);
CREATE TABLE IF NOT EXISTS job_chunks (
  job_id TEXT NOT NULL, chunk_id TEXT NOT NULL, document_id TEXT NOT NULL, position INTEGER NOT NULL,
  text TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (job_id, chunk_id)
);
CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS watches (
  watch_id TEXT PRIMARY KEY, collection TEXT NOT NULL, backend TEXT NOT NULL, prefix TEXT NOT NULL,
  interval_s REAL NOT NULL, active INTEGER NOT NULL, files TEXT NOT NULL DEFAULT '{}'
);
"""


@dataclass
class FileRow:
    object_key: str
    name: str
    document_id: str
    metadata: dict[str, str]
    status: str = "pending"  # pending | done | failed | unchanged
    reason: str = ""
    size_bytes: int = 0
    sha256: str = ""
    chunks: int = 0
    seq: int = 0


@dataclass
class ChunkRow:
    chunk_id: str
    document_id: str
    position: int
    text: str
    vector: np.ndarray


@dataclass
class JobRow:
    job_id: str
    collection: str
    state: str
    stage: str
    request: dict[str, Any]
    created_ns: int
    updated_ns: int
    error: str = ""
    index_version: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


class JobDB:
    """The retriever's SQLite database: jobs, their files and committed chunks, collections, watches."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobdb")
        self._lock = threading.Lock()
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except (sqlite3.OperationalError, OSError) as err:
            # A full state directory is the operator's to fix, not an internal error.
            if getattr(err, "errno", None) == errno.ENOSPC or "disk is full" in str(err):
                raise ServiceError(
                    ErrorKind.RESOURCE_EXHAUSTED,
                    f"the retriever's state directory {self.path.parent} is full ({err}); free space and "
                    "start the ingestion again (committed batches are kept)",
                    reason="STATE_DISK_FULL",
                ) from None
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.conn.close()

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self.conn)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            return out

    # Jobs -----------------------------------------------------------------------------------
    def create_job(self, job: JobRow, files: Sequence[FileRow]) -> None:
        def tx(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    job.job_id,
                    job.collection,
                    job.state,
                    job.stage,
                    json.dumps(job.request),
                    job.created_ns,
                    job.updated_ns,
                    job.error,
                    job.index_version,
                    json.dumps(job.stats),
                ),
            )
            self._insert_files(c, job.job_id, files, 0)

        self._tx(tx)

    def _insert_files(self, c: sqlite3.Connection, job_id: str, files: Sequence[FileRow], start: int) -> None:
        c.executemany(
            "INSERT OR IGNORE INTO job_files (job_id, seq, object_key, name, document_id, metadata, status,"
            " reason) VALUES (?,?,?,?,?,?,?,?)",
            [
                (job_id, start + i, f.object_key, f.name, f.document_id, json.dumps(f.metadata), f.status, f.reason)
                for i, f in enumerate(files)
            ],
        )

    def add_files(self, job_id: str, files: Sequence[FileRow]) -> None:
        def tx(c: sqlite3.Connection) -> None:
            (n,) = c.execute("SELECT COUNT(*) FROM job_files WHERE job_id=?", (job_id,)).fetchone()
            self._insert_files(c, job_id, files, n)

        self._tx(tx)

    def update_job(self, job_id: str, **fields: Any) -> None:
        fields["updated_ns"] = time.time_ns()
        if "stats" in fields:
            fields["stats"] = json.dumps(fields["stats"])
        cols = ", ".join(f"{k}=?" for k in fields)
        self._tx(lambda c: c.execute(f"UPDATE jobs SET {cols} WHERE job_id=?", (*fields.values(), job_id)))

    def get_job(self, job_id: str) -> JobRow | None:
        row = self.conn.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list_jobs(self, collection: str = "", limit: int = 50, before_ns: int = 0) -> list[JobRow]:
        q = "SELECT * FROM jobs WHERE (?='' OR collection=?) AND (?=0 OR created_ns<?) ORDER BY created_ns DESC LIMIT ?"
        rows = self.conn.execute(q, (collection, collection, before_ns, before_ns, limit)).fetchall()
        return [_job(r) for r in rows]

    def active_jobs(self) -> list[JobRow]:
        rows = self.conn.execute(
            "SELECT * FROM jobs WHERE state IN ('queued','running') ORDER BY created_ns"
        ).fetchall()
        return [_job(r) for r in rows]

    def files(self, job_id: str) -> list[FileRow]:
        rows = self.conn.execute(
            "SELECT object_key, name, document_id, metadata, status, reason, size_bytes, sha256, chunks, seq"
            " FROM job_files WHERE job_id=? ORDER BY seq",
            (job_id,),
        ).fetchall()
        return [FileRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], r[8], r[9]) for r in rows]

    def finish_file(self, job_id: str, f: FileRow) -> None:
        """Records a failed or unchanged file (no chunks to commit)."""
        self._tx(
            lambda c: c.execute(
                "UPDATE job_files SET status=?, reason=?, size_bytes=?, sha256=?, chunks=? WHERE job_id=? AND"
                " object_key=?",
                (f.status, f.reason, f.size_bytes, f.sha256, f.chunks, job_id, f.object_key),
            )
        )

    def commit_batch(self, job_id: str, files: Sequence[FileRow], chunks: Sequence[ChunkRow]) -> None:
        """One committed batch: the chunks of `files` (all of them) and the files marked done."""

        def tx(c: sqlite3.Connection) -> None:
            c.executemany(
                "INSERT OR REPLACE INTO job_chunks VALUES (?,?,?,?,?,?)",
                [
                    (
                        job_id,
                        ch.chunk_id,
                        ch.document_id,
                        ch.position,
                        ch.text,
                        np.asarray(ch.vector, np.float32).tobytes(),
                    )
                    for ch in chunks
                ],
            )
            c.executemany(
                "UPDATE job_files SET status='done', reason='', size_bytes=?, sha256=?, chunks=? WHERE job_id=?"
                " AND object_key=?",
                [(f.size_bytes, f.sha256, f.chunks, job_id, f.object_key) for f in files],
            )

        self._tx(tx)

    def chunks(self, job_id: str) -> list[ChunkRow]:
        rows = self.conn.execute(
            "SELECT chunk_id, document_id, position, text, vector FROM job_chunks WHERE job_id=?"
            " ORDER BY document_id, position",
            (job_id,),
        ).fetchall()
        return [ChunkRow(r[0], r[1], r[2], r[3], np.frombuffer(r[4], dtype=np.float32)) for r in rows]

    def drop_chunks(self, job_id: str) -> None:
        self._tx(lambda c: c.execute("DELETE FROM job_chunks WHERE job_id=?", (job_id,)))

    # Collections ------------------------------------------------------------------------------
    def add_collection(self, name: str) -> None:
        self._tx(lambda c: c.execute("INSERT OR IGNORE INTO collections VALUES (?,?)", (name, time.time_ns())))

    def remove_collection(self, name: str) -> None:
        self._tx(lambda c: c.execute("DELETE FROM collections WHERE name=?", (name,)))

    def collections(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM collections ORDER BY name").fetchall()]

    # Watches ----------------------------------------------------------------------------------
    def save_watch(self, w: dict[str, Any]) -> None:
        self._tx(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO watches VALUES (?,?,?,?,?,?,?)",
                (
                    w["watch_id"],
                    w["collection"],
                    w["backend"],
                    w["prefix"],
                    w["interval_s"],
                    int(w["active"]),
                    json.dumps(w["files"]),
                ),
            )
        )

    def watches(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM watches").fetchall()
        return [
            {
                "watch_id": r[0],
                "collection": r[1],
                "backend": r[2],
                "prefix": r[3],
                "interval_s": r[4],
                "active": bool(r[5]),
                "files": json.loads(r[6]),
            }
            for r in rows
        ]


def _job(r: tuple[Any, ...]) -> JobRow:
    return JobRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8], json.loads(r[9]))


def job_dict(job: JobRow) -> dict[str, Any]:
    return asdict(job)
