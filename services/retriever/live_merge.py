"""A merge of one collection's segments, published the way a commit is (LiveIndex.merge_once).

The policy (merge.MergePolicy) picks neighbouring segments of one size tier; the merge itself runs
in the merge process (or a worker thread), outside the collection's lock, so searches and commits
keep going; only the publish takes the lock again, and gives up when another writer got there
first (the next pass tries again).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .merge import MergeJob, Source, merge_elsewhere, merge_here
from .ports import PreconditionFailed
from .segments import Manifest

if TYPE_CHECKING:
    from .live import LiveIndex

log = logging.getLogger(__name__)


async def merge_once(live: LiveIndex) -> bool:
    """Merges one group the policy picks; publishes like a commit. Searches keep running on the
    current view meanwhile. Returns False when there was nothing to merge (or it lost a race)."""
    async with live.lock:
        pick = live.merge_candidates()
        if not pick:
            return False
        before = {sid: frozenset(live.manifest.deleted.get(sid, ())) for sid in pick}
        sources = [Source.of(live.segments[sid], before[sid]) for sid in pick]
        gen = live.manifest.generation + 1
        dim = live.manifest.dimension
        store = live.opts.merge_store if live.opts.persist else None
        by_id = {e.id: e for e in live.manifest.segments}
        job = MergeJob(live.collection, [by_id[s] for s in pick], [before[s] for s in pick], dim, gen, store)
    if live.opts.merge_executor is not None and job.store is not None:
        seg, entry = await merge_elsewhere(job, sources, live.opts.merge_executor, live._segment)
    else:
        store = live.store if live.opts.persist else None
        seg, entry = await merge_here(live.collection, sources, dim, gen, store, live._segment)
    seg_id, n_rows = seg.id, len(seg)
    async with live.lock:
        etag = await live._catch_up()
        live_ids = [e.id for e in live.manifest.segments]
        if not set(pick) <= set(live_ids):
            return False  # another writer merged or replaced them first; GC takes our files
        # Documents deleted from the sources while we merged are deleted from the merged one.
        later = {d for sid in pick for d in set(live.manifest.deleted.get(sid, ())) - before[sid]}
        first = live_ids.index(pick[0])
        entries = [e for e in live.manifest.segments if e.id not in pick]
        entries.insert(first, entry)
        deleted = {k: list(v) for k, v in live.manifest.deleted.items() if k not in pick}
        if later:
            deleted[seg_id] = sorted(later)
        m = Manifest(
            live.collection,
            live.manifest.generation + 1,
            entries,
            deleted,
            fence_token=live.manifest.fence_token,
            dimension=live.manifest.dimension or dim,
            chunks=live.manifest.chunks,
            documents=live.manifest.documents,
            created_unix_ns=time.time_ns(),
        )
        if live.opts.persist:
            try:
                await live._publish(m, etag)
            except PreconditionFailed:
                return False  # a commit won the race; the next pass tries again
        loaded = dict(live.segments)
        loaded[seg_id] = seg
        live._swap(m, m.name, loaded)
        log.info(
            "merged segments",
            extra={"collection": live.collection, "segments": len(pick), "chunks": n_rows},
        )
        return True
