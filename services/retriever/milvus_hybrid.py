"""A collection's live chunks in Milvus: dense and lexical search there, none in the replica.

With `DDNRAG_RETRIEVER_INDEX_BACKEND=milvus` each retriever collection has one Milvus collection
holding exactly its live chunks (one row per chunk: id, document, position, metadata, the dense
vector, and a BM25 sparse vector that Milvus's BM25 function derives from an analysed text field).
One collection, not one per segment, because BM25 needs collection-wide statistics (document
frequencies, average length), which Milvus computes over the rows of one collection.

The analysed field holds this retriever's own tokens (`lexical.Analyzer`: stemmed, stop words
removed) joined by spaces, and queries are analysed the same way, so Milvus's `standard` tokenizer
(the one milvus-lite has) sees the same terms the in-process BM25 does; it scores them with its own
BM25 parameters (milvus-lite: k1=1.2, b=0.75 whatever the index says).

Search takes each retriever's candidates from Milvus with the scores fusion needs (a dense-only
candidate's BM25 score from a BM25 list read deeper than its candidates; a BM25-only candidate's
vector by id) and fuses them in `fusion.fuse`, as the in-process index does.

Blocking calls (pymilvus): callers run them in threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import segments as store_fmt
from .fusion import Hit, fuse
from .index import ChunkRecord
from .lexical import Analyzer
from .ports import ObjectStore
from .segments import Manifest

log = logging.getLogger(__name__)
FIELDS = ["chunk_id", "document_id", "document_name", "position", "meta"]
MAX_TERMS_BYTES = 60_000  # the analysed field's VARCHAR holds 65,535 bytes
BATCH = 1000
SCORE_DEPTH = 4
MAX_LIMIT = 16_384  # the most hits one Milvus search returns
_CLIENTS: dict[str, Any] = {}


def client_for(uri: str) -> Any:
    """One MilvusClient per URI (milvus-lite allows one client per file)."""
    from pymilvus import MilvusClient

    if uri not in _CLIENTS:
        _CLIENTS[uri] = MilvusClient(uri=uri)
    return _CLIENTS[uri]


def literal(values: Iterable[str]) -> str:
    """A Milvus expression list of string literals (JSON's escaping is the expression's)."""
    return json.dumps(list(values))


def terms(tokens: Sequence[str]) -> str:
    """The analysed text Milvus indexes: the tokens joined by spaces, cut at MAX_TERMS_BYTES."""
    text = " ".join(tokens)
    if len(text.encode()) > MAX_TERMS_BYTES:
        text = text.encode()[:MAX_TERMS_BYTES].decode(errors="ignore").rsplit(" ", 1)[0]
    return text


def filter_expr(filters: Mapping[str, str]) -> str:
    return " and ".join(f"meta[{json.dumps(k)}] == {json.dumps(v)}" for k, v in sorted(filters.items()))


class MilvusCollection:
    """The live chunks of one retriever collection, as one Milvus collection."""

    def __init__(self, uri: str, collection: str) -> None:
        self.client = client_for(uri)
        self.name = re.sub(r"[^A-Za-z0-9_]", "_", f"ddnrag_live_{collection}")

    def exists(self) -> bool:
        return bool(self.client.has_collection(self.name))

    def count(self) -> int:
        if not self.exists():
            return 0
        res = self.client.query(self.name, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def _create(self, dim: int) -> None:
        from pymilvus import DataType, Function, FunctionType

        s = self.client.create_schema(auto_id=False)
        s.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=256)
        s.add_field("document_id", DataType.VARCHAR, max_length=1024)
        s.add_field("document_name", DataType.VARCHAR, max_length=2048)
        s.add_field("position", DataType.INT64)
        s.add_field("meta", DataType.JSON)
        s.add_field(
            "terms", DataType.VARCHAR, max_length=65535, enable_analyzer=True, analyzer_params={"type": "standard"}
        )
        s.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        s.add_function(
            Function(
                name="bm25", function_type=FunctionType.BM25, input_field_names=["terms"], output_field_names=["sparse"]
            )
        )
        idx = self.client.prepare_index_params()
        idx.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        idx.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="IP")
        self.client.create_collection(self.name, schema=s, index_params=idx, consistency_level="Strong")

    def apply(
        self, records: Sequence[ChunkRecord], vectors: np.ndarray, tokens: Sequence[Sequence[str]], stale: Sequence[str]
    ) -> None:
        """Upserts `records` (by chunk id), then deletes the `stale` chunk ids. Idempotent: applying
        a commit twice changes nothing, so one re-applied after a failure duplicates nothing."""
        if len(records) and not self.exists():
            self._create(int(vectors.shape[1]))
        for i in range(0, len(records), BATCH):
            rows = [
                {
                    "chunk_id": r.chunk_id,
                    "document_id": r.document_id,
                    "document_name": r.document_name,
                    "position": int(r.position),
                    "meta": dict(r.metadata),
                    "terms": terms(t),
                    "vector": v.tolist(),
                }
                for r, t, v in zip(records[i : i + BATCH], tokens[i : i + BATCH], vectors[i : i + BATCH], strict=True)
            ]
            self.client.upsert(self.name, rows)
        for i in range(0, len(stale) if self.exists() else 0, BATCH):
            self.client.delete(self.name, filter=f"chunk_id in {literal(stale[i : i + BATCH])}")

    def stale_ids(self, documents: Iterable[str], keep: set[str]) -> list[str]:
        """Chunk ids of `documents` other than `keep` (what replacing those documents deletes)."""
        docs = sorted(set(documents))
        if not docs or not self.exists():
            return []
        out: list[str] = []
        for i in range(0, len(docs), 10):
            expr = f"document_id in {literal(docs[i : i + 10])}"
            rows = self.client.query(self.name, filter=expr, output_fields=["chunk_id"], limit=MAX_LIMIT)
            if len(rows) >= MAX_LIMIT:  # documents of 1,600+ chunks each: page through them
                rows = list(self._iterate(expr, ["chunk_id"]))
            out.extend(str(r["chunk_id"]) for r in rows if r["chunk_id"] not in keep)
        return sorted(out)

    def present(self, chunk_ids: Sequence[str]) -> set[str]:
        """Which of `chunk_ids` the collection holds."""
        out: set[str] = set()
        ids = list(chunk_ids)
        for i in range(0, len(ids) if self.exists() else 0, BATCH):
            rows = self.client.query(self.name, filter=f"chunk_id in {literal(ids[i : i + BATCH])}", output_fields=[])
            out.update(str(r["chunk_id"]) for r in rows)
        return out

    def _iterate(self, expr: str, fields: list[str]) -> Iterable[dict[str, Any]]:
        it = self.client.query_iterator(self.name, filter=expr, output_fields=fields, batch_size=BATCH)
        try:
            while batch := it.next():
                yield from batch
        finally:
            it.close()

    def drop(self) -> None:
        if self.exists():
            self.client.drop_collection(self.name)

    # Search --------------------------------------------------------------------------------------
    def _bm25(self, text: str, limit: int, expr: str) -> list[dict[str, Any]]:
        if not text or limit <= 0:
            return []
        res = self.client.search(
            self.name,
            data=[text],
            anns_field="sparse",
            limit=limit,
            search_params={"metric_type": "BM25"},
            filter=expr,
            output_fields=FIELDS,
        )
        return list(res[0]) if res else []

    def _dense(self, qvec: np.ndarray, limit: int, expr: str) -> list[dict[str, Any]]:
        res = self.client.search(
            self.name,
            data=[np.asarray(qvec, np.float32).tolist()],
            anns_field="vector",
            limit=limit,
            search_params={"metric_type": "IP"},
            filter=expr,
            output_fields=[*FIELDS, "vector"],
        )
        return list(res[0]) if res else []

    def _vectors(self, chunk_ids: Sequence[str]) -> dict[str, list[float]]:
        if not chunk_ids:
            return {}
        rows = self.client.query(self.name, filter=f"chunk_id in {literal(chunk_ids)}", output_fields=["vector"])
        return {str(r["chunk_id"]): r["vector"] for r in rows}

    def rank(
        self,
        query_tokens: Sequence[str],
        qvec: np.ndarray | None,
        *,
        n_cand: int,
        mode: str,
        fusion: str,
        rrf_k: int,
        dense_weight: float,
        top_k: int,
        filters: Mapping[str, str] | None = None,
    ) -> list[tuple[ChunkRecord, Hit]]:
        """The best `top_k` chunks (records without text) with their fused scores and ranks."""
        if not self.exists():
            return []
        expr = filter_expr(filters or {})
        text = terms(query_tokens)
        hybrid = mode == "hybrid" and qvec is not None and fusion != "rrf"
        # BM25 reads SCORE_DEPTH times deeper than its candidates, for the exact BM25 scores of the
        # dense candidates (a filtered BM25 search cannot give them: milvus-lite then computes the
        # statistics over the filtered rows only). Deeper than that a dense candidate scores 0.
        depth = n_cand * SCORE_DEPTH if hybrid else n_cand
        scored = self._bm25(text, min(depth, MAX_LIMIT), expr) if mode in ("hybrid", "bm25") else []
        bm_hits = scored[:n_cand]
        de_hits = self._dense(qvec, n_cand, expr) if mode in ("hybrid", "dense") and qvec is not None else []
        cands: dict[str, dict[str, Any]] = {}
        for h in [*de_hits, *bm_hits]:
            cands.setdefault(_cid(h), dict(h["entity"]))
        if not cands:
            return []
        ids = list(cands)
        row = {cid: i for i, cid in enumerate(ids)}
        bm_all = np.zeros(len(ids), np.float32)
        for h in scored:  # milvus-lite reports minus the BM25 score, a cluster the score
            if _cid(h) in row:
                bm_all[row[_cid(h)]] = abs(float(h["distance"]))
        if qvec is not None and mode != "bm25":  # dense scores of BM25-only candidates
            missing = [c for c in ids if "vector" not in cands[c]]
            for cid, vec in self._vectors(missing).items():
                cands[cid]["vector"] = vec
        dim = len(qvec) if qvec is not None else 0
        vecs = np.asarray([cands[c].get("vector") or [0.0] * dim for c in ids], np.float32).reshape(len(ids), dim)
        hits = fuse(
            np.asarray([row[_cid(h)] for h in bm_hits], np.int64),
            np.asarray([row[_cid(h)] for h in de_hits], np.int64),
            bm_all,
            lambda rows: vecs[rows],
            qvec,
            mode=mode,
            fusion=fusion,
            rrf_k=rrf_k,
            dense_weight=dense_weight,
            limit=top_k,
        )
        return [(record_of(cands[ids[h.row]]), h) for h in hits]


def _cid(hit: Mapping[str, Any]) -> str:
    return str(hit["entity"]["chunk_id"])


def record_of(e: Mapping[str, Any]) -> ChunkRecord:
    meta = e.get("meta") or {}
    return ChunkRecord(
        str(e["chunk_id"]),
        str(e["document_id"]),
        str(e["document_name"]),
        int(e["position"]),
        "",
        {str(k): str(v) for k, v in meta.items()},
    )


async def fill_from_index(
    milvus: MilvusCollection, store: ObjectStore, collection: str, m: Manifest, analyzer: Analyzer
) -> None:
    """Fills an empty Milvus collection from the index files `m` names (an index written without
    Milvus, or a new Milvus): one segment at a time, nothing kept."""
    if not m.chunks or await asyncio.to_thread(milvus.count):
        return
    log.info("filling Milvus from the index files", extra={"collection": collection, "chunks": m.chunks})
    for entry in m.segments:
        data = await store_fmt.read_segment(store, collection, entry, m.dimension, analyzer)
        gone = set(m.deleted.get(entry.id, ()))
        keep = [i for i, r in enumerate(data.records) if r.document_id not in gone]
        recs = [data.records[i] for i in keep]
        tokens = await asyncio.to_thread(analyzer.many, [r.text for r in recs])
        await asyncio.to_thread(milvus.apply, recs, data.vectors[keep], tokens, [])
