"""The dense index on Milvus, for corpora beyond one node's memory.

`MilvusDenseIndex` has `DenseIndex`'s interface (`size`, `kind`, `search`), so a `CollectionIndex`
runs on it unchanged (BM25 and fusion stay in process). Each segment is its own Milvus collection,
named after the retriever collection and the segment id, filled once (or found filled) and dropped
a grace period after the replica stopped serving it (`LiveIndex._retire`). A real Milvus deployment keeps its segments in the same S3/DDN store (its
`minio` settings); tests and laptops use milvus-lite, a local file. blocking calls: callers run
them in threads, as they do FAISS.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import numpy as np

_CLIENTS: dict[str, Any] = {}
_LOCK = threading.Lock()


def client_for(uri: str) -> Any:
    """One MilvusClient per URI (milvus-lite allows one client per file)."""
    from pymilvus import MilvusClient

    with _LOCK:
        if uri not in _CLIENTS:
            _CLIENTS[uri] = MilvusClient(uri=uri)
        return _CLIENTS[uri]


class MilvusDenseIndex:
    kind = "milvus"

    def __init__(self, uri: str, name: str, vectors: np.ndarray, batch: int = 2000) -> None:
        """Opens the Milvus collection of segment `name`, creating and filling it when missing or
        incomplete. Segment ids are content-addressed, so a collection of that name already holding
        every row (another replica sharing the Milvus cluster built it) is used as it is; rows are
        upserted by row id, so two replicas filling it at once give the same rows."""
        self.client = client_for(uri)
        self.name = re.sub(r"[^A-Za-z0-9_]", "_", f"ddnrag_{name}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # kept in Milvus, not here
        self._size = len(vectors)
        if self._size == 0:
            return
        if self.client.has_collection(self.name):
            if int(self.client.get_collection_stats(self.name).get("row_count", 0)) >= self._size:
                return
        else:
            self.client.create_collection(
                collection_name=self.name,
                dimension=vectors.shape[1],
                metric_type="IP",
                primary_field_name="id",
                vector_field_name="vector",
                id_type="int",
                auto_id=False,
                consistency_level="Strong",
            )
        for i in range(0, self._size, batch):
            rows = [{"id": i + j, "vector": v.tolist()} for j, v in enumerate(vectors[i : i + batch])]
            self.client.upsert(collection_name=self.name, data=rows)
        self.client.flush(collection_name=self.name)

    @property
    def size(self) -> int:
        return self._size

    def search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None = None, live: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if live is not None:  # deleted rows (until a merge drops them) are filtered out in Milvus
            allowed = np.flatnonzero(live) if allowed is None else allowed[live[allowed]]
        if self._size == 0 or k <= 0 or (allowed is not None and len(allowed) == 0):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        kwargs: dict[str, Any] = {}
        if allowed is not None:
            kwargs["filter"] = f"id in [{','.join(str(int(x)) for x in allowed)}]"
        res = self.client.search(
            collection_name=self.name,
            data=[np.asarray(q, np.float32).tolist()],
            limit=min(k, self._size),
            search_params={"metric_type": "IP"},
            output_fields=["id"],
            **kwargs,
        )
        hits = res[0] if res else []
        ids = np.asarray([int(h["id"]) for h in hits], dtype=np.int64)
        scores = np.asarray([float(h["distance"]) for h in hits], dtype=np.float32)
        return scores, ids

    def drop(self) -> None:
        if self._size and self.client.has_collection(self.name):
            self.client.drop_collection(self.name)
