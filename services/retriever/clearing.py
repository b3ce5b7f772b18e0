"""Clearing a collection: everything it owns goes, in an order that never leaves it half-served.

What a collection owns in the object store: `index/<c>/` (CURRENT, manifests, segments),
`chunks/<c>/` on every backend its jobs wrote to, `docs/<c>/` (the raw uploads), the marker
`collections/<c>` and its ingestion jobs' records (`jobs/<id>/`, `jobindex/…_<id>`).

The order:
1. Its queued or running jobs are cancelled (on whichever replica runs them) and awaited, so no
   job commits into the collection afterwards; a job that will not stop refuses the clear.
2. CURRENT goes first, then the catalog marker: every replica's follower sees the collection
   unpublished on its next poll and stops serving it, before any file it reads is deleted.
3. Then the segments, manifests, chunks (on every backend), raw documents and job records.

A failure in step 3 leaves only unpublished leftovers: clearing the same name again (even once
the collection is gone from the listing) removes them, so a retry always finishes the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from kernel.errors import ErrorKind, ServiceError, not_found

from . import segments
from .core import DEFAULT_COLLECTION, Retriever, check_name
from .job_model import JobRecord
from .jobs import JobManager

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cleared:
    """What a clear removed (the documents and chunks it had when it was unpublished)."""

    collection: str
    documents: int
    chunks: int
    objects_deleted: int
    jobs_cancelled: int
    jobs_removed: int


def owned_prefixes(name: str) -> tuple[str, ...]:
    """The key prefixes that belong to collection `name` alone (on the default backend)."""
    return (segments.prefix(name), f"chunks/{name}/", f"sentences/{name}/", f"docs/{name}/")


async def clear_collection(core: Retriever, jobs: JobManager, name: str) -> Cleared:
    """Deletes collection `name` and everything it owns; NOT_FOUND when nothing of it exists."""
    check_name(name)
    state = core.collections.get(name)
    known = state is not None or name in await core.catalog.names() or name in await core.published()
    if not known and not await _leftovers(core, name):
        raise not_found(
            f"collection {name!r} does not exist; list the collections with `rag collections list`"
            " or GET /api/collections",
            reason="COLLECTION_NOT_FOUND",
            collection=name,
        )
    records = await jobs.records_of(name)
    cancelled = await _stop_jobs(jobs, name, records)
    backends = sorted({b for r in records for b in r.request.get("target_backends", [""])} | {""})
    documents, chunks = (len(state.live.documents), state.live.chunks) if state is not None else (0, 0)
    lock = state.live.lock if state is not None else contextlib.nullcontext()
    async with lock:
        # Unpublish: followers drop the collection on their next poll (CURRENT is what they read).
        await core.store.delete([segments.prefix(name) + "CURRENT"])
        await core.catalog.remove(name)
        await segments.note_change(core.store)  # followers poll this object; a new ETag makes them look
        core.collections.pop(name, None)
        await asyncio.to_thread(core.cache.invalidate, name, "\x00")
    if state is not None:
        await state.live.stop()
        await state.live.reset()
        await state.live.drop_external()  # the Milvus collection (stateless mode)
    deleted = await core.store.delete(prefix=segments.prefix(name))
    for backend in backends:
        try:
            deleted += await core.store.delete(prefix=f"chunks/{name}/", backend=backend)
            deleted += await core.store.delete(prefix=f"sentences/{name}/", backend=backend)
        except ServiceError as err:
            if not backend or err.kind != ErrorKind.NOT_FOUND:
                raise
            log.warning("a job's target backend is gone; its chunks stay there", extra={"backend": backend})
    deleted += await core.store.delete(prefix=f"docs/{name}/")
    removed = 0
    for rec in records:
        deleted += await jobs.state.remove(rec)
        removed += 1
    if name == DEFAULT_COLLECTION:
        await core.create_collection(name)  # `default` always exists, empty after a clear
    log.info(
        "cleared collection",
        extra={"collection": name, "objects_deleted": deleted, "jobs_cancelled": cancelled, "documents": documents},
    )
    return Cleared(name, documents, chunks, deleted, cancelled, removed)


async def _leftovers(core: Retriever, name: str) -> bool:
    for prefix in owned_prefixes(name):
        if await core.store.list(prefix):
            return True
    return False


async def _stop_jobs(jobs: JobManager, name: str, records: list[JobRecord]) -> int:
    cancelled = 0
    for rec in records:
        if not rec.active:
            continue
        view = await jobs.cancel(rec.job_id)
        if not view.terminal:
            raise ServiceError(
                ErrorKind.FAILED_PRECONDITION,
                f"ingestion job {rec.job_id} of collection {name!r} did not stop when cancelled;"
                " nothing was deleted, try the clear again in a few seconds",
                reason="JOB_STILL_RUNNING",
                metadata={"collection": name, "job_id": rec.job_id},
            )
        rec.state = view.state
        cancelled += 1
    return cancelled
