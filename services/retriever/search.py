"""Search over one collection's view: validation, ranking (BM25 concurrent with the query's
embedding, then dense search and fusion) and the BatchGet of the hits' chunk texts.

`Retriever.search` (core.py) drives these steps and the retrieval cache; a reranking stage, when
one is configured, runs on the fetched hits (`Retriever.rerank`, rerank/).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from kernel import sentences
from kernel.errors import ErrorKind, ServiceError, invalid
from kernel.sentences import SentenceVectors
from kernel.timing import Stage, Timer

from .chunking import chunk_id
from .fusion import Hit, fuse
from .index import ChunkRecord, CollectionIndex
from .lexical import Analyzer
from .milvus_hybrid import MilvusCollection
from .ports import Encoder, ObjectStore
from .rerank import RerankOutcome
from .segments import rebuild_hint
from .sentence_vectors import RecordCache

log = logging.getLogger(__name__)

MODES = ("hybrid", "dense", "bm25")
FUSIONS = ("rrf", "weighted")
MAX_QUERY_CHARS = 4096


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
    # Skip the rerank stage for this search (A/B, benchmarks).
    no_rerank: bool = False
    # Rank only: no fetch of the hits' texts (left ""), hence no rerank either. An A/B run reads
    # the chunks itself, so that its first read of each chunk is cold on every backend.
    no_fetch: bool = False
    # Also read each hit's stored sentence vectors (kernel/sentences.py), in the same BatchGet.
    sentence_vectors: bool = False


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
    rerank_score: float | None = None
    # The chunk's stored sentence vectors, when asked for and present.
    sentence_vectors: SentenceVectors | None = None


@dataclass
class SearchResult:
    hits: list[SearchHit]
    index_version: str
    cache_hit: bool
    timer: Timer
    rerank: RerankOutcome | None = None


@dataclass(frozen=True)
class Defaults:
    """The search defaults and bounds (from the retriever's settings)."""

    fusion: str = "weighted"
    rrf_k: int = 60
    dense_weight: float = 0.6
    candidates: int = 300
    max_top_k: int = 100


def chunk_key(collection: str, chunk_id: str) -> str:
    return f"chunks/{collection}/{chunk_id}"


def sentence_vectors_key(collection: str, chunk_id: str) -> str:
    """Where a chunk's sentence vectors are stored: beside the chunk object, under a prefix of
    their own (so every reader and counter of `chunks/` sees chunk texts only); a collection's
    clear removes them with the chunks."""
    return f"sentences/{collection}/{chunk_id}"


def validate(query: str, p: SearchParams, d: Defaults) -> SearchParams:
    """`p` with its defaults filled in; raises INVALID_ARGUMENT for anything out of range."""
    if not query.strip():
        raise invalid("the query is empty; send 1 to 4096 characters", reason="EMPTY_QUERY")
    if len(query) > MAX_QUERY_CHARS:
        raise invalid(f"the query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}", reason="QUERY_TOO_LONG")
    top_k = p.top_k or 5
    if top_k < 1 or top_k > d.max_top_k:
        raise invalid(f"top_k must be 1..{d.max_top_k}, got {p.top_k}", reason="TOP_K_OUT_OF_RANGE")
    mode = p.mode or "hybrid"
    if mode not in MODES:
        raise invalid(f"mode must be one of {MODES}, got {mode!r}")
    fusion = p.fusion or d.fusion
    if fusion not in FUSIONS:
        raise invalid(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if p.rrf_k < 0:
        raise invalid(f"rrf_k must be >= 0, got {p.rrf_k}")
    dw = d.dense_weight if p.dense_weight is None else p.dense_weight
    if not 0.0 <= dw <= 1.0:
        raise invalid(f"dense_weight must be in 0..1, got {dw}")
    return replace(p, top_k=top_k, mode=mode, fusion=fusion, rrf_k=p.rrf_k or d.rrf_k, dense_weight=dw)


async def rank(
    index: CollectionIndex, encoder: Encoder, query: str, p: SearchParams, n_cand: int, timer: Timer
) -> tuple[list[Hit], dict[str, int]]:
    """Ranks the view for `query`. BM25 needs no vector, so in hybrid mode it runs (in a thread)
    while the query is being embedded; dense search and fusion follow, in a thread too."""
    t: dict[str, int] = {}
    if not len(index):
        return [], t

    # Besides each stage's duration, `t` gets its end (`<stage>_end`, perf_counter ns) and the
    # candidates it found (`<stage>_candidates`), for the stage's trace span (kernel/timing.py).
    def bm25() -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        out = index.retrieve(query, None, n_cand=n_cand, mode="bm25", filters=p.filters, timings=t)
        t["bm25_end"], t["bm25_candidates"] = time.perf_counter_ns(), len(out[0]) if out else 0
        return out

    def dense_and_fuse(
        qvec: np.ndarray | None, bm: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None
    ) -> list[Hit]:
        de = None
        if qvec is not None:
            de = index.retrieve(query, qvec, n_cand=n_cand, mode="dense", filters=p.filters, timings=t)
            t["dense_end"], t["dense_candidates"] = time.perf_counter_ns(), len(de[1]) if de else 0
        if bm is None and de is None:
            return []
        empty = np.zeros(0, np.int64)
        t1 = time.perf_counter_ns()
        out = fuse(
            bm[0] if bm else empty,
            de[1] if de else empty,
            bm[2] if bm else None,
            index.vectors_at,
            qvec,
            mode=p.mode,
            fusion=p.fusion,
            rrf_k=p.rrf_k,
            dense_weight=float(p.dense_weight or 0.0),
            limit=p.top_k,
        )
        t["fusion_end"] = time.perf_counter_ns()
        t["fusion"], t["fusion_candidates"] = t["fusion_end"] - t1, len(out)
        return out

    if p.mode == "bm25":
        return await asyncio.to_thread(dense_and_fuse, None, await asyncio.to_thread(bm25)), t
    embed_stage = Stage("embed", 0)
    t0 = time.perf_counter_ns()

    async def embed() -> np.ndarray:
        try:
            return (await encoder.encode([query]))[0]
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


async def rank_milvus(
    milvus: MilvusCollection,
    analyzer: Analyzer,
    encoder: Encoder,
    query: str,
    p: SearchParams,
    n_cand: int,
    timer: Timer,
) -> tuple[list[tuple[ChunkRecord, Hit]], dict[str, int]]:
    """Ranks in Milvus (stateless mode): the query is embedded (unless BM25 only), then dense and
    BM25 search run there and their candidates are fused here (stage `milvus`)."""
    qvec = None
    if p.mode != "bm25":
        t0 = time.perf_counter_ns()
        qvec = (await encoder.encode([query]))[0]
        timer.add(Stage("embed", time.perf_counter_ns() - t0))
    t0 = time.perf_counter_ns()
    out = await asyncio.to_thread(
        milvus.rank,
        analyzer.tokens(query),
        qvec,
        n_cand=n_cand,
        mode=p.mode,
        fusion=p.fusion,
        rrf_k=p.rrf_k,
        dense_weight=float(p.dense_weight or 0.0),
        top_k=p.top_k,
        filters=p.filters,
    )
    t = {"milvus": time.perf_counter_ns() - t0, "milvus_end": time.perf_counter_ns(), "milvus_candidates": len(out)}
    return out, t


def hit_of(collection: str, r: ChunkRecord, score: float, bm: int, de: int) -> SearchHit:
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


async def fetch(
    store: ObjectStore,
    hits: list[SearchHit],
    backend: str,
    timer: Timer,
    *,
    sentence_vectors: bool = False,
    records: RecordCache | None = None,
) -> None:
    """Reads the chunk texts from object storage through `backend`, in one BatchGet; with
    `sentence_vectors`, each chunk's stored sentence vectors too (from `records` when read
    before), in the same BatchGet (a chunk without them is served all the same). The stage's
    TTFB is the texts' median."""
    t0 = time.perf_counter_ns()
    keys = [h.object_key for h in hits]
    need: list[SearchHit] = []
    if sentence_vectors:
        for h in hits:
            if (sv := records.get(h.chunk_id) if records is not None else None) is not None:
                h.sentence_vectors = sv
            else:
                need.append(h)
        keys += [sentence_vectors_key(h.collection, h.chunk_id) for h in need]
    got = await store.get_many(keys, backend=backend)
    dur = time.perf_counter_ns() - t0
    sv_bytes = 0
    for h, o in zip(need, got[len(hits) :], strict=True):
        if o.ok and (sv := sentences.decode(o.data)) is not None:
            h.sentence_vectors = sv
            sv_bytes += len(o.data)
            if records is not None:
                records.put(h.chunk_id, sv)
    got = got[: len(hits)]
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
                    f"chunk object {h.object_key} fails its content check (corrupt); " + rebuild_hint(h.collection),
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
            attrs={"ddnrag.object_keys": [h.object_key for h in hits], "ddnrag.sentence_vector_bytes": sv_bytes},
        )
    )
