"""One collection's index as it evolves: commits, merges, and following what others publish.

`LiveIndex` owns the collection's manifest, its loaded segments and the view searches use. Every
change (a commit, a merge, another replica's manifest) builds a new view from immutable segments
and swaps it in under the collection's lock, so searches never wait for and never see a change in
progress. The heavy parts (analysing, encoding, merging, building dense indexes) run in worker
threads; only the swap happens on the event loop.

Publishing is optimistic: right before writing CURRENT the writer re-reads it, and if another
writer published meanwhile it first follows that manifest, then re-applies its own change (its
segment files are already written and stay valid).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from kernel.errors import ErrorKind, ServiceError

from . import live_merge
from . import segments as store_fmt
from .index import ChunkRecord, CollectionIndex, DocumentInfo, Segment
from .lexical import Analyzer, Postings
from .merge import MergePolicy
from .milvus_hybrid import MilvusCollection, fill_from_index
from .ports import ObjectStore, PreconditionFailed
from .segments import Manifest, SegmentEntry

log = logging.getLogger(__name__)

FenceReader = Callable[[], Awaitable[int]]


class Fence(Protocol):
    """The ingestion lease as a commit carries it (lease.LeaseKeeper is one)."""

    token: int

    async def check(self) -> None: ...


@dataclass(frozen=True)
class IndexOptions:
    """How segments are built and kept (filled from the retriever's settings)."""

    hnsw_threshold: int = 50_000
    bm25_params: tuple[float, float] = (0.9, 0.4)
    persist: bool = True
    merge: MergePolicy = field(default_factory=MergePolicy)
    gc_grace_s: float = 300.0
    # Where merges run: the service's merge process (with `merge_store`, which opens the store
    # there), or None for a worker thread of this process.
    merge_executor: Executor | None = None
    merge_store: Callable[[], ObjectStore] | None = None
    # Stateless mode (milvus_hybrid.py): the collection's Milvus collection, given its name. Then
    # replicas keep only manifests and document lists; chunks, vectors and BM25 live in Milvus.
    milvus: Callable[[str], MilvusCollection] | None = None


@dataclass
class CommitResult:
    version: str
    stale_chunk_ids: list[str]
    bytes_written: int


class LiveIndex:
    """A collection's live manifest, segments and search view."""

    def __init__(self, collection: str, store: ObjectStore, analyzer: Analyzer, opts: IndexOptions) -> None:
        self.collection = collection
        self.store = store
        self.analyzer = analyzer
        self.opts = opts
        self.manifest = Manifest(collection)
        self.current = ""  # CURRENT's content for `manifest` ("" before the first publish)
        self.segments: dict[str, Segment] = {}
        self.view = CollectionIndex.empty(analyzer)
        self.documents: dict[str, DocumentInfo] = {}
        self.doc_segments: dict[str, list[str]] = {}
        self.updated_unix_ns = 0
        self.lock = asyncio.Lock()
        self._merging: asyncio.Task[None] | None = None
        self._etag = ""  # CURRENT's ETag as read by the last `_catch_up`
        self.milvus = opts.milvus(collection) if opts.milvus is not None else None

    # What searches and callers read ------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def records(self) -> list[ChunkRecord]:
        return self.view.records

    @property
    def chunks(self) -> int:
        return self.manifest.chunks if self.milvus is not None else len(self.view)

    async def live_chunk_ids(self, chunk_ids: Sequence[str]) -> set[str]:
        """Which of `chunk_ids` the live index holds."""
        if self.milvus is not None:
            return await asyncio.to_thread(self.milvus.present, chunk_ids)
        return {c for c in chunk_ids if c in self.view.row_of}

    # Loading and following ---------------------------------------------------------------------
    async def sync(self, current: str) -> bool:
        """Loads the manifest CURRENT names, reading only the segments not loaded yet, and swaps it
        in. Raises CorruptSegment (and keeps the version it has) when a file is missing or bad.
        Returns whether anything changed."""
        async with self.lock:
            return await self._sync(current)

    async def _sync(self, current: str) -> bool:
        if not current or current == self.current:
            return False
        m = await store_fmt.read_manifest(self.store, self.collection, current)
        loaded = dict(self.segments)
        for entry in m.segments:
            if entry.id not in loaded:
                loaded[entry.id] = await self._load_segment(entry, m.dimension)
        self._swap(m, current, loaded)
        if self.milvus is not None:
            await fill_from_index(self.milvus, self.store, self.collection, m, self.analyzer)
        return True

    async def _load_segment(self, entry: SegmentEntry, dim: int) -> Segment:
        if self.milvus is not None:  # stateless: the chunks are in Milvus, only the documents here
            docs = await store_fmt.read_documents(self.store, self.collection, entry)
            return Segment(entry.id, [], np.zeros((0, dim), np.float32), docs, Postings.build([]))
        data = await store_fmt.read_segment(self.store, self.collection, entry, dim, self.analyzer)
        return await asyncio.to_thread(
            self._segment, entry.id, data.records, data.vectors, data.documents, data.postings, entry.created_unix_ns
        )

    def _segment(
        self,
        seg_id: str,
        records: Sequence[ChunkRecord],
        vectors: np.ndarray,
        documents: Mapping[str, DocumentInfo],
        postings: Postings | None = None,
        created_unix_ns: int = 0,
    ) -> Segment:
        if postings is None:
            postings = Postings.build(self.analyzer.many([r.text for r in records]))
        return Segment(
            seg_id,
            records,
            vectors,
            documents,
            postings,
            hnsw_threshold=self.opts.hnsw_threshold,
            created_unix_ns=created_unix_ns,
        )

    def _swap(self, m: Manifest, current: str, loaded: Mapping[str, Segment]) -> None:
        segs = [loaded[e.id] for e in m.segments]
        deleted = {k: frozenset(v) for k, v in m.deleted.items()}
        view = CollectionIndex.over(segs, deleted, analyzer=self.analyzer, bm25_params=self.opts.bm25_params)
        view.version = m.version
        docs: dict[str, DocumentInfo] = {}
        where: dict[str, list[str]] = {}
        for s in segs:
            gone = deleted.get(s.id, frozenset())
            for d, info in s.documents.items():
                if d not in gone:
                    docs[d] = info
                    where.setdefault(d, []).append(s.id)
        self.manifest, self.current, self.view = m, current, view
        self.segments = {s.id: s for s in segs}
        self.documents, self.doc_segments = docs, where
        self.updated_unix_ns = m.created_unix_ns

    async def reset(self) -> None:
        """Forgets everything (the collection was deleted)."""
        async with self.lock:
            self._swap(Manifest(self.collection), "", {})

    async def _catch_up(self, follow: bool = True) -> str:
        """Reads CURRENT, follows it (unless `follow` is False: a rebuild), returns its ETag."""
        if not self.opts.persist:
            return ""
        current, etag = await store_fmt.read_current_tagged(self.store, self.collection)
        if follow:
            await self._sync(current)
        self._etag = etag
        return etag

    # Commits -----------------------------------------------------------------------------------
    async def commit(
        self,
        documents: Mapping[str, DocumentInfo],
        records: Sequence[ChunkRecord],
        vectors: np.ndarray,
        *,
        remove: set[str] | None = None,
        fence: Fence | int | None = None,
        fence_reader: FenceReader | None = None,
        rebuild: bool = False,
    ) -> CommitResult:
        """Publishes one new segment holding `records` (the chunks of `documents`, which replace
        their earlier chunks) and deletes `remove`. `rebuild` starts from an empty index (the live
        one is corrupt). Raises FENCED_WRITE (FAILED_PRECONDITION) for a stale `fence`."""
        async with self.lock:
            await self._catch_up(follow=not rebuild)
            written = 0
            seg: Segment | None = None
            entry: SegmentEntry | None = None
            dim = vectors.shape[1] if len(records) else self.manifest.dimension
            vecs = np.asarray(vectors, np.float32).reshape(len(records), dim)
            tokens: list[list[str]] = []
            if documents:
                seg, entry, files, tokens = await asyncio.to_thread(self._new_segment, documents, records, vecs)
                if self.opts.persist:
                    base = store_fmt.prefix(self.collection) + entry.path
                    written += await store_fmt.put_files(self.store, [(base + n, d) for n, d in files.items()])
            replaced = set(documents) | set(remove or ())
            for attempt in range(8):
                # CURRENT's ETag as last read: the publish is a compare-and-swap against it.
                etag = await self._catch_up(follow=not rebuild) if attempt else self._etag
                base_m = Manifest(self.collection, self.manifest.generation) if rebuild else self.manifest
                token = await self._check_fence(fence, fence_reader)
                m, stale = self._next_manifest(base_m, replaced, entry, seg, token)
                if self.milvus is not None:  # the rows the replaced documents lose, read from Milvus
                    keep = {r.chunk_id for r in records}
                    stale = [] if rebuild else await asyncio.to_thread(self.milvus.stale_ids, replaced, keep)
                    m.chunks = base_m.chunks + len(records) - len(stale)
                if self.opts.persist:
                    try:
                        written += await self._publish(m, etag)
                    except PreconditionFailed:
                        continue  # another writer published first: follow it, apply ours on top
                if self.milvus is not None:
                    await self._apply_milvus(records, vecs, tokens, stale, rebuild)
                loaded = dict(self.segments)
                if seg is not None:
                    loaded[seg.id] = seg
                self._swap(m, m.name, loaded)
                new_ids = {r.chunk_id for r in records}
                return CommitResult(m.version, [c for c in stale if c not in new_ids], written)
            raise ServiceError(
                ErrorKind.UNAVAILABLE,
                f"collection {self.collection!r}: other writers kept publishing; the commit gave up, retry it",
                reason="INDEX_CONTENDED",
            )

    async def _apply_milvus(
        self,
        records: Sequence[ChunkRecord],
        vectors: np.ndarray,
        tokens: Sequence[Sequence[str]],
        stale: Sequence[str],
        rebuild: bool,
    ) -> None:
        """Brings the Milvus collection to the manifest just published (after CURRENT, so a refused
        commit never shows there). Idempotent, so a commit that failed here is repaired by running
        it again (a job retries its batch)."""
        assert self.milvus is not None
        if rebuild:
            await asyncio.to_thread(self.milvus.drop)
        await asyncio.to_thread(self.milvus.apply, records, vectors, tokens, stale)

    async def drop_external(self) -> None:
        """Drops the collection's Milvus collection (the collection was cleared)."""
        if self.milvus is not None:
            await asyncio.to_thread(self.milvus.drop)

    def _new_segment(
        self, documents: Mapping[str, DocumentInfo], records: Sequence[ChunkRecord], vectors: np.ndarray
    ) -> tuple[Segment, SegmentEntry, dict[str, bytes], list[list[str]]]:
        tokens = self.analyzer.many([r.text for r in records])
        postings = Postings.build(tokens)
        files = store_fmt.encode_segment(records, vectors, documents, postings)
        seg_id = store_fmt.new_segment_id(self.manifest.generation + 1, files)
        if self.milvus is not None:  # the files are the rebuild source; Milvus gets the rows
            seg = Segment(seg_id, [], np.zeros((0, vectors.shape[1]), np.float32), documents, Postings.build([]))
        else:
            seg = self._segment(seg_id, records, vectors, documents, postings)
        return seg, store_fmt.segment_entry(seg_id, files, len(records)), files, tokens

    def _next_manifest(
        self,
        base: Manifest,
        replaced: set[str],
        entry: SegmentEntry | None,
        seg: Segment | None,
        fence: int | None,
    ) -> tuple[Manifest, list[str]]:
        deleted = {k: set(v) for k, v in base.deleted.items()}
        stale: list[str] = []
        live_ids = {e.id for e in base.segments}
        for d in replaced:
            for sid in self.doc_segments.get(d, []):
                if sid in live_ids and d not in deleted.get(sid, set()):
                    deleted.setdefault(sid, set()).add(d)
                    s = self.segments[sid]
                    stale.extend(s.records[i].chunk_id for i in s.doc_rows.get(d, []))
        entries = list(base.segments) + ([entry] if entry is not None else [])
        deleted = {k: v for k, v in deleted.items() if v and k in {e.id for e in entries}}
        docs = sum(len([d for d in self._docs_of(e.id, seg) if d not in deleted.get(e.id, set())]) for e in entries)
        dead = sum(_rows_of(s, d) for sid, ds in deleted.items() for d in ds if (s := self._seg(sid, seg)))
        m = Manifest(
            self.collection,
            base.generation + 1,
            entries,
            {k: sorted(v) for k, v in deleted.items()},
            fence_token=max(base.fence_token, fence or 0),
            dimension=(seg.vectors.shape[1] if seg is not None and len(seg) else 0) or base.dimension,
            chunks=sum(e.chunks for e in entries) - dead,
            documents=docs,
            created_unix_ns=time.time_ns(),
        )
        return m, stale

    def _seg(self, sid: str, extra: Segment | None) -> Segment | None:
        return extra if extra is not None and extra.id == sid else self.segments.get(sid)

    def _docs_of(self, sid: str, extra: Segment | None) -> Mapping[str, DocumentInfo]:
        s = self._seg(sid, extra)
        return s.documents if s is not None else {}

    async def _check_fence(self, fence: Fence | int | None, reader: FenceReader | None) -> int | None:
        """The commit's fence token, once checked right before CURRENT is written: the lease
        holder's own check (`Fence.check`), then the token against the highest one any commit
        published (and the lease's, from `reader`). Raises FENCED_WRITE for a stale writer."""
        if fence is None:
            return None
        if isinstance(fence, int):
            token = fence
        else:
            await fence.check()
            token = int(fence.token)
        current = self.manifest.fence_token
        if reader is not None:
            current = max(current, await reader())
        if token < current:
            raise ServiceError(
                ErrorKind.FAILED_PRECONDITION,
                f"collection {self.collection!r}: this commit carries fence token {token}, but token {current} "
                "already holds the ingestion lease; a writer that lost its lease must stop, not publish",
                reason="FENCED_WRITE",
                metadata={"collection": self.collection, "fence": str(token), "current_fence": str(current)},
            )
        return token

    async def _publish(self, m: Manifest, etag: str) -> int:
        written = 0
        dels = store_fmt.encode_deletes(self.collection, m.deleted)
        if dels is not None:
            path, data = dels
            m.deletes_file = {
                "path": path,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size_bytes": len(data),
            }
            if self.manifest.deletes_file is None or self.manifest.deletes_file["path"] != path:
                written += await store_fmt.put_files(self.store, [(store_fmt.prefix(self.collection) + path, data)])
        written += await store_fmt.publish(self.store, m, etag)
        self._etag = ""  # unknown until read again; the next writer reads it first
        return written

    # Merges and garbage collection ----------------------------------------------------------------
    def schedule_merge(self) -> None:
        """Starts a background merge pass unless one runs (the writer calls this after a commit)."""
        if self.opts.merge.factor >= 2 and (self._merging is None or self._merging.done()):
            self._merging = asyncio.create_task(self._merge_pass())

    async def wait_merges(self) -> None:
        while self._merging is not None and not self._merging.done():
            await asyncio.shield(self._merging)

    async def stop(self) -> None:
        if self._merging is not None:
            self._merging.cancel()
            await asyncio.gather(self._merging, return_exceptions=True)

    async def _merge_pass(self) -> None:
        try:
            merged = False
            while await self.merge_once():
                merged = True
            # Files fall out of use when merges replace segments, and manifests with every commit:
            # collect after a merge, and every 64 generations otherwise (a listing of the prefix).
            if self.opts.persist and (merged or self.manifest.generation % 64 == 0):
                await store_fmt.collect_garbage(self.store, self.collection, self.manifest, self.opts.gc_grace_s)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - a failed merge leaves the index as it was
            log.warning("merge failed", extra={"collection": self.collection, "error": str(err)})

    def merge_candidates(self) -> list[str]:
        if self.milvus is not None:  # stateless mode merges nothing (Milvus compacts its own segments)
            return []  # but the pass still collects garbage
        sizes = [
            (e.id, int(live.sum()), len(seg))
            for e, seg, live in zip(self.manifest.segments, self.view.segments, self.view.live, strict=True)
        ]
        return self.opts.merge.pick(sizes)

    async def merge_once(self) -> bool:
        """Merges one group the policy picks (live_merge.py); False when there was nothing to merge."""
        return await live_merge.merge_once(self)


def _rows_of(s: Segment, document_id: str) -> int:
    """Chunks of a document in a segment (from its document list when the segment holds no rows)."""
    if s.records or document_id not in s.documents:
        return len(s.doc_rows.get(document_id, ()))
    return s.documents[document_id].chunks


async def write_collection(
    store: ObjectStore,
    collection: str,
    documents: Mapping[str, DocumentInfo],
    records: Sequence[ChunkRecord],
    vectors: np.ndarray,
    opts: IndexOptions | None = None,
) -> str:
    """Publishes `records` into `collection` as one commit (tools and benchmarks that fill a
    collection without the service); returns the new version."""
    live = LiveIndex(collection, store, Analyzer(), opts or IndexOptions(merge=MergePolicy(factor=0)))
    return (await live.commit(documents, records, vectors)).version
