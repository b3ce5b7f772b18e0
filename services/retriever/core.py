"""The retriever's core: collections, documents, index commits and hybrid search.

Plain Python over two ports (`ObjectStore`, `Encoder`); no gRPC here. Ingestion jobs live in
`jobs.py` and call `commit` to publish a new index version. Every blocking step (index builds,
FAISS/bm25s queries, SQLite) runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from services.common.errors import ErrorKind, ServiceError, invalid, not_found
from services.common.timing import Stage, Timer

from . import segments
from .cache import RetrievalCache, cache_key
from .catalog import Catalog
from .chunking import chunk_id
from .index import Analyzer, ChunkRecord, CollectionIndex
from .ports import Encoder, ObjectStore
from .segments import CorruptSegment, DocumentInfo, Snapshot

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "default"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MODES = ("hybrid", "dense", "bm25")
FUSIONS = ("rrf", "weighted")
MAX_QUERY_CHARS = 4096


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
    # "faiss" (in process) or "milvus" (pymilvus; milvus-lite when `milvus_uri` is a file path).
    index_backend: str = "faiss"
    milvus_uri: str = ""


def chunk_key(collection: str, chunk_id: str) -> str:
    return f"chunks/{collection}/{chunk_id}"


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise invalid(
            f"collection name {name!r} is not valid: use 1-63 characters a-z, 0-9, '_' or '-', starting with a"
            " letter or digit",
            reason="INVALID_COLLECTION_NAME",
        )
    return name


@dataclass
class CollectionState:
    name: str
    snapshot: Snapshot
    index: CollectionIndex
    created_unix_ns: int = field(default_factory=time.time_ns)
    # Why the collection could not be loaded (corrupt segment); searches are refused until rebuilt.
    error: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class SearchParams:
    top_k: int = 5
    mode: str = "hybrid"
    fusion: str = ""
    rrf_k: int = 0
    dense_weight: float | None = None
    filters: Mapping[str, str] = field(default_factory=dict)
    backend: str = ""
    no_cache: bool = False


@dataclass
class SearchHit:
    chunk_id: str
    document_id: str
    document_name: str
    collection: str
    object_key: str
    text: str
    score: float
    bm25_rank: int
    dense_rank: int
    position: int
    metadata: dict[str, str]
    error: ServiceError | None = None


@dataclass
class SearchResult:
    hits: list[SearchHit]
    index_version: str
    cache_hit: bool
    timer: Timer


class Retriever:
    """Collections with their live index snapshots, and search over them."""

    def __init__(self, store: ObjectStore, encoder: Encoder, settings: Settings, catalog: Catalog) -> None:
        self.store = store
        self.encoder = encoder
        self.settings = settings
        self.catalog = catalog  # the collection list, shared by every replica
        self.analyzer = Analyzer()
        self.collections: dict[str, CollectionState] = {}
        self.cache = RetrievalCache(settings.state_dir / "retrieval_cache.sqlite", settings.cache_max_bytes)
        self._dim = 0

    # Life cycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Loads and verifies every known collection's live index; creates `default`."""
        await self.catalog.add(DEFAULT_COLLECTION)
        if self.settings.persist_index:
            # Collections another replica (or an earlier state directory) published.
            for o in await self.store.list("index/"):
                parts = o.key.split("/")
                if len(parts) == 3 and parts[2] == "CURRENT" and NAME_RE.match(parts[1]):
                    await self.catalog.add(parts[1])
        for name in await self.catalog.names():
            await self._load(name)

    async def close(self) -> None:
        await asyncio.to_thread(self.cache.close)

    async def _load(self, name: str) -> CollectionState:
        state = CollectionState(
            name, Snapshot([], np.zeros((0, 0), np.float32), {}), CollectionIndex.empty(self.analyzer)
        )
        if self.settings.persist_index:
            try:
                version = await segments.read_current(self.store, name)
                if version:
                    snap = await segments.load_snapshot(self.store, name, version)
                    index = await asyncio.to_thread(self._build, snap, name)
                    index.version = snap.version
                    state = CollectionState(name, snap, index)
                    log.info(
                        "loaded collection", extra={"collection": name, "version": version, "chunks": len(snap.records)}
                    )
            except CorruptSegment as err:
                state.error = str(err)
                log.error("refused a corrupt index", extra={"collection": name, "reason": str(err)})
        self.collections[name] = state
        return state

    def _build(self, snap: Snapshot, collection: str = "") -> CollectionIndex:
        factory = None
        if self.settings.index_backend == "milvus":
            from .milvus_index import MilvusDenseIndex

            uri = self.settings.milvus_uri or str(self.settings.state_dir / "milvus.db")

            def factory(vectors: np.ndarray, version: str) -> MilvusDenseIndex:
                return MilvusDenseIndex(uri, f"{collection}_{version}", vectors)

        return CollectionIndex(
            snap.records,
            snap.vectors,
            analyzer=self.analyzer,
            hnsw_threshold=self.settings.hnsw_threshold,
            dense_factory=factory,
            bm25_params=(self.settings.bm25_k1, self.settings.bm25_b),
        )

    @staticmethod
    def _drop(index: CollectionIndex) -> None:
        drop = getattr(index.dense, "drop", None)
        if drop is not None:
            drop()

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
        return await self._load(name)

    async def ensure_collection(self, name: str) -> CollectionState:
        """The collection, created when missing (ingestion creates its target collection)."""
        check_name(name)
        return self.collections.get(name) or await self.create_collection(name)

    def list_collections(self) -> list[CollectionState]:
        return [self.collections[n] for n in sorted(self.collections)]

    async def delete_collection(self, name: str) -> None:
        state = self.get_collection(name)
        async with state.lock:
            await self.store.delete(prefix=f"chunks/{name}/")
            await self.store.delete(prefix=segments.prefix(name))
            await self.catalog.remove(name)
            await asyncio.to_thread(self.cache.invalidate, name, "\x00")
            self.collections.pop(name, None)
            await asyncio.to_thread(self._drop, state.index)
        if name == DEFAULT_COLLECTION:
            await self.create_collection(name)

    def list_documents(self, collection: str, page_size: int, page_token: str) -> tuple[list[DocumentInfo], str, int]:
        state = self.get_collection(collection)
        ids = sorted(state.snapshot.documents)
        start = 0
        if page_token:
            start = next((i for i, d in enumerate(ids) if d > page_token), len(ids))
        page = ids[start : start + page_size]
        nxt = page[-1] if start + page_size < len(ids) and page else ""
        return [state.snapshot.documents[d] for d in page], nxt, len(ids)

    async def delete_document(self, collection: str, document_id: str) -> str:
        state = self.get_collection(collection)
        if document_id not in state.snapshot.documents:
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
    ) -> str:
        """Publishes a new version: `documents` replace their earlier chunks, `remove` documents go.

        The new snapshot is built and (when persistence is on) written to object storage with
        CURRENT last, then swapped in; chunk objects no longer referenced are deleted afterwards.
        Returns the new version (the same one when nothing changed)."""
        state = await self.ensure_collection(collection)
        async with state.lock:
            old = state.snapshot if not state.error else Snapshot([], np.zeros((0, 0), np.float32), {})
            replaced = set(documents) | set(remove or ())
            keep = [i for i, r in enumerate(old.records) if r.document_id not in replaced]
            new_records = [old.records[i] for i in keep] + list(records)
            dim = vectors.shape[1] if len(records) else (old.vectors.shape[1] if len(old.records) else 0)
            parts = []
            if keep:
                parts.append(old.vectors[keep])
            if len(records):
                parts.append(np.asarray(vectors, np.float32))
            new_vectors = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
            docs = {k: v for k, v in old.documents.items() if k not in replaced}
            docs.update(documents)
            snap = Snapshot(new_records, new_vectors, docs, "", time.time_ns())
            index = await asyncio.to_thread(self._build, snap, collection)
            if self.settings.persist_index:
                snap.version = await segments.write_snapshot(self.store, collection, snap)
            else:
                snap.version = index.version
            index.version = snap.version
            if snap.version == old.version and not state.error:
                return snap.version
            stale_ids = {r.chunk_id for r in old.records} - {r.chunk_id for r in new_records}
            old_index = state.index
            state.snapshot, state.index, state.error = snap, index, ""
            if old_index.dense is not index.dense:
                await asyncio.to_thread(self._drop, old_index)
            await asyncio.to_thread(self.cache.invalidate, collection, snap.version)
        if stale_ids:
            keys = [chunk_key(collection, c) for c in sorted(stale_ids)]
            for backend in backends:
                try:
                    await self.store.delete(keys, backend=backend)
                except ServiceError as err:
                    log.warning("could not delete stale chunks", extra={"collection": collection, "error": str(err)})
        if self.settings.persist_index:
            try:
                for v in await segments.old_versions(self.store, collection, {snap.version}):
                    await self.store.delete(prefix=f"{segments.prefix(collection)}{v}/")
            except ServiceError as err:
                log.warning("could not delete old index versions", extra={"collection": collection, "error": str(err)})
        log.info("committed", extra={"collection": collection, "version": snap.version, "chunks": len(new_records)})
        return snap.version

    # Search ------------------------------------------------------------------------------------
    def validate(self, collection: str, query: str, p: SearchParams) -> SearchParams:
        if not query.strip():
            raise invalid("the query is empty; send 1 to 4096 characters", reason="EMPTY_QUERY")
        if len(query) > MAX_QUERY_CHARS:
            raise invalid(
                f"the query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}", reason="QUERY_TOO_LONG"
            )
        top_k = p.top_k or 5
        if top_k < 1 or top_k > self.settings.max_top_k:
            raise invalid(f"top_k must be 1..{self.settings.max_top_k}, got {p.top_k}", reason="TOP_K_OUT_OF_RANGE")
        mode = p.mode or "hybrid"
        if mode not in MODES:
            raise invalid(f"mode must be one of {MODES}, got {mode!r}")
        fusion = p.fusion or self.settings.fusion
        if fusion not in FUSIONS:
            raise invalid(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if p.rrf_k < 0:
            raise invalid(f"rrf_k must be >= 0, got {p.rrf_k}")
        dw = self.settings.dense_weight if p.dense_weight is None else p.dense_weight
        if not 0.0 <= dw <= 1.0:
            raise invalid(f"dense_weight must be in 0..1, got {dw}")
        return replace(p, top_k=top_k, mode=mode, fusion=fusion, rrf_k=p.rrf_k or self.settings.rrf_k, dense_weight=dw)

    async def search(self, collection: str, query: str, params: SearchParams) -> SearchResult:
        """Hybrid search. Stages: embed, bm25 (concurrent with embed), dense, fusion, fetch."""
        timer = Timer()
        p = self.validate(collection, query, params)
        state = self.get_collection(collection)
        if state.error:
            raise ServiceError(
                ErrorKind.FAILED_PRECONDITION, state.error, reason="INDEX_CORRUPT", metadata={"collection": collection}
            )
        index = state.index
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
            },
        )
        cached = None if p.no_cache else await asyncio.to_thread(self.cache.get, key)
        if cached is not None:
            rows = [(index.row_of[c], s, b, d) for c, s, b, d in cached if c in index.row_of]
        else:
            hits, t = await self._rank(index, query, p, timer)
            for name in ("bm25", "dense", "fusion"):
                if name in t:
                    timer.add(Stage(name, t[name]))
            rows = [(h.row, h.score, h.bm25_rank, h.dense_rank) for h in hits]
            if not p.no_cache:
                value = [[index.records[r].chunk_id, s, b, d] for r, s, b, d in rows]
                await asyncio.to_thread(self.cache.put, key, collection, index.version, value)
        out = [self._hit(collection, index.records[r], s, b, d) for r, s, b, d in rows]
        if out:
            await self._fetch(out, p.backend, timer)
        return SearchResult(out, index.version, cached is not None, timer)

    async def _rank(
        self, index: CollectionIndex, query: str, p: SearchParams, timer: Timer
    ) -> tuple[list[Any], dict[str, int]]:
        """Ranks the index for `query`. BM25 needs no vector, so in hybrid mode it runs (in a
        thread) while the query is being embedded; dense search and fusion follow."""
        t: dict[str, int] = {}
        n_cand = max(self.settings.candidates, p.top_k)
        if not len(index):
            return [], t

        def bm25() -> Any:
            return index.retrieve(query, None, n_cand=n_cand, mode="bm25", filters=p.filters, timings=t)

        def dense_and_fuse(qvec: np.ndarray | None, bm: Any) -> list[Any]:
            de = None
            if qvec is not None:
                de = index.retrieve(query, qvec, n_cand=n_cand, mode="dense", filters=p.filters, timings=t)
            if bm is None and de is None:
                return []
            empty = np.zeros(0, np.int64)
            cands = (bm[0] if bm else empty, de[1] if de else empty, bm[2] if bm else None)
            t1 = time.perf_counter_ns()
            out = index._fuse(*cands, qvec, p.mode, p.fusion, p.rrf_k, float(p.dense_weight or 0.0), limit=p.top_k)
            t["fusion"] = time.perf_counter_ns() - t1
            return out

        if p.mode == "bm25":
            return await asyncio.to_thread(dense_and_fuse, None, await asyncio.to_thread(bm25)), t
        embed_stage = Stage("embed", 0)
        t0 = time.perf_counter_ns()

        async def embed() -> np.ndarray:
            try:
                return (await self.encoder.encode([query]))[0]
            finally:
                embed_stage.duration_ns = time.perf_counter_ns() - t0

        task = asyncio.create_task(embed())
        try:
            bm = await asyncio.to_thread(bm25) if p.mode == "hybrid" else None
            qvec = await task
        finally:
            task.cancel()
        timer.add(embed_stage)
        return await asyncio.to_thread(dense_and_fuse, qvec, bm), t

    def _hit(self, collection: str, r: ChunkRecord, score: float, bm: int, de: int) -> SearchHit:
        return SearchHit(
            r.chunk_id,
            r.document_id,
            r.document_name,
            collection,
            chunk_key(collection, r.chunk_id),
            "",
            score,
            bm,
            de,
            r.position,
            dict(r.metadata),
        )

    async def _fetch(self, hits: list[SearchHit], backend: str, timer: Timer) -> None:
        """Reads the chunk texts from object storage through `backend`, in one BatchGet."""
        t0 = time.perf_counter_ns()
        got = await self.store.get_many([h.object_key for h in hits], backend=backend)
        dur = time.perf_counter_ns() - t0
        ttfbs = sorted(o.ttfb_ns for o in got if o.ok)
        nbytes = 0
        for h, o in zip(hits, got, strict=True):
            if o.ok:
                nbytes += len(o.data)
                text = o.data.decode("utf-8", errors="replace")
                # Chunk ids are content-addressed: a body that does not hash to its id is corrupt
                # (or was replaced), and is reported, never served as text.
                if chunk_id(h.collection, h.document_id, h.position, text) != h.chunk_id:
                    h.error = ServiceError(
                        ErrorKind.DATA_LOSS,
                        f"chunk object {h.object_key} fails its content check (corrupt); "
                        + segments.rebuild_hint(h.collection),
                        reason="CHUNK_CORRUPT",
                    )
                    log.error("corrupt chunk object", extra={"key": h.object_key})
                else:
                    h.text = text
            else:
                kind = ErrorKind.NOT_FOUND if o.missing else ErrorKind.UNAVAILABLE
                h.error = ServiceError(
                    kind,
                    f"chunk object {h.object_key} could not be read: {o.error}",
                    reason="CHUNK_MISSING" if o.missing else "CHUNK_UNREADABLE",
                )
        timer.add(
            Stage(
                "fetch",
                dur,
                backend=backend or "default",
                ttfb_ns=ttfbs[len(ttfbs) // 2] if ttfbs else 0,
                bytes=nbytes,
                count=len(hits),
            )
        )

    def dimension_hint(self) -> int:
        return self._dim

    def cache_stats(self) -> dict[str, int]:
        return self.cache.stats()

    async def purge_cache(self) -> int:
        return await asyncio.to_thread(self.cache.purge)

    def describe(self) -> dict[str, Any]:
        return {n: {"chunks": len(s.index), "version": s.snapshot.version} for n, s in self.collections.items()}
