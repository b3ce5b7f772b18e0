"""Ingestion jobs: fetch → parse → chunk → embed → write → index, pipelined and resumable.

Stages run as concurrent tasks joined by bounded queues, so while one batch is being written the
next is being embedded and the one after that parsed; embedding is the bottleneck. Each written
batch is committed to SQLite (its chunks with their vectors, and its files marked done) before
the next, so a restarted retriever resumes a job from its last committed batch. The index stage
publishes one new version at the end of the job; a cancelled or failed job publishes nothing, so
the index stays at its last committed version.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import re
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.common.errors import ErrorKind, ServiceError, invalid, not_found

from .chunking import Chunk, Chunker
from .core import Retriever, check_name, chunk_key
from .index import ChunkRecord
from .jobs import ACTIVE_STATES, ChunkRow, FileRow, JobRow
from .parsing import ParseError, parse_document
from .ports import ObjectNotFound, ObjectTooLarge
from .segments import DocumentInfo

log = logging.getLogger(__name__)

# How long a job waits for an unavailable peer (embedder, storage, object store) before failing.
PEER_WAIT_S = 120.0
_TRANSIENT_WORDS = ("unavailable", "connect", "timed out", "timeout", "reset", "slowdown", "503", "refused")


def _transient(err: Exception) -> bool:
    """True for failures a peer's restart explains: UNAVAILABLE/DEADLINE_EXCEEDED from a service,
    or a store write that failed for a connection reason."""
    if isinstance(err, ServiceError):
        return err.kind in (ErrorKind.UNAVAILABLE, ErrorKind.DEADLINE_EXCEEDED)
    return any(w in str(err).lower() for w in _TRANSIENT_WORDS)


_DOC_KEY = re.compile(r"^docs/[^/]+/([^/]+)/[^/]+$")


@dataclass(frozen=True)
class SourceSpec:
    object_key: str
    name: str = ""
    document_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class BackendStats:
    backend: str
    objects_written: int = 0
    busy_ns: int = 0
    latencies_ns: list[int] = field(default_factory=list)

    @property
    def ops_per_s(self) -> float:
        return self.objects_written / (self.busy_ns / 1e9) if self.busy_ns else 0.0

    @property
    def p50_ns(self) -> int:
        return int(statistics.median(self.latencies_ns)) if self.latencies_ns else 0

    @property
    def avg_ns(self) -> int:
        return int(sum(self.latencies_ns) / len(self.latencies_ns)) if self.latencies_ns else 0


@dataclass
class FileErrorView:
    name: str
    object_key: str
    reason: str


@dataclass
class JobView:
    """A job as callers see it (the servicer turns it into a `Job` message)."""

    job_id: str
    collection: str
    state: str
    stage: str
    documents_done: int = 0
    documents_total: int = 0
    chunks_done: int = 0
    chunks_total: int = 0
    embeddings_per_s: float = 0.0
    backends: list[BackendStats] = field(default_factory=list)
    eta_s: float = -1.0
    file_errors: list[FileErrorView] = field(default_factory=list)
    error: str = ""
    created_unix_ns: int = 0
    updated_unix_ns: int = 0
    index_version: str = ""
    document_ids: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.state not in ACTIVE_STATES


@dataclass
class _Live:
    view: JobView
    request: dict[str, Any]
    seq: int = 0
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    started: float = field(default_factory=time.perf_counter)
    embed_busy_s: float = 0.0
    embedded: int = 0


@dataclass
class _Parsed:
    file: FileRow
    chunks: list[Chunk]


def default_document_id(key: str) -> str:
    m = _DOC_KEY.match(key)
    return m.group(1) if m else hashlib.sha256(key.encode()).hexdigest()[:16]


class JobManager:
    """Creates, runs, resumes, cancels and reports ingestion jobs."""

    def __init__(self, retriever: Retriever) -> None:
        self.r = retriever
        self.s = retriever.settings
        self.db = retriever.db
        self.live: dict[str, _Live] = {}

    async def start(self) -> None:
        """Resumes every job a previous process left queued or running."""
        for row in await self.db.run(self.db.active_jobs):
            log.info("resuming job", extra={"job_id": row.job_id, "collection": row.collection})
            self._launch(row)

    async def stop(self) -> None:
        """Stops running jobs without marking them cancelled: the next start resumes them."""
        tasks = [lv.task for lv in self.live.values() if lv.task and not lv.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # API ---------------------------------------------------------------------------------------
    async def start_ingest(
        self,
        collection: str,
        sources: Sequence[SourceSpec],
        *,
        source_prefix: str = "",
        source_backend: str = "",
        target_backends: Sequence[str] = (),
        chunk_size: int = 0,
        chunk_overlap: int = 0,
    ) -> JobView:
        check_name(collection)
        if not sources and not source_prefix:
            raise invalid("nothing to ingest: give sources or a source_prefix", reason="NO_SOURCES")
        size = chunk_size or self.s.chunk_size_tokens
        overlap = chunk_overlap if chunk_size or chunk_overlap else self.s.chunk_overlap_tokens
        try:
            Chunker(size, overlap, counter=_NullCounter())
        except ValueError as err:
            raise invalid(str(err), reason="BAD_CHUNKING") from None
        for s in sources:
            if not s.object_key or s.object_key.endswith("/"):
                raise invalid(f"source object key {s.object_key!r} is not an object key", reason="BAD_SOURCE")
        await self.r.ensure_collection(collection)
        now = time.time_ns()
        job_id = uuid.uuid4().hex
        files = _file_rows(sources)
        request = {
            "source_prefix": source_prefix,
            "source_backend": source_backend,
            "target_backends": list(dict.fromkeys(target_backends)) or [""],
            "chunk_size": size,
            "chunk_overlap": overlap,
            "listed": not source_prefix,
        }
        row = JobRow(job_id, collection, "queued", "queued", request, now, now)
        await self.db.run(self.db.create_job, row, files)
        lv = self._launch(row, files)
        return lv.view

    async def get(self, job_id: str) -> JobView:
        lv = self.live.get(job_id)
        if lv is not None:
            return lv.view
        row = await self.db.run(self.db.get_job, job_id)
        if row is None:
            raise not_found(f"job {job_id!r} does not exist", reason="JOB_NOT_FOUND", job_id=job_id)
        return _view_from_row(row, await self.db.run(self.db.files, job_id))

    async def list(self, collection: str, page_size: int, page_token: str) -> tuple[list[JobView], str]:
        # The token is the created_ns of the last job of the previous page: a 64-bit integer.
        if page_token and not (page_token.isdigit() and int(page_token) < 2**63):
            raise invalid(f"page_token {page_token[:40]!r} is not a token this service issued", reason="BAD_PAGE_TOKEN")
        before = int(page_token) if page_token else 0
        rows = await self.db.run(self.db.list_jobs, collection, page_size + 1, before)
        more = len(rows) > page_size
        rows = rows[:page_size]
        views = [await self.get(r.job_id) for r in rows]
        return views, (str(rows[-1].created_ns) if more and rows else "")

    async def cancel(self, job_id: str) -> JobView:
        lv = self.live.get(job_id)
        if lv is None or lv.task is None or lv.task.done():
            return await self.get(job_id)
        lv.cancel_requested = True
        lv.task.cancel()
        await asyncio.gather(lv.task, return_exceptions=True)
        return lv.view

    async def watch(self, job_id: str, after_sequence: int = 0) -> AsyncIterator[tuple[int, JobView, bool]]:
        """Yields (sequence, job, terminal): the current state first, then each change."""
        lv = self.live.get(job_id)
        if lv is None:
            view = await self.get(job_id)
            yield max(after_sequence + 1, 1), view, True
            return
        last = after_sequence
        while True:
            async with lv.cond:
                await lv.cond.wait_for(lambda last=last: lv.seq > last or lv.view.terminal)
                seq, view = lv.seq, _copy(lv.view)
            if seq > last or view.terminal:
                last = max(seq, last)
                yield seq, view, view.terminal
                if view.terminal:
                    return

    # Running -----------------------------------------------------------------------------------
    def _launch(self, row: JobRow, files: Sequence[FileRow] = ()) -> _Live:
        view = JobView(
            row.job_id,
            row.collection,
            row.state,
            row.stage,
            created_unix_ns=row.created_ns,
            updated_unix_ns=row.updated_ns,
            documents_total=len(files),
        )
        lv = _Live(view, row.request)
        self.live[row.job_id] = lv
        lv.task = asyncio.create_task(self._run(lv), name=f"ingest-{row.job_id}")
        return lv

    async def _emit(self, lv: _Live, **changes: Any) -> None:
        for k, v in changes.items():
            setattr(lv.view, k, v)
        v = lv.view
        v.updated_unix_ns = time.time_ns()
        elapsed = time.perf_counter() - lv.started
        if lv.embed_busy_s:
            v.embeddings_per_s = lv.embedded / lv.embed_busy_s
        left = v.documents_total - v.documents_done
        v.eta_s = elapsed / v.documents_done * left if v.documents_done and not v.terminal else -1.0
        if v.terminal:
            v.eta_s = 0.0
        async with lv.cond:
            lv.seq += 1
            lv.cond.notify_all()

    async def _run(self, lv: _Live) -> None:
        v = lv.view
        req = lv.request
        try:
            await self.db.run(self.db.update_job, v.job_id, state="running", stage="parse")
            await self._emit(lv, state="running", stage="parse")
            if not req.get("listed"):
                await self._list_prefix(lv)
            v.backends = [BackendStats(b or "default") for b in req["target_backends"]]
            waited_until = time.monotonic() + PEER_WAIT_S
            delay = 1.0
            while True:
                files = await self.db.run(self.db.files, v.job_id)
                v.documents_total = len(files)
                v.documents_done = sum(f.status != "pending" for f in files)
                v.file_errors = [FileErrorView(f.name, f.object_key, f.reason) for f in files if f.status == "failed"]
                committed = await self.db.run(self.db.chunks, v.job_id)
                v.chunks_done = v.chunks_total = len(committed)
                await self._emit(lv)
                pending = [f for f in files if f.status == "pending"]
                try:
                    await self._pipeline(lv, pending)
                    await self._index(lv)
                    break
                except (ServiceError, OSError) as err:
                    # A peer (embedder, storage, the store behind it) restarting: resume from the
                    # last committed batch once it is back, as a restarted retriever would.
                    if not _transient(err) or time.monotonic() + delay > waited_until:
                        raise
                    log.warning(
                        "a peer is unavailable; resuming the job from its last committed batch",
                        extra={"job_id": v.job_id, "error": str(err)[:300], "retry_in_s": delay},
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 8.0)
        except asyncio.CancelledError:
            if lv.cancel_requested:
                await asyncio.shield(self._cancelled(lv))
            raise
        except Exception as err:
            msg = err.message if isinstance(err, ServiceError) else f"{type(err).__name__}: {err}"
            log.exception("job failed", extra={"job_id": v.job_id})
            await self._emit(lv, state="failed", stage="done", error=msg)
            try:
                await self.db.run(self.db.update_job, v.job_id, state="failed", stage="done", error=msg)
            except Exception:
                log.exception("could not record the job's failure", extra={"job_id": v.job_id})

    async def _list_prefix(self, lv: _Live) -> None:
        req = lv.request
        objs = await self.r.store.list(req["source_prefix"], backend=req["source_backend"])
        specs = [SourceSpec(o.key, metadata={}) for o in objs if not o.key.endswith("/")]
        existing = {f.object_key for f in await self.db.run(self.db.files, lv.view.job_id)}
        await self.db.run(
            self.db.add_files,
            lv.view.job_id,
            _file_rows([s for s in specs if s.object_key not in existing], taken=existing),
        )
        req["listed"] = True
        await self.db.run(self.db.update_job, lv.view.job_id, request=json.dumps(req))

    async def _pipeline(self, lv: _Live, pending: list[FileRow]) -> None:
        parsed_q: asyncio.Queue[_Parsed | None] = asyncio.Queue(maxsize=64)
        embedded_q: asyncio.Queue[tuple[list[_Parsed], asyncio.Task[np.ndarray]] | None] = asyncio.Queue(
            maxsize=max(2, self.s.write_batch // max(1, self.s.embed_batch) + self.s.embed_concurrency)
        )
        tasks = [
            asyncio.create_task(self._parse_stage(lv, pending, parsed_q)),
            asyncio.create_task(self._embed_stage(lv, parsed_q, embedded_q)),
            asyncio.create_task(self._write_stage(lv, embedded_q)),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _parse_stage(self, lv: _Live, pending: list[FileRow], out: asyncio.Queue[_Parsed | None]) -> None:
        req = lv.request
        chunker = Chunker(req["chunk_size"], req["chunk_overlap"])
        chunking = f"{req['chunk_size']}/{req['chunk_overlap']}"
        sem = asyncio.Semaphore(4)

        async def one(f: FileRow) -> _Parsed | None:
            async with sem:
                try:
                    data = await self.r.store.get(
                        f.object_key, backend=req["source_backend"], max_bytes=self.s.max_file_bytes
                    )
                except ObjectNotFound:
                    return await self._file_failed(lv, f, "the object does not exist")
                except ObjectTooLarge as err:
                    return await self._file_failed(lv, f, str(err))
                f.size_bytes, f.sha256 = len(data), hashlib.sha256(data).hexdigest()
                state = self.r.collections.get(lv.view.collection)
                known = state.snapshot.documents.get(f.document_id) if state and not state.error else None
                if known and known.sha256 == f.sha256 and known.chunking == chunking and known.name == f.name:
                    f.status, f.chunks = "unchanged", known.chunks
                    await self.db.run(self.db.finish_file, lv.view.job_id, f)
                    lv.view.documents_done += 1
                    await self._emit(lv)
                    return None
                try:
                    chunks = await asyncio.to_thread(self._parse_chunk, lv.view.collection, f, data, chunker)
                except ParseError as err:
                    return await self._file_failed(lv, f, str(err))
                return _Parsed(f, chunks)

        window = 8
        for i in range(0, len(pending), window):
            for p in await asyncio.gather(*(one(f) for f in pending[i : i + window])):
                if p is not None:
                    lv.view.chunks_total += len(p.chunks)
                    await out.put(p)
        await out.put(None)

    def _parse_chunk(self, collection: str, f: FileRow, data: bytes, chunker: Chunker) -> list[Chunk]:
        text = parse_document(
            f.name, data, max_bytes=self.s.max_file_bytes, max_unpacked_bytes=self.s.max_unpacked_bytes
        )
        chunks = chunker.chunks(collection, f.document_id, text)
        if not chunks:
            raise ParseError("no text could be extracted")
        return chunks

    async def _file_failed(self, lv: _Live, f: FileRow, reason: str) -> None:
        f.status, f.reason = "failed", reason
        await self.db.run(self.db.finish_file, lv.view.job_id, f)
        lv.view.file_errors.append(FileErrorView(f.name, f.object_key, reason))
        lv.view.documents_done += 1
        await self._emit(lv)
        return None

    async def _embed_stage(
        self,
        lv: _Live,
        inp: asyncio.Queue[_Parsed | None],
        out: asyncio.Queue[tuple[list[_Parsed], asyncio.Task[np.ndarray]] | None],
    ) -> None:
        """Sends a request as soon as `embed_batch` chunks are ready, with at most
        `embed_concurrency` in flight, so the embedder never waits for a whole write batch."""
        slots = asyncio.Semaphore(max(1, self.s.embed_concurrency))
        active = [0, 0.0]  # requests in flight, when the current busy period began

        async def embed(texts: list[str]) -> np.ndarray:
            try:
                if active[0] == 0:
                    active[1] = time.perf_counter()
                active[0] += 1
                b = self.s.embed_batch
                parts = [await self.r.encoder.encode(texts[i : i + b]) for i in range(0, len(texts), b)]
                lv.embedded += len(texts)
                return np.concatenate(parts).astype(np.float32)
            finally:
                active[0] -= 1
                if active[0] == 0:
                    lv.embed_busy_s += time.perf_counter() - active[1]
                slots.release()

        group: list[_Parsed] = []
        n = 0
        done = False
        while not done:
            item = await inp.get()
            if item is None:
                done = True
            else:
                group.append(item)
                n += len(item.chunks)
            if group and (n >= self.s.embed_batch or done):
                if lv.view.stage not in ("embed", "write"):
                    await self._emit(lv, stage="embed")
                await slots.acquire()
                task = asyncio.create_task(embed([c.text for p in group for c in p.chunks]))
                await out.put((group, task))
                group, n = [], 0
        await out.put(None)

    async def _write_stage(
        self, lv: _Live, inp: asyncio.Queue[tuple[list[_Parsed], asyncio.Task[np.ndarray]] | None]
    ) -> None:
        """Collects embedded groups up to `write_batch` chunks, writes them to every target backend
        (one BatchPut per backend) and commits the batch."""
        v = lv.view
        coll = v.collection
        batch: list[tuple[list[_Parsed], np.ndarray]] = []
        n = 0
        done = False
        while not done:
            item = await inp.get()
            if item is None:
                done = True
            else:
                group, task = item
                try:
                    vectors = await task
                except BaseException:
                    task.cancel()
                    raise
                batch.append((group, vectors))
                n += len(vectors)
            if batch and (n >= self.s.write_batch or done):
                await self._commit_batch(lv, coll, batch)
                batch, n = [], 0

    async def _commit_batch(self, lv: _Live, coll: str, batch: list[tuple[list[_Parsed], np.ndarray]]) -> None:
        v = lv.view
        group = [p for g, _ in batch for p in g]
        vectors = np.concatenate([vec for _, vec in batch])
        chunks = [c for p in group for c in p.chunks]
        items = [(chunk_key(coll, c.chunk_id), c.text.encode("utf-8")) for c in chunks]
        await self._emit(lv, stage="write")
        await asyncio.gather(*(self._write(st, items) for st in v.backends))
        rows = [ChunkRow(c.chunk_id, c.document_id, c.position, c.text, vectors[i]) for i, c in enumerate(chunks)]
        for p in group:
            p.file.chunks = len(p.chunks)
        await self.db.run(self.db.commit_batch, v.job_id, [p.file for p in group], rows)
        v.documents_done += len(group)
        v.chunks_done += len(chunks)
        await self.db.run(self.db.update_job, v.job_id, stats=_stats(v))
        await self._emit(lv)

    async def _write(self, st: BackendStats, items: list[tuple[str, bytes]]) -> None:
        backend = "" if st.backend == "default" else st.backend
        t0 = time.perf_counter_ns()
        outcomes = await self.r.store.put_many(items, backend=backend)
        st.busy_ns += time.perf_counter_ns() - t0
        bad = [o for o in outcomes if not o.ok]
        if bad:
            raise OSError(f"writing chunks to backend {st.backend!r} failed: {bad[0].key}: {bad[0].error}")
        st.objects_written += len(outcomes)
        st.latencies_ns.extend(o.total_ns for o in outcomes if o.total_ns)

    async def _index(self, lv: _Live) -> None:
        v = lv.view
        await self.db.run(self.db.update_job, v.job_id, stage="index")
        await self._emit(lv, stage="index")
        files = await self.db.run(self.db.files, v.job_id)
        rows = await self.db.run(self.db.chunks, v.job_id)
        chunking = f"{lv.request['chunk_size']}/{lv.request['chunk_overlap']}"
        done = {f.document_id: f for f in files if f.status == "done"}
        now = time.time_ns()
        docs = {
            d: DocumentInfo(d, f.name, f.object_key, f.size_bytes, f.sha256, f.chunks, dict(f.metadata), now, chunking)
            for d, f in done.items()
        }
        rows = [r for r in rows if r.document_id in docs]
        records = [
            ChunkRecord(
                r.chunk_id, r.document_id, docs[r.document_id].name, r.position, r.text, docs[r.document_id].metadata
            )
            for r in rows
        ]
        vectors = np.stack([r.vector for r in rows]) if rows else np.zeros((0, 0), np.float32)
        version = v.index_version
        if docs:
            version = await self.r.commit(v.collection, docs, records, vectors, backends=lv.request["target_backends"])
        elif self.r.collections.get(v.collection):
            version = self.r.collections[v.collection].snapshot.version
        failed = [f for f in files if f.status == "failed"]
        state = "succeeded" if not failed else ("failed" if len(failed) == len(files) else "partial")
        error = "" if state != "failed" else f"every file failed; the first: {failed[0].name}: {failed[0].reason}"
        v.document_ids = [f.document_id for f in files if f.status in ("done", "unchanged")]
        await self.db.run(
            self.db.update_job, v.job_id, state=state, stage="done", index_version=version, error=error, stats=_stats(v)
        )
        await self.db.run(self.db.drop_chunks, v.job_id)
        await self._emit(lv, state=state, stage="done", index_version=version, error=error)

    async def _cancelled(self, lv: _Live) -> None:
        """A cancelled job publishes nothing; chunk objects it wrote that no version uses go."""
        v = lv.view
        rows = await self.db.run(self.db.chunks, v.job_id)
        state = self.r.collections.get(v.collection)
        live_ids = set(state.index.row_of) if state else set()
        orphans = [chunk_key(v.collection, r.chunk_id) for r in rows if r.chunk_id not in live_ids]
        for st in v.backends:
            try:
                if orphans:
                    await self.r.store.delete(orphans, backend="" if st.backend == "default" else st.backend)
            except ServiceError as err:
                log.warning("could not delete a cancelled job's chunks", extra={"error": str(err)})
        await self.db.run(self.db.drop_chunks, v.job_id)
        await self.db.run(self.db.update_job, v.job_id, state="cancelled", stage="done", stats=_stats(v))
        await self._emit(lv, state="cancelled", stage="done")


class _NullCounter:
    def count(self, texts: Sequence[str]) -> list[int]:
        return [0] * len(texts)

    def starts(self, text: str) -> list[int]:
        return []


def _file_rows(sources: Sequence[SourceSpec], taken: set[str] | None = None) -> list[FileRow]:
    rows: list[FileRow] = []
    ids: set[str] = set()
    seen: set[str] = set(taken or ())
    for s in sources:
        if s.object_key in seen:
            continue
        seen.add(s.object_key)
        name = s.name or s.object_key.rsplit("/", 1)[-1]
        doc_id = s.document_id or default_document_id(s.object_key)
        if doc_id in ids:
            doc_id = f"{doc_id}-{hashlib.sha256(s.object_key.encode()).hexdigest()[:8]}"
        ids.add(doc_id)
        rows.append(FileRow(s.object_key, name, doc_id, dict(s.metadata)))
    return rows


def _stats(v: JobView) -> dict[str, Any]:
    return {
        "documents_done": v.documents_done,
        "documents_total": v.documents_total,
        "chunks_done": v.chunks_done,
        "chunks_total": v.chunks_total,
        "embeddings_per_s": v.embeddings_per_s,
        "backends": [
            {
                "backend": b.backend,
                "objects_written": b.objects_written,
                "ops_per_s": b.ops_per_s,
                "p50_ns": b.p50_ns,
                "avg_ns": b.avg_ns,
            }
            for b in v.backends
        ],
        "document_ids": v.document_ids,
    }


def _view_from_row(row: JobRow, files: Sequence[FileRow]) -> JobView:
    st = row.stats
    backends = []
    for b in st.get("backends", []):
        bs = BackendStats(b["backend"], b["objects_written"])
        bs.latencies_ns = [b["p50_ns"]] if b["p50_ns"] else []
        bs.busy_ns = int(b["objects_written"] / b["ops_per_s"] * 1e9) if b["ops_per_s"] else 0
        backends.append(bs)
    return JobView(
        row.job_id,
        row.collection,
        row.state,
        row.stage,
        documents_done=sum(f.status != "pending" for f in files),
        documents_total=len(files),
        chunks_done=st.get("chunks_done", 0),
        chunks_total=st.get("chunks_total", 0),
        embeddings_per_s=st.get("embeddings_per_s", 0.0),
        backends=backends,
        eta_s=0.0 if row.state not in ACTIVE_STATES else -1.0,
        file_errors=[FileErrorView(f.name, f.object_key, f.reason) for f in files if f.status == "failed"],
        error=row.error,
        created_unix_ns=row.created_ns,
        updated_unix_ns=row.updated_ns,
        index_version=row.index_version,
        document_ids=[f.document_id for f in files if f.status in ("done", "unchanged")],
    )


def _copy(v: JobView) -> JobView:
    return copy.deepcopy(v)
