"""Cross-encoders served over HTTP, in the three protocols people run.

- TEI (`text-embeddings-inference` with a reranker model): `POST /rerank`
  `{"query": q, "texts": [...], "truncate": true, "raw_scores": false}` ->
  `[{"index": i, "score": s}, ...]` sorted by score. TEI refuses more texts than its
  `--max-client-batch-size` (32 by default), so texts go in batches of `max_batch`.
- NVIDIA NIM (NeMo Retriever reranking): `POST /v1/ranking`
  `{"model": m, "query": {"text": q}, "passages": [{"text": t}, ...], "truncate": "END"}` ->
  `{"rankings": [{"index": i, "logit": s}, ...]}`.
- Cohere / Jina (and vLLM, Infinity, LocalAI, which copy them): `POST /v1/rerank`
  `{"model": m, "query": q, "documents": [...], "top_n": n, "return_documents": false}` ->
  `{"results": [{"index": i, "relevance_score": s}, ...]}`.

A reply must name every index it was sent exactly once, each with a finite number; anything else
is a malformed reply (`RerankError`), as is an HTTP error, a refused connection or a deadline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kernel.httpjson import HttpJsonError, JsonClient

from .base import RerankError

PROTOCOLS = ("tei", "nim", "cohere")


class HttpReranker:
    """One HTTP reranker. `base_url` is the server root for TEI and the part before `/v1` for
    NIM and Cohere/Jina (so `http://host:8000`, not `http://host:8000/v1`)."""

    def __init__(
        self,
        protocol: str,
        base_url: str,
        *,
        model: str = "",
        api_key: str = "",
        timeout_s: float = 5.0,
        max_batch: int = 32,
        name: str = "",
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"rerank protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.protocol = protocol
        self.model = model
        self.timeout_s = timeout_s
        self.max_batch = max(1, max_batch)
        self.name = name or f"{protocol}:{base_url}"
        self._client = JsonClient(base_url.removesuffix("/v1").rstrip("/"), api_key=api_key)

    async def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        if self.protocol != "tei":
            return await self._one(query, list(texts))
        out: list[float] = []
        for i in range(0, len(texts), self.max_batch):
            out.extend(await self._one(query, list(texts[i : i + self.max_batch])))
        return out

    async def _one(self, query: str, texts: list[str]) -> list[float]:
        path, body = self._request(query, texts)
        try:
            reply = await self._client.post(path, body, timeout_s=self.timeout_s)
        except HttpJsonError as err:
            raise RerankError(f"reranker {self.name}: {err}") from None
        try:
            return _scores(self._items(reply), len(texts))
        except (TypeError, ValueError, KeyError) as err:
            raise RerankError(f"reranker {self.name} sent a malformed {self.protocol} reply: {err}") from None

    def _request(self, query: str, texts: list[str]) -> tuple[str, dict[str, Any]]:
        if self.protocol == "tei":
            return "/rerank", {"query": query, "texts": texts, "truncate": True, "raw_scores": False}
        if self.protocol == "nim":
            body: dict[str, Any] = {
                "query": {"text": query},
                "passages": [{"text": t} for t in texts],
                "truncate": "END",
            }
            if self.model:
                body["model"] = self.model
            return "/v1/ranking", body
        body = {"query": query, "documents": texts, "top_n": len(texts), "return_documents": False}
        if self.model:
            body["model"] = self.model
        return "/v1/rerank", body

    def _items(self, reply: Any) -> list[tuple[Any, Any]]:
        if self.protocol == "tei":
            if not isinstance(reply, list):
                raise ValueError("expected a JSON list of {index, score}")
            return [(r["index"], r["score"]) for r in reply]
        key, field = ("rankings", "logit") if self.protocol == "nim" else ("results", "relevance_score")
        if not isinstance(reply, dict) or not isinstance(reply.get(key), list):
            raise ValueError(f"expected an object with a {key!r} list")
        return [(r["index"], r[field]) for r in reply[key]]

    async def close(self) -> None:
        await self._client.close()


def _scores(items: list[tuple[Any, Any]], n: int) -> list[float]:
    """Scores in input order from (index, score) pairs; every index 0..n-1 exactly once."""
    out: list[float | None] = [None] * n
    for index, score in items:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            raise ValueError(f"index {index!r} is not one of the {n} texts sent")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"score {score!r} for index {index} is not a finite number")
        if out[index] is not None:
            raise ValueError(f"index {index} appears twice")
        out[index] = float(score)
    missing = [i for i, s in enumerate(out) if s is None]
    if missing:
        raise ValueError(f"{len(missing)} of the {n} texts got no score (first: index {missing[0]})")
    return [s for s in out if s is not None]
