"""The retriever's core: collections, their live indexes, commits and hybrid search.

Plain Python over two ports (`ObjectStore`, `Encoder`); no gRPC here. Ingestion jobs live in
`jobs.py` and call `commit` to publish a new index version. Each collection's index is a
`LiveIndex` (live.py): immutable segments in object storage, listed by a manifest that CURRENT
names. A `Follower` (follower.py) keeps every replica on the latest manifest. Every blocking step
(index builds, BM25/dense queries, SQLite) runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kernel.errors import ErrorKind, ServiceError, invalid, not_found
from kernel.ids import valid_name
from kernel.timing import Stage, Timer

from . import search as searching
from . import segments
from .cache import RetrievalCache, cache_key
from .catalog import Catalog
from .fusion import Hit
from .index import ChunkRecord, CollectionIndex, DocumentInfo
from .lexical import Analyzer
from .live import Fence, FenceReader, IndexOptions, LiveIndex
from .merge import MergePolicy, merge_executor
from .metrics import RetrieverMetrics
from .milvus_hybrid import MilvusCollection
from .ports import Encoder, ObjectStore
from .rerank import RerankStage
from .rerank.stage import rerank_hits
from .search import SearchHit, SearchParams, SearchResult, chunk_key, sentence_vectors_key
from .segments import CorruptSegment
from .sentence_vectors import RecordCache

__all__ = ["CollectionState", "Retriever", "SearchHit", "SearchParams", "SearchResult", "Settings", "chunk_key"]

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "default"


@dataclass(frozen=True)
class Settings:
    """The core's tunables (the service fills them from `RetrieverConfig`)."""

    state_dir: Path = Path("./data/retriever")
    chunk_size_tokens: int = 256
    chunk_overlap_tokens: int = 32
    max_file_bytes: int = 64 * 1024 * 1024
    max_unpacked_bytes: int = 256 * 1024 * 1024
    embed_batch: int = 64
    embed_concurrency: int = 2
    embed_timeout_s: float = 120.0
    # Embed each chunk's sentences at ingestion and store them beside the chunk (kernel/sentences.py).
    sentence_vectors: bool = True
    write_batch: int = 256
    hnsw_threshold: int = 50_000
    fusion: str = "weighted"
    rrf_k: int = 60
    dense_weight: float = 0.6
    candidates: int = 300
    bm25_k1: float = 0.9
    bm25_b: float = 0.4
    max_top_k: int = 100
    cache_max_bytes: int = 64 * 1024 * 1024
    persist_index: bool = True
    # "faiss" (in process) or "milvus" (stateless: chunks, dense and BM25 search in Milvus, see
    # milvus_hybrid.py; milvus-lite when `milvus_uri` is a file path).
    index_backend: str = "faiss"
    milvus_uri: str = ""
    # Segments of one size tier merged together (0: never merge); the smallest tier's size.
    merge_factor: int = 8
    merge_floor_chunks: int = 1000
    # Seconds a file no longer named by the live manifest is kept (readers of older versions).
    gc_grace_s: float = 300.0
    # Seconds between reads of CURRENT by the follower; 0 turns following off.
    follow_interval_s: float = 0.5
    # Past this many seconds without reaching the store, searches are refused and health is NOT_SERVING.
    max_staleness_s: float = 30.0


def check_name(name: str) -> str:
    if not valid_name(name or ""):
        raise invalid(
            f"collection name {name!r} is not valid: use 1-63 characters a-z, 0-9, '_' or '-', starting with a"
            " letter or digit",
            reason="INVALID_COLLECTION_NAME",
        )
    return name


@dataclass
class CollectionState:
    name: str
    live: LiveIndex
    created_unix_ns: int = field(default_factory=time.time_ns)
    # Why the collection could not be loaded (corrupt segment); searches are refused until rebuilt.
    error: str = ""

    @property
    def snapshot(self) -> LiveIndex:
        """The live index (documents, version, updated_unix_ns): kept for older callers."""
        return self.live

    @property
    def index(self) -> CollectionIndex:
        return self.live.view


class Retriever:
    """Collections with their live indexes, and search over them."""

    def __init__(
        self,
        store: ObjectStore,
        encoder: Encoder,
        settings: Settings,
        catalog: Catalog,
        *,
        merge_store: Callable[[], ObjectStore] | None = None,
    ) -> None:
        """`merge_store` opens the same store in another process (adapters.StorageStoreFactory):
        with it, merges run in a low-priority merge process that reads and writes segments itself;
        without it, in a worker thread here."""
        self.store = store
        self.encoder = encoder
        self.settings = settings
        self.catalog = catalog  # the collection list, shared by every replica
        self.analyzer = Analyzer()
        self.collections: dict[str, CollectionState] = {}
        self.cache = RetrievalCache(settings.state_dir / "retrieval_cache.sqlite", settings.cache_max_bytes)
        # Set by the ingestion lease holder: the lease's current fence token, read from the store.
        self.fence_reader: FenceReader | None = None
        # The optional stage after fusion and fetch (rerank/); None: fusion order is final.
        self.rerank: RerankStage | None = None
        # Sentence-vector records read by searches (search.fetch), so a hot chunk's is read once.
        self.records = RecordCache()
        # Replaced by the server with one on its registry (metrics.py).
        self.metrics = RetrieverMetrics()
        merging = settings.merge_factor >= 2 and settings.persist_index
        self.opts = IndexOptions(
            hnsw_threshold=settings.hnsw_threshold,
            bm25_params=(settings.bm25_k1, settings.bm25_b),
            persist=settings.persist_index,
            merge=MergePolicy(settings.merge_factor, settings.merge_floor_chunks),
            gc_grace_s=settings.gc_grace_s,
            milvus=self._milvus_factory(),
            merge_executor=merge_executor() if merging and merge_store is not None else None,
            merge_store=merge_store,
        )
        self.defaults = searching.Defaults(
            settings.fusion, settings.rrf_k, settings.dense_weight, settings.candidates, settings.max_top_k
        )
        self._dim = 0
        self.last_follow_ok = time.monotonic()
        # Whether a Follower keeps this core on CURRENT (only then can it go stale).
        self.followed = False

    def _milvus_factory(self) -> Callable[[str], MilvusCollection] | None:
        if self.settings.index_backend != "milvus":
            return None
        uri = self.settings.milvus_uri or str(self.settings.state_dir / "milvus.db")
        return lambda collection: MilvusCollection(uri, collection)

    # Life cycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Loads and verifies every known collection's live index; creates `default`."""
        await self.catalog.add(DEFAULT_COLLECTION)
        if self.settings.persist_index:
            # Collections another replica (or an earlier state directory) published.
            for name in await self.published():
                await self.catalog.add(name)
        for name in await self.catalog.names():
            await self._load(name)
        if self.opts.merge_executor is not None:  # start the merge process now, not in the first merge
            self.opts.merge_executor.submit(os.getpid)
        self.last_follow_ok = time.monotonic()
        # Whether a Follower keeps this core on CURRENT (only then can it go stale).
        self.followed = False

    async def published(self) -> dict[str, str]:
        """{collection: etag of its CURRENT} for every collection with an index in the store."""
        out = {}
        for o in await self.store.list("index/"):
            parts = o.key.split("/")
            if len(parts) == 3 and parts[2] == "CURRENT" and valid_name(parts[1]):
                out[parts[1]] = o.etag or str(o.last_modified_unix_ns)
        return out

    async def close(self) -> None:
        for state in self.collections.values():
            await state.live.stop()
        if self.opts.merge_executor is not None:
            self.opts.merge_executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.cache.close)

    async def _load(self, name: str) -> CollectionState:
        state = CollectionState(name, LiveIndex(name, self.store, self.analyzer, self.opts))
        self.collections[name] = state
        if self.settings.persist_index:
            try:
                await state.live.sync(await segments.read_current(self.store, name))
                log.info("loaded collection", extra={"collection": name, "version": state.live.version})
            except CorruptSegment as err:
                state.error = str(err)
                self.metrics.refused(name)
                log.error("refused a corrupt index", extra={"collection": name, "reason": str(err)})
        return state

    async def follow(self, name: str, current: str) -> bool:
        """Moves collection `name` to the manifest CURRENT names (another replica published it).
        A manifest naming a missing or corrupt file is refused: the version in use stays."""
        state = self.collections.get(name) or await self._load(name)
        if not current:
            if state.live.version:
                await state.live.reset()
                await asyncio.to_thread(self.cache.invalidate, name, "\x00")
            return True
        changed = await state.live.sync(current)
        state.error = ""
        if changed:
            await asyncio.to_thread(self.cache.invalidate, name, state.live.version)
        return changed

    def forget(self, name: str) -> None:
        """Drops a collection another replica deleted (its files are already gone)."""
        state = self.collections.pop(name, None)
        if state is not None:
            state.live.view = CollectionIndex.empty(self.analyzer)

    # Collections -------------------------------------------------------------------------------
    def get_collection(self, name: str, *, create_default: bool = True) -> CollectionState:
        state = self.collections.get(name)
        if state is None:
            raise not_found(
                f"collection {name!r} does not exist; create it with CreateCollection or ingest into it",
                reason="COLLECTION_NOT_FOUND",
                collection=name,
            )
        return state

    async def create_collection(self, name: str) -> CollectionState:
        check_name(name)
        if name in self.collections:
            return self.collections[name]
        await self.catalog.add(name)
        await segments.note_change(self.store)
        return await self._load(name)

    async def ensure_collection(self, name: str) -> CollectionState:
        """The collection, created when missing (ingestion creates its target collection)."""
        check_name(name)
        return self.collections.get(name) or await self.create_collection(name)

    def list_collections(self) -> list[CollectionState]:
        return [self.collections[n] for n in sorted(self.collections)]

    def list_documents(self, collection: str, page_size: int, page_token: str) -> tuple[list[DocumentInfo], str, int]:
        state = self.get_collection(collection)
        docs = state.live.documents
        ids = sorted(docs)
        start = 0
        if page_token:
            start = next((i for i, d in enumerate(ids) if d > page_token), len(ids))
        page = ids[start : start + page_size]
        nxt = page[-1] if start + page_size < len(ids) and page else ""
        return [docs[d] for d in page], nxt, len(ids)

    async def delete_document(self, collection: str, document_id: str) -> str:
        state = self.get_collection(collection)
        if document_id not in state.live.documents:
            raise not_found(
                f"document {document_id!r} is not in collection {collection!r}",
                reason="DOCUMENT_NOT_FOUND",
                collection=collection,
                document_id=document_id,
            )
        return await self.commit(collection, {}, [], np.zeros((0, 0), np.float32), remove={document_id})

    # Commit ------------------------------------------------------------------------------------
    async def commit(
        self,
        collection: str,
        documents: Mapping[str, DocumentInfo],
        records: Sequence[ChunkRecord],
        vectors: np.ndarray,
        *,
        remove: set[str] | None = None,
        backends: Sequence[str] = ("",),
        fence: Fence | int | None = None,
    ) -> str:
        """Publishes a new version: `documents` replace their earlier chunks, `remove` documents go.

        Writes one new segment with `records`, a delete set, a manifest and CURRENT (last), swaps
        the new view in, then deletes chunk objects no live version uses and lets a background
        merge run. `fence` is the ingestion lease (or its token): checked right before CURRENT is
        written, and a stale one is refused with FAILED_PRECONDITION / FENCED_WRITE.
        Returns the new version."""
        state = await self.ensure_collection(collection)
        res = await state.live.commit(
            documents,
            records,
            vectors,
            remove=remove,
            fence=fence,
            fence_reader=self.fence_reader,
            rebuild=bool(state.error),
        )
        state.error = ""
        await asyncio.to_thread(self.cache.invalidate, collection, res.version)
        if res.stale_chunk_ids:
            stale = sorted(res.stale_chunk_ids)
            keys = [chunk_key(collection, c) for c in stale] + [sentence_vectors_key(collection, c) for c in stale]
            for backend in backends:
                try:
                    await self.store.delete(keys, backend=backend)
                except ServiceError as err:
                    log.warning("could not delete stale chunks", extra={"collection": collection, "error": str(err)})
        state.live.schedule_merge()
        log.info("committed", extra={"collection": collection, "version": res.version, "chunks": state.live.chunks})
        return res.version

    # Search ------------------------------------------------------------------------------------
    def validate(self, collection: str, query: str, p: SearchParams) -> SearchParams:
        return searching.validate(query, p, self.defaults)

    def fresh(self) -> bool:
        """Whether this replica reached the store recently enough to serve (see `max_staleness_s`)."""
        if not self.followed or not self.settings.persist_index or self.settings.follow_interval_s <= 0:
            return True
        return time.monotonic() - self.last_follow_ok <= self.settings.max_staleness_s

    async def search(self, collection: str, query: str, params: SearchParams) -> SearchResult:
        """Hybrid search. Stages: embed, bm25 (concurrent with embed), dense, fusion, fetch, [rerank];
        with `no_fetch`, the last two are skipped and the hits carry no text."""
        timer = Timer()
        p = self.validate(collection, query, params)
        state = self.get_collection(collection)
        if state.error:
            raise ServiceError(
                ErrorKind.FAILED_PRECONDITION, state.error, reason="INDEX_CORRUPT", metadata={"collection": collection}
            )
        if not self.fresh():
            raise ServiceError(
                ErrorKind.UNAVAILABLE,
                f"this retriever replica has not reached object storage for over {self.settings.max_staleness_s:g} s,"
                " so its index may be stale; it refuses to serve until it catches up (retry another replica)",
                reason="INDEX_STALE",
                metadata={"collection": collection},
            )
        index = state.index
        # With a reranker, fusion hands it the first `top_n` (at least top_k) to reorder.
        stage = None if p.no_rerank or p.no_fetch else self.rerank
        top_k = p.top_k
        if stage is not None:
            p = replace(p, top_k=max(top_k, stage.top_n))
        key = cache_key(
            collection,
            index.version,
            query,
            {
                "k": p.top_k,
                "m": p.mode,
                "f": p.fusion,
                "r": p.rrf_k,
                "w": p.dense_weight,
                "flt": dict(sorted(p.filters.items())),
                "c": self.settings.candidates,
                "fmt": 2,  # cached values carry the chunk's record (stateless mode has no rows)
            },
        )
        cached = None
        if not p.no_cache:  # the in-memory front on the loop, the file through a thread
            cached = self.cache.peek(key)
            if cached is None:
                cached = await asyncio.to_thread(self.cache.get, key)
        pairs: list[tuple[ChunkRecord, Hit]]
        if cached is not None:
            # [chunk id, score, bm25 rank, dense rank, document id, name, position, metadata]
            pairs = [(ChunkRecord(v[0], v[4], v[5], v[6], "", v[7]), Hit(0, v[1], v[2], v[3])) for v in cached]
        else:
            n_cand = max(self.settings.candidates, p.top_k)
            milvus = state.live.milvus
            if milvus is not None:
                pairs, t = await searching.rank_milvus(milvus, self.analyzer, self.encoder, query, p, n_cand, timer)
            else:
                rows, t = await searching.rank(index, self.encoder, query, p, n_cand, timer)
                pairs = [(index.record(h.row), h) for h in rows]
            for name in ("bm25", "dense", "fusion", "milvus"):
                if name in t:
                    cand = {"ddnrag.candidates": t.get(f"{name}_candidates", 0)}
                    timer.add(Stage(name, t[name], attrs=cand), end_ns=t.get(f"{name}_end"))
            if not p.no_cache:
                value = [
                    [
                        r.chunk_id,
                        h.score,
                        h.bm25_rank,
                        h.dense_rank,
                        r.document_id,
                        r.document_name,
                        r.position,
                        dict(r.metadata),
                    ]
                    for r, h in pairs
                ]
                await asyncio.to_thread(self.cache.put, key, collection, index.version, value)
        out = [searching.hit_of(collection, r, h.score, h.bm25_rank, h.dense_rank) for r, h in pairs]
        if out and not p.no_fetch:
            await searching.fetch(
                self.store, out, p.backend, timer, sentence_vectors=p.sentence_vectors, records=self.records
            )
        outcome = None
        if stage is not None and out:
            out, outcome = await rerank_hits(stage, query, out, top_k, timer)
        return SearchResult(out, index.version, cached is not None, timer, outcome)

    def dimension_hint(self) -> int:
        return self._dim

    def cache_stats(self) -> dict[str, int]:
        return self.cache.stats()

    async def purge_cache(self) -> int:
        return await asyncio.to_thread(self.cache.purge)

    def describe(self) -> dict[str, Any]:
        return {n: {"chunks": s.live.chunks, "version": s.live.version} for n, s in self.collections.items()}
