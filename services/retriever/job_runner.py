"""Runs one ingestion job on the lease holder: resume point, pipeline, index commit, end states.

The job resumes from the batches its record names (whoever committed them), runs the pipeline
over the files no committed batch finished, and publishes one index version. While it runs, a
companion task writes its progress at most every `progress_write_s` and honours a cancel request
that another replica recorded in the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from kernel.errors import ErrorKind, ServiceError

from .core import chunk_key
from .index import ChunkRecord
from .job_model import FileRow, SourceSpec, backend_stats, file_errors, file_rows
from .lease import is_fenced
from .live_job import LiveJob
from .pipeline import Pipeline, chunking_key
from .search import sentence_vectors_key
from .segments import DocumentInfo

if TYPE_CHECKING:
    from .jobs import JobManager

log = logging.getLogger(__name__)

# How long a job waits for an unavailable peer (embedder, storage, object store) before failing.
PEER_WAIT_S = 120.0
_TRANSIENT_WORDS = ("unavailable", "connect", "timed out", "timeout", "reset", "slowdown", "503", "refused")


_TRANSIENT_KINDS = (
    ErrorKind.UNAVAILABLE,
    ErrorKind.DEADLINE_EXCEEDED,
    ErrorKind.RESOURCE_EXHAUSTED,
    ErrorKind.CANCELLED,
)


def _transient(err: Exception) -> bool:
    """True for failures a peer's restart or load explains: UNAVAILABLE, DEADLINE_EXCEEDED,
    RESOURCE_EXHAUSTED or CANCELLED (a stopping peer) from a service (adapters.py keeps peers'
    codes), or a store write that failed for a connection reason."""
    if isinstance(err, ServiceError):
        return err.kind in _TRANSIENT_KINDS
    return any(w in str(err).lower() for w in _TRANSIENT_WORDS)


class JobRunner:
    def __init__(self, manager: JobManager) -> None:
        self.m = manager
        self.r = manager.r
        self.pipeline = Pipeline(manager.r, manager)

    async def run(self, lj: LiveJob) -> None:
        m, v, req = self.m, lj.view, lj.request
        lj.running = True
        companion = asyncio.create_task(self._companion(lj), name=f"ingest-{v.job_id}-progress")
        try:
            if lj.cancel_requested:  # cancelled before this task's first step (JobManager.cancel)
                raise asyncio.CancelledError
            await m.emit(lj, state="running", stage="parse")
            await m.save(lj)
            if not req.get("listed"):
                await self._list_prefix(lj)
            v.backends = backend_stats(req)
            v.embedder_device = await self._device()
            waited_until, delay, progress = 0.0, 1.0, -1
            while True:
                files = await m.state.files(v.job_id)
                committed, chunks = await m.state.batches(lj.record.batches)
                results = {f.object_key: f for f in [*committed, *lj.results]}
                v.documents_total = len(files)
                v.documents_done = len(results)
                v.file_errors = file_errors(list(results.values()))
                v.chunks_done = v.chunks_total = len(chunks)
                await m.emit(lj)
                pending = [f for f in files if f.object_key not in results]
                try:
                    await self.pipeline.run(lj, pending)
                    if lj.results:
                        await m.commit(lj, [], [])
                    await self._index(lj)
                    break
                except (ServiceError, OSError) as err:
                    # A peer (embedder, storage, the store behind it) restarting: resume from the
                    # last committed batch once it is back, as a new lease holder would. The wait
                    # counts from the last committed batch, not from the job's start, so a long
                    # job rides out a restart as well as a short one.
                    if len(lj.record.batches) > progress:
                        progress, waited_until, delay = len(lj.record.batches), time.monotonic() + PEER_WAIT_S, 1.0
                    if is_fenced(err) or not _transient(err) or time.monotonic() + delay > waited_until:
                        raise
                    log.warning(
                        "a peer is unavailable; resuming the job from its last committed batch",
                        extra={"job_id": v.job_id, "error": str(err)[:300], "retry_in_s": delay},
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 8.0)
        except asyncio.CancelledError:
            if lj.cancel_requested:
                await asyncio.shield(self._cancelled(lj))
            raise
        except Exception as err:
            if is_fenced(err):
                log.warning("stopped a job this replica may no longer write", extra={"job_id": v.job_id})
                return
            msg = err.message if isinstance(err, ServiceError) else f"{type(err).__name__}: {err}"
            log.exception("job failed", extra={"job_id": v.job_id})
            v.state, v.stage, v.error = "failed", "done", msg
            self.r.metrics.job_failed(v.collection)
            try:
                await m.save(lj)
                await m.state.finished(lj.record)
            except Exception:
                log.exception("could not record the job's failure", extra={"job_id": v.job_id})
            await m.emit(lj)
        finally:
            companion.cancel()
            await asyncio.gather(companion, return_exceptions=True)
            lj.gone = True
            async with lj.cond:
                lj.cond.notify_all()
            if m.live.get(v.job_id) is lj:
                del m.live[v.job_id]
            m.state.forget(v.job_id)

    async def _companion(self, lj: LiveJob) -> None:
        """Writes progress (throttled) and honours a cancel request recorded by any replica."""
        while True:
            await asyncio.sleep(self.m.timing.progress_write_s)
            try:
                if await self.m.state.cancel_requested(lj.view.job_id):
                    lj.cancel_requested = True
                    assert lj.task is not None
                    lj.task.cancel()
                    return
                if lj.dirty and not lj.view.terminal:
                    await self.m.save(lj)
            except ServiceError as err:
                if is_fenced(err):
                    assert lj.task is not None
                    lj.task.cancel()
                    return
                log.warning("could not write a job's progress", extra={"job_id": lj.view.job_id, "error": err.message})

    async def _list_prefix(self, lj: LiveJob) -> None:
        req = lj.request
        objs = await self.r.store.list(req["source_prefix"], backend=req["source_backend"])
        specs = [SourceSpec(o.key, metadata={}) for o in objs if not o.key.endswith("/")]
        files = await self.m.state.files(lj.view.job_id)
        existing = {f.object_key for f in files}
        files += file_rows([s for s in specs if s.object_key not in existing], taken=existing)
        await self.m.state.put_files(lj.view.job_id, files)
        req["listed"] = True
        await self.m.save(lj)

    async def _index(self, lj: LiveJob) -> None:
        m, v = self.m, lj.view
        await m.emit(lj, stage="index")
        await m.save(lj)
        files = await m.state.files(v.job_id)
        committed, rows = await m.state.batches(lj.record.batches)
        results = {f.object_key: f for f in committed}
        chunking = chunking_key(lj.request, self.r.settings.sentence_vectors)
        done = {f.document_id: f for f in results.values() if f.status == "done"}
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
        t0 = time.perf_counter_ns()
        if docs:
            await m.keeper.check()
            version = await self.r.commit(
                v.collection, docs, records, vectors, backends=lj.request["target_backends"], fence=m.keeper
            )
        elif self.r.collections.get(v.collection):
            version = self.r.collections[v.collection].snapshot.version
        v.stage_ns["index"] = v.stage_ns.get("index", 0) + time.perf_counter_ns() - t0
        final: list[FileRow] = [results.get(f.object_key, f) for f in files]
        await m.state.put_files(v.job_id, final)  # the per-file results and stage times outlive the batches
        failed = [f for f in final if f.status == "failed"]
        state = "succeeded" if not failed else ("failed" if len(failed) == len(final) else "partial")
        v.error = "" if state != "failed" else f"every file failed; the first: {failed[0].name}: {failed[0].reason}"
        v.document_ids = [f.document_id for f in final if f.status in ("done", "unchanged")]
        v.state, v.stage, v.index_version = state, "done", version
        v.documents_done, v.eta_s = len(results), 0.0
        self.r.metrics.job_ended(v.collection, state, [f.status for f in final], len(records))
        await m.save(lj)
        await m.state.finished(lj.record)
        await m.emit(lj)

    async def _device(self) -> str:
        """The embedder's device for the job's summary; "" when the encoder cannot say."""
        describe = getattr(self.r.encoder, "device", None)
        if describe is None:
            return ""
        try:
            return str(await asyncio.wait_for(describe(), 5.0))  # never holds the job up for long
        except Exception:  # noqa: BLE001 - a summary detail; the job does not depend on it
            return ""

    async def _cancelled(self, lj: LiveJob) -> None:
        """A cancelled job publishes nothing; chunk objects it wrote that no version uses go."""
        v = lj.view
        try:
            _files, rows = await self.m.state.batches(lj.record.batches)
            state = self.r.collections.get(v.collection)
            # Chunk objects (and their sentence vectors) written ahead of a commit that never came
            # (none of them is live).
            prefixes = (chunk_key(v.collection, ""), sentence_vectors_key(v.collection, ""))
            written_ahead = {k: k.removeprefix(prefixes[0]).removeprefix(prefixes[1]) for k in lj.uncommitted}
            ids = [r.chunk_id for r in rows] + list(set(written_ahead.values()))
            live_ids = await state.live.live_chunk_ids(ids) if state else set()
            orphans = [chunk_key(v.collection, r.chunk_id) for r in rows if r.chunk_id not in live_ids]
            orphans += [sentence_vectors_key(v.collection, r.chunk_id) for r in rows if r.chunk_id not in live_ids]
            ahead = {k for k, cid in written_ahead.items() if cid not in live_ids}
            orphans = sorted(ahead.union(orphans))
            for st in v.backends:
                if orphans:
                    await self.r.store.delete(orphans, backend="" if st.backend == "default" else st.backend)
        except ServiceError as err:
            log.warning("could not delete a cancelled job's chunks", extra={"error": str(err)})
        v.state, v.stage, v.eta_s = "cancelled", "done", 0.0
        try:
            await self.m.save(lj)
            await self.m.state.finished(lj.record)
        except ServiceError as err:
            log.warning("could not record a job's cancellation", extra={"job_id": v.job_id, "error": err.message})
        await self.m.emit(lj)
