"""The ingestion job manager: creates, runs, resumes, cancels and reports jobs, on any replica.

Job state lives in the object store (`job_state.py`), so every replica answers GetJob, ListJobs,
CancelJob and follows a job's progress. Only the holder of the ingestion lease (`lease.py`) runs
jobs: when it gains the lease it adopts every queued or running job (writing the job record with
its own fence, which refuses any later write of the previous holder) and resumes each from its
last committed batch. A job commits its batches to the store as it goes and publishes one index
version at the end; a cancelled or failed job publishes nothing.

A second request identical to a running job (same collection, same files, same options) joins
it: StartIngest returns the running job and Ingest streams its progress.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kernel import tracing
from kernel.errors import ServiceError, invalid, not_found

from .chunking import Chunker, NullCounter
from .core import Retriever, check_name
from .job_model import (
    ChunkRow,
    FileRow,
    JobRecord,
    JobView,
    SourceSpec,
    file_rows,
    fingerprint,
    stats_of,
    view_of,
)
from .job_runner import JobRunner
from .job_state import JobStore
from .lease import LeaseKeeper
from .live_job import LiveJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobTiming:
    """How often job state is written and read (tests shorten these)."""

    progress_write_s: float = 1.0  # a running job's record is rewritten at most this often
    follow_poll_s: float = 0.5  # a replica following another's job reads its record this often
    heartbeat_s: float = 15.0  # a progress stream repeats the current state after this long idle
    adopt_poll_s: float = 1.0  # the lease holder looks for new jobs this often


class JobManager:
    """Ingestion jobs on this replica: the API every replica serves, and running them on the holder."""

    def __init__(self, retriever: Retriever, keeper: LeaseKeeper, timing: JobTiming | None = None) -> None:
        self.r = retriever
        self.s = retriever.settings
        self.keeper = keeper
        self.timing = timing or JobTiming()
        self.state = JobStore(retriever.store)
        self.live: dict[str, LiveJob] = {}
        self._adopting: set[str] = set()
        self.runner = JobRunner(self)
        self._adopter: asyncio.Task[None] | None = None
        # Called with True/False when this replica gains/loses the lease (prefix watches listen).
        self.lease_listeners: list[Callable[[bool], Awaitable[None]]] = []
        keeper.on_change = self._lease_changed

    async def start(self) -> None:
        await self.keeper.start()

    async def stop(self) -> None:
        """Stops running jobs without marking them: the next holder resumes them."""
        await self.keeper.stop()
        await self._stop_all()

    async def _lease_changed(self, held: bool) -> None:
        if held:
            self._adopter = asyncio.create_task(self._adopt_loop(), name="ingest-adopt")
        else:
            await self._stop_all()
        for listener in self.lease_listeners:
            await listener(held)

    async def _stop_all(self) -> None:
        if self._adopter is not None:
            self._adopter.cancel()
            await asyncio.gather(self._adopter, return_exceptions=True)
            self._adopter = None
        tasks = [lj.task for lj in self.live.values() if lj.task and not lj.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _adopt_loop(self) -> None:
        while True:
            try:
                for job_id in await self.state.active_ids():
                    if job_id not in self.live and job_id not in self._adopting and self.keeper.held:
                        await self._adopt(job_id)
            except ServiceError as err:
                log.warning("could not adopt the active jobs", extra={"error": err.message})
            await asyncio.sleep(self.timing.adopt_poll_s)

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
            Chunker(size, overlap, counter=NullCounter())
        except ValueError as err:
            raise invalid(str(err), reason="BAD_CHUNKING") from None
        for s in sources:
            if not s.object_key or s.object_key.endswith("/"):
                raise invalid(f"source object key {s.object_key!r} is not an object key", reason="BAD_SOURCE")
        await self.r.ensure_collection(collection)
        now = time.time_ns()
        files = file_rows(sources)
        request = {
            "source_prefix": source_prefix,
            "source_backend": source_backend,
            "target_backends": list(dict.fromkeys(target_backends)) or [""],
            "chunk_size": size,
            "chunk_overlap": overlap,
            "listed": not source_prefix,
        }
        rec = JobRecord(uuid.uuid4().hex, collection, "queued", "queued", request, now, now)
        rec.fingerprint = fingerprint(collection, files, request)
        rec.stats = {"documents_total": len(files)}
        stored = await self.state.create(rec, files)
        if stored.job_id != rec.job_id:
            log.info("joined the running identical job", extra={"job_id": stored.job_id})
            return await self.get(stored.job_id)
        if self.keeper.held:
            try:
                await self._adopt(rec.job_id)
            except ServiceError as err:  # stored: the holder's adoption loop picks it up
                log.warning("could not start the job at once", extra={"job_id": rec.job_id, "error": err.message})
        return await self.get(rec.job_id)

    async def get(self, job_id: str) -> JobView:
        lj = self.live.get(job_id)
        if lj is not None:
            return _copy(lj.view)
        return view_of(await self._stored(job_id))

    async def list(self, collection: str, page_size: int, page_token: str) -> tuple[list[JobView], str]:
        # The token is the created_ns of the last job of the previous page: a 64-bit integer.
        if page_token and not (page_token.isdigit() and int(page_token) < 2**63):
            raise invalid(f"page_token {page_token[:40]!r} is not a token this service issued", reason="BAD_PAGE_TOKEN")
        before = int(page_token) if page_token else 0
        listing = [(c, j) for c, j in await self.state.listing() if not before or c < before]
        views: list[JobView] = []
        last = 0
        for i in range(0, len(listing), max(page_size, 1) * 2):
            part = listing[i : i + page_size * 2]
            recs = await self.state.read_many([j for _, j in part if j not in self.live])
            for created, j in part:
                view = _copy(self.live[j].view) if j in self.live else (view_of(recs[j]) if j in recs else None)
                if view is None or (collection and view.collection != collection):
                    continue
                if len(views) == page_size:
                    return views, str(last)
                views.append(view)
                last = created
        return views, ""

    async def records_of(self, collection: str) -> list[JobRecord]:
        """Every stored job record of `collection` (for clearing it), newest first."""
        listing = await self.state.listing()
        recs = await self.state.read_many([j for _, j in listing])
        return [recs[j] for _, j in listing if j in recs and recs[j].collection == collection]

    async def cancel(self, job_id: str, wait_s: float = 30.0) -> JobView:
        """Cancels a job and returns it once it has ended, waiting at most `wait_s` (the caller's
        deadline) for a job run elsewhere or not started yet. Cancelling an ended job returns it."""
        view = await self.get(job_id)
        if view.terminal:
            return view
        # Recorded first, so that whichever replica runs the job (now or after a take-over) stops it.
        await self.state.request_cancel(job_id)
        deadline = time.monotonic() + wait_s
        while True:
            # This replica runs it, or started running it since the last look (an adoption that was
            # in flight when the request came): stop it here, not at its next progress poll.
            lj = self.live.get(job_id)
            if lj is not None and lj.task is not None and not lj.task.done():
                lj.cancel_requested = True
                if lj.running:  # else its first step sees the request and records the cancellation
                    lj.task.cancel()
                await asyncio.gather(lj.task, return_exceptions=True)
                if lj.view.terminal:
                    return _copy(lj.view)
            view = await self.get(job_id)
            # Another replica runs it (or will): it honours the recorded request within a second.
            if view.terminal or time.monotonic() >= deadline:
                return view
            await asyncio.sleep(self.timing.follow_poll_s)

    async def follow(self, job_id: str, after_sequence: int = 0) -> AsyncIterator[tuple[int, JobView, bool]]:
        """Yields (sequence, job, terminal): the current state first, then each change, and the
        current state again after `heartbeat_s` without one, until the job ends. Works for a job
        run by any replica; the stream outlives a change of lease holder."""
        last, sent = after_sequence, time.monotonic()
        first = True
        while True:
            lj = self.live.get(job_id)
            if lj is not None and not lj.gone:
                async with lj.cond:
                    try:
                        await asyncio.wait_for(
                            lj.cond.wait_for(lambda lj=lj, last=last: lj.seq > last or lj.view.terminal or lj.gone),
                            timeout=self.timing.heartbeat_s,
                        )
                    except TimeoutError:
                        pass
                    seq, view = lj.seq, _copy(lj.view)
                if lj.gone and not view.terminal:
                    continue
                fresh = seq > last
            else:
                rec = await self._stored(job_id)
                seq, view = rec.seq, view_of(rec)
                fresh = seq > last or first
            now = time.monotonic()
            if fresh or view.terminal or now - sent >= self.timing.heartbeat_s:
                first, last, sent = False, max(last, seq), now
                yield seq, view, view.terminal
                if view.terminal:
                    return
            if lj is None or lj.gone:
                await asyncio.sleep(self.timing.follow_poll_s)

    async def _stored(self, job_id: str) -> JobRecord:
        rec = await self.state.read(job_id) if _plausible(job_id) else None
        if rec is None:
            raise not_found(f"job {job_id!r} does not exist", reason="JOB_NOT_FOUND", job_id=job_id)
        return rec

    # Running (lease holder) --------------------------------------------------------------------
    async def _adopt(self, job_id: str) -> None:
        """Takes a stored job over (its record now carries this holder's fence) and runs it."""
        if job_id in self._adopting:
            return
        self._adopting.add(job_id)
        try:
            await self.keeper.check()
            rec = await self.state.take(job_id)
            if rec is None or not rec.active:
                if rec is not None:
                    await self.state.finished(rec)
                return
            if rec.holder:
                rec.seq += 10_000  # a new holder's sequence numbers stay ahead of the old one's
            rec.fence, rec.holder = self.keeper.token, self.keeper.replica_id
            await self.state.write(rec)
        finally:
            self._adopting.discard(job_id)
        lj = LiveJob(view_of(rec), rec, seq=rec.seq)
        # The run's span: child of the request that started it, when one did (kernel/tracing.py).
        lj.span = tracing.start_span(
            "ingest.job", attributes={"ddnrag.job_id": job_id, "ddnrag.collection": rec.collection}
        )
        self.live[job_id] = lj
        lj.task = asyncio.create_task(self._run_in_span(lj), name=f"ingest-{job_id}")

    async def _run_in_span(self, lj: LiveJob) -> None:
        with tracing.use_span(lj.span, end=True):
            await self.runner.run(lj)

    async def emit(self, lj: LiveJob, **changes: Any) -> None:
        for k, val in changes.items():
            setattr(lj.view, k, val)
        v = lj.view
        v.updated_unix_ns = time.time_ns()
        elapsed = time.perf_counter() - lj.started
        lj.clocks_to_view()
        if lj.embed_clock.busy_s:
            v.embeddings_per_s = lj.embedded / lj.embed_clock.busy_s
        left = v.documents_total - v.documents_done
        v.eta_s = elapsed / v.documents_done * left if v.documents_done and not v.terminal else -1.0
        if v.terminal:
            v.eta_s = 0.0
        lj.dirty = True
        self.r.metrics.progressed()
        async with lj.cond:
            lj.seq += 1
            lj.cond.notify_all()

    async def save(self, lj: LiveJob, **fields: Any) -> None:
        """Writes the job's record (fenced) with its current progress and `fields`."""
        async with lj.write_lock:
            await self.keeper.check()
            rec = lj.record
            for k, val in fields.items():
                setattr(rec, k, val)
            v = lj.view
            rec.state, rec.stage, rec.error, rec.index_version = v.state, v.stage, v.error, v.index_version
            rec.stats, rec.seq, rec.updated_ns = stats_of(v), lj.seq, time.time_ns()
            lj.dirty = False
            await self.state.write(rec)

    async def commit(self, lj: LiveJob, files: list[FileRow], chunks: list[ChunkRow]) -> None:
        """Commits a batch: its objects first, then the record that names it (the commit point)."""
        files = lj.results + files
        lj.results = []
        name = f"{len(lj.record.batches):06d}-g{self.keeper.token}"
        await self.keeper.check()
        key = await self.state.put_batch(lj.view.job_id, name, files, chunks)
        lj.view.documents_done += sum(f.status == "done" for f in files)
        lj.view.chunks_done += len(chunks)
        await self.save(lj, batches=[*lj.record.batches, key])
        await self.emit(lj)


def _plausible(job_id: str) -> bool:
    return 0 < len(job_id) <= 64 and all(c.isalnum() or c in "-_" for c in job_id)


def _copy(v: JobView) -> JobView:
    return copy.deepcopy(v)
