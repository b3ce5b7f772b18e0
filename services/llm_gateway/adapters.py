"""Adapters from the core's protocols (`Searcher`, `Encoder`) to the real peers.

`RetrieverSearcher` calls the retriever service, `EmbedderEncoder` the embedder service, both
through their typed clients; a peer's failure keeps its code and reason
(`ServiceCallError.to_service_error`, the one mapping). The in-process encoder, used when the
embedder address is "local", is `embedding.local.LocalEncoder`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from clients.base import ServiceCallError
from kernel.errors import unavailable
from kernel.pb import sentence_vectors_from_pb, stage_from_pb

from .domain import ChunkStatus, Passage, RerankInfo, RetrievedChunk, SearchResult

if TYPE_CHECKING:
    from clients.embedder import EmbedderClient
    from clients.retriever import RetrieverClient
    from clients.storage import StorageClient


class RetrieverSearcher:
    """`Searcher` over `clients.retriever.RetrieverClient`. With `sentence_vectors` the hits
    carry their chunks' stored sentence vectors (for the extractive generator)."""

    def __init__(self, client: RetrieverClient, *, sentence_vectors: bool = False) -> None:
        self.client = client
        self.sentence_vectors = sentence_vectors

    async def search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int,
        backend: str,
        filters: Mapping[str, str],
        timeout: float | None,
    ) -> SearchResult:
        try:
            resp = await self.client.search(
                collection,
                query,
                top_k=top_k,
                backend=backend,
                filters=dict(filters) or None,
                sentence_vectors=self.sentence_vectors,
                timeout=timeout,
            )
        except ServiceCallError as err:
            raise err.to_service_error() from None
        return search_result_from_pb(resp)

    async def index_versions(self) -> dict[str, str]:
        """Each collection's live index version (ListCollections: the retriever's memory, no I/O)."""
        try:
            collections = await self.client.list_collections(timeout=2.0)
        except ServiceCallError as err:
            raise err.to_service_error() from None
        return {c.name: c.version for c in collections}

    async def close(self) -> None:
        await self.client.close()


def search_result_from_pb(resp: Any) -> SearchResult:
    """`ddnrag.retriever.v1.SearchResponse` -> SearchResult."""
    chunks = []
    for c in resp.chunks:
        passage = Passage(
            text=c.text,
            chunk_id=c.chunk_id,
            document_id=c.document_id,
            document_name=c.document_name,
            collection=c.collection,
            object_key=c.object_key,
            score=c.score,
            sentence_vectors=sentence_vectors_from_pb(c.sentence_vectors) if c.HasField("sentence_vectors") else None,
        )
        status = ChunkStatus(c.status.code, c.status.message) if c.HasField("status") else ChunkStatus()
        chunks.append(
            RetrievedChunk(
                passage=passage,
                bm25_rank=c.bm25_rank,
                dense_rank=c.dense_rank,
                position=c.position,
                metadata=dict(c.metadata),
                status=status,
                rerank_score=c.rerank_score if c.HasField("rerank_score") else None,
            )
        )
    return SearchResult(
        chunks=tuple(chunks),
        index_version=resp.index_version,
        cache_hit=resp.cache_hit,
        stages=tuple(stage_from_pb(s) for s in resp.timings.stages),
        total_ns=resp.timings.total_ns,
        rerank=RerankInfo(resp.rerank.backend, resp.rerank.status, resp.rerank.message, resp.rerank.scored)
        if resp.HasField("rerank")
        else None,
    )


class EmbedderEncoder:
    """`Encoder` over `clients.embedder.EmbedderClient` (the embedder normalises the rows).

    Recent vectors are kept by text (`memo` texts, least recently used out, each for `memo_ttl_s`):
    the generator embeds the question and the groundedness check the answer's sentences, and the
    same question (the retriever embedded it a moment before) and the same sentences come back;
    each kept vector saves a call and a look-up in the embedder's cache. The TTL bounds how long a
    vector of a replaced embedder model can be used (its response does not name the model)."""

    def __init__(
        self, client: EmbedderClient, timeout_s: float = 30.0, memo: int = 4096, memo_ttl_s: float = 60.0
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.memo = memo
        self.memo_ttl_s = memo_ttl_s
        self._kept: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()
        self.kept_hits = 0

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        now = time.monotonic()
        rows: list[np.ndarray | None] = []
        for t in texts:
            got = self._kept.get(t)
            if got is not None and now - got[1] <= self.memo_ttl_s:
                self._kept.move_to_end(t)
                rows.append(got[0])
            else:
                rows.append(None)
        todo = list(dict.fromkeys(t for t, r in zip(texts, rows, strict=True) if r is None))
        if todo:
            try:
                arr = await self.client.embed_array(todo, truncate=True, timeout=self.timeout_s)
            except ServiceCallError as err:
                raise err.to_service_error() from None
            fresh = dict(zip(todo, np.asarray(arr, dtype=np.float32), strict=True))
            for t, v in fresh.items():
                self._kept[t] = (v, now)
                self._kept.move_to_end(t)
            while len(self._kept) > self.memo:
                self._kept.popitem(last=False)
            rows = [fresh[t] if r is None else r for t, r in zip(texts, rows, strict=True)]
        self.kept_hits += len(texts) - len(todo)
        if not rows:
            return await self.client.embed_array([], truncate=True, timeout=self.timeout_s)
        return np.stack(rows).astype(np.float32, copy=False)

    async def close(self) -> None:
        await self.client.close()


class StorageObjects:
    """The conversations' `ObjectStore` over `clients.storage.StorageClient` (the default backend)."""

    def __init__(self, client: StorageClient) -> None:
        self.client = client

    async def get(self, key: str) -> bytes:
        from .conversations import ObjectNotFoundError

        try:
            data, _info, _transfer = await self.client.get(key)
        except ServiceCallError as err:
            if err.code == grpc.StatusCode.NOT_FOUND:
                raise ObjectNotFoundError(key) from None
            raise err.to_service_error() from None
        return data

    async def put(self, key: str, data: bytes) -> None:
        try:
            await self.client.put(key, data, content_type="application/json")
        except ServiceCallError as err:
            raise err.to_service_error() from None

    async def list_keys(self, prefix: str) -> list[tuple[str, int]]:
        try:
            return [(o.key, o.last_modified_unix_ns) async for o in self.client.list_all(prefix)]
        except ServiceCallError as err:
            raise err.to_service_error() from None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for i in range(0, len(keys), 1000):
            try:
                resp = await self.client.batch_get(list(keys[i : i + 1000]))
            except ServiceCallError as err:
                raise err.to_service_error() from None
            for r in resp.results:
                if r.status.code == 0:
                    out.append(r.data)
                elif r.status.code == grpc.StatusCode.NOT_FOUND.value[0]:
                    out.append(None)
                else:
                    raise unavailable(f"storage could not read {r.key}: {r.status.message}", reason="PEER_UNAVAILABLE")
        return out

    async def delete(self, key: str) -> None:
        try:
            await self.client.delete([key])
        except ServiceCallError as err:
            raise err.to_service_error() from None

    async def close(self) -> None:
        await self.client.close()
