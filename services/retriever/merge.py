"""Tiered merging: which segments to merge, and the merged segment's contents.

The policy is Lucene's tiered one, simplified: segments are grouped in tiers by live size (a tier
spans a factor of `factor`, from `floor_chunks` up), and when a tier holds `factor` segments they
are merged into one of the next tier. A segment whose rows are more than half deleted is merged
too, so deletes do not pile up. Merging keeps each document's rows in order, segment after segment,
so the merged view ranks exactly as the segments it replaces.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import segments as store_fmt
from .index import ChunkRecord, DocumentInfo, Segment
from .lexical import Analyzer, Postings
from .ports import ObjectStore
from .segments import SegmentEntry, encode_segment


@dataclass(frozen=True)
class MergePolicy:
    """`factor` segments of one tier merge into one (0 turns merging off)."""

    factor: int = 8
    floor_chunks: int = 1000

    def tier(self, live_chunks: int) -> int:
        return int(math.log(max(live_chunks, self.floor_chunks) / self.floor_chunks, self.factor))

    def pick(self, sizes: Sequence[tuple[str, int, int]]) -> list[str]:
        """Segment ids to merge next, from (id, live chunks, rows) in manifest order; [] for none.

        Only neighbours merge (`factor` consecutive segments of one tier, the smallest such run
        first), so rows keep their order and ties rank as before (Lucene's log merge policy)."""
        if self.factor < 2:
            return []
        runs = []
        for i in range(len(sizes) - self.factor + 1):
            window = sizes[i : i + self.factor]
            if len({self.tier(live) for _, live, _ in window}) == 1:
                runs.append((sum(live for _, live, _ in window), i))
        if runs:
            _, i = min(runs)
            return [sid for sid, _, _ in sizes[i : i + self.factor]]
        sparse = [sid for sid, live, rows in sizes if rows and live * 2 < rows]
        return sparse[:1]  # rewritten alone, without its deleted rows


@dataclass
class Merged:
    records: list[ChunkRecord]
    vectors: np.ndarray
    documents: dict[str, DocumentInfo]
    postings: Postings


@dataclass
class Source:
    """What a merge needs of one segment, as plain data."""

    records: list[ChunkRecord]
    vectors: np.ndarray
    documents: dict[str, DocumentInfo]
    postings: Postings
    deleted: frozenset[str]
    live: np.ndarray

    @classmethod
    def of(cls, seg: Segment, deleted: frozenset[str]) -> Source:
        return cls(seg.records, seg.vectors, seg.documents, seg.postings, deleted, seg.live_mask(deleted))


def merge_rows(sources: Sequence[Source], dim: int) -> tuple[list[ChunkRecord], np.ndarray, dict[str, DocumentInfo]]:
    """The live rows of `sources`, in order: records, vectors, documents (cheap: no postings)."""
    records: list[ChunkRecord] = []
    vecs: list[np.ndarray] = []
    docs: dict[str, DocumentInfo] = {}
    for s in sources:
        records.extend(r for r, ok in zip(s.records, s.live, strict=True) if ok)
        vecs.append(s.vectors[s.live])
        docs.update({d: info for d, info in s.documents.items() if d not in s.deleted})
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
    return records, vectors.reshape(len(records), dim), docs


def merge_segments(sources: Sequence[Source], dim: int) -> Merged:
    """The live rows of `sources`, in order, as one segment's contents; postings are merged,
    never re-analysed."""
    records, vectors, docs = merge_rows(sources, dim)
    return Merged(records, vectors, docs, Postings.merge([(s.postings, s.live) for s in sources]))


def merge_and_encode(sources: Sequence[Source], dim: int) -> tuple[Merged, dict[str, bytes]]:
    """The merged contents and the new segment's files (the in-process merge, in a worker thread)."""
    merged = merge_segments(sources, dim)
    return merged, encode_segment(merged.records, merged.vectors, merged.documents, merged.postings)


def rows_digest(records: Sequence[ChunkRecord]) -> str:
    """Which chunks, in which order: the merge process and the serving process must agree."""
    return hashlib.sha256("\n".join(r.chunk_id for r in records).encode()).hexdigest()


# The merge process -------------------------------------------------------------------------------
# A merge's heavy work (reading and decoding its source segments, merging postings, encoding and
# writing the new segment) runs in a separate process at the lowest CPU priority, reading and
# writing the store through its own channel. Only the entry, the merged postings (a few numpy
# arrays) and a digest come back: the serving process rebuilds the merged rows from the segments
# it already holds (a list concatenation), so a merge costs queries neither CPU nor the GIL.


@dataclass(frozen=True)
class MergeJob:
    """One merge as the merge process runs it (plain, picklable data)."""

    collection: str
    entries: list[SegmentEntry]
    deleted: list[frozenset[str]]
    dim: int
    generation: int
    store: Callable[[], ObjectStore] | None  # opens the store in the merge process (adapters.StorageStoreFactory)


@dataclass
class MergeOutput:
    entry: SegmentEntry
    postings: Postings
    rows: int
    digest: str


def run_merge_job(job: MergeJob) -> MergeOutput:
    """The merge process's entry point: reads the sources, merges, writes the new segment."""
    return asyncio.run(_merge_job(job))


async def _merge_job(job: MergeJob) -> MergeOutput:
    if job.store is None:
        raise ValueError("a merge in the merge process needs a store factory")
    store = job.store()
    try:
        analyzer = Analyzer()
        sources = []
        for entry, gone in zip(job.entries, job.deleted, strict=True):
            data = await store_fmt.read_segment(store, job.collection, entry, job.dim, analyzer)
            live = np.fromiter((r.document_id not in gone for r in data.records), bool, len(data.records))
            sources.append(Source(data.records, data.vectors, data.documents, data.postings, gone, live))
        merged, files = merge_and_encode(sources, job.dim)
        seg_id = store_fmt.new_segment_id(job.generation, files)
        entry = store_fmt.segment_entry(seg_id, files, len(merged.records))
        base = store_fmt.prefix(job.collection) + entry.path
        await store_fmt.put_files(store, [(base + n, d) for n, d in files.items()])
        return MergeOutput(entry, merged.postings, len(merged.records), rows_digest(merged.records))
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            await close()


# What builds the serving process's Segment from merged contents (LiveIndex._segment).
SegmentBuilder = Callable[[str, Sequence[ChunkRecord], np.ndarray, Mapping[str, DocumentInfo], Postings, int], Segment]


async def merge_here(
    collection: str, sources: Sequence[Source], dim: int, gen: int, store: ObjectStore | None, build: SegmentBuilder
) -> tuple[Segment, SegmentEntry]:
    """Merges in a worker thread of this process and writes the new segment from here (to `store`,
    unless None: an index kept in memory only)."""
    merged, files = await asyncio.to_thread(merge_and_encode, sources, dim)
    seg_id = store_fmt.new_segment_id(gen, files)
    entry = store_fmt.segment_entry(seg_id, files, len(merged.records))
    if store is not None:
        base = store_fmt.prefix(collection) + entry.path
        await store_fmt.put_files(store, [(base + n, d) for n, d in files.items()])
    seg = await asyncio.to_thread(build, seg_id, merged.records, merged.vectors, merged.documents, merged.postings, 0)
    return seg, entry


async def merge_elsewhere(
    job: MergeJob, sources: Sequence[Source], executor: Executor, build: SegmentBuilder
) -> tuple[Segment, SegmentEntry]:
    """Runs the merge in the merge process (it reads the sources from the store and writes the
    new segment itself), then builds the merged segment here from the rows already in memory and
    the postings it sent back: nothing large is decoded or copied by this process."""
    out = await asyncio.get_running_loop().run_in_executor(executor, run_merge_job, job)

    def here() -> Segment:
        records, vectors, documents = merge_rows(sources, job.dim)
        if len(records) != out.rows or rows_digest(records) != out.digest:
            raise RuntimeError(f"the merge process merged other rows than {job.collection!r} holds")
        return build(out.entry.id, records, vectors, documents, out.postings, out.entry.created_unix_ns)

    return await asyncio.to_thread(here), out.entry


def _lower_priority() -> None:
    """The merge process's initializer: lowest CPU priority and one thread per native library, so
    that on a busy machine a merge takes the CPU only when queries leave it."""
    try:
        os.nice(19)
    except OSError:  # pragma: no cover - not permitted here: run at normal priority
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - numpy's BLAS is not used by merges anyway
        pass


def merge_executor() -> ProcessPoolExecutor:
    """One worker process, started on first use with `spawn` (no fork of a gRPC process), at nice 19
    with single-threaded native libraries (set in the child, so the serving process keeps its own)."""
    return ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority
    )
