"""A reranking server for tests (a test double, not a model) that speaks the three protocols the
retriever supports, each exactly as its real server does:

- TEI `POST /rerank` {"query", "texts", "truncate", "raw_scores"} -> [{"index", "score"}] sorted
  by score; more texts than `max_client_batch` -> 413 {"error", "error_type": "Validation"}.
- NIM `POST /v1/ranking` {"model", "query": {"text"}, "passages": [{"text"}], "truncate"} ->
  {"rankings": [{"index", "logit"}]} sorted by logit.
- Cohere/Jina `POST /v1/rerank` {"model", "query", "documents", "top_n", "return_documents"} ->
  {"id", "results": [{"index", "relevance_score"}], "meta"} sorted by score.

The score is the number of query words in the text (deterministic, so tests know the order).
A request that does not follow the protocol gets 422 with the reason. Modes, settable between
requests: `delay_s` (slow), `status` (fails with that status), `malformed` (one of MALFORMED).
Every request body is recorded in `bodies`.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MALFORMED = ("not_json", "wrong_shape", "missing_index", "duplicate_index", "nan_score", "index_out_of_range")


def overlap(query: str, text: str) -> float:
    q = set(re.findall(r"[a-z0-9]+", query.lower()))
    return float(sum(1 for w in set(re.findall(r"[a-z0-9]+", text.lower())) if w in q))


@dataclass
class RerankTestServer:
    delay_s: float = 0.0
    status: int = 0
    malformed: str = ""
    max_client_batch: int = 32
    api_key: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> RerankTestServer:
        app = web.Application()
        app.router.add_post("/rerank", self._tei)
        app.router.add_post("/v1/ranking", self._nim)
        app.router.add_post("/v1/rerank", self._cohere)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _common(self, request: web.Request) -> dict[str, Any] | web.Response:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json()
        self.bodies.append(body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status:
            return web.json_response({"error": "model overloaded", "error_type": "Overloaded"}, status=self.status)
        return body

    def _reply(self, pairs: list[tuple[int, float]], wrap: Any) -> web.Response:
        pairs = sorted(pairs, key=lambda p: -p[1])
        m = self.malformed
        if m == "not_json":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        if m == "missing_index":
            pairs = pairs[:-1]
        elif m == "duplicate_index":
            pairs = [*pairs, pairs[0]]
        elif m == "index_out_of_range":
            pairs = [(len(pairs) + 5, 1.0), *pairs[1:]]
        body = wrap(pairs)
        if m == "wrong_shape":
            body = {"unexpected": body}
        text = json.dumps(body)
        if m == "nan_score":
            text = text.replace(str(pairs[0][1]), "NaN", 1)
        return web.Response(text=text, content_type="application/json")

    async def _tei(self, request: web.Request) -> web.Response:
        body = await self._common(request)
        if isinstance(body, web.Response):
            return body
        q, texts = body.get("query"), body.get("texts")
        if not isinstance(q, str) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return web.json_response({"error": "query must be a string and texts a list of strings"}, status=422)
        if len(texts) > self.max_client_batch:
            return web.json_response(
                {
                    "error": f"batch size {len(texts)} > maximum allowed batch size {self.max_client_batch}",
                    "error_type": "Validation",
                },
                status=413,
            )
        pairs = [(i, overlap(q, t)) for i, t in enumerate(texts)]
        return self._reply(pairs, lambda ps: [{"index": i, "score": s} for i, s in ps])

    async def _nim(self, request: web.Request) -> web.Response:
        body = await self._common(request)
        if isinstance(body, web.Response):
            return body
        q, ps = body.get("query"), body.get("passages")
        if not isinstance(q, dict) or not isinstance(q.get("text"), str) or not isinstance(ps, list):
            return web.json_response({"detail": "query must be {text} and passages a list of {text}"}, status=422)
        if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in ps):
            return web.json_response({"detail": "every passage must be {text}"}, status=422)
        pairs = [(i, overlap(q["text"], p["text"]) - 3.0) for i, p in enumerate(ps)]
        return self._reply(pairs, lambda xs: {"rankings": [{"index": i, "logit": s} for i, s in xs]})

    async def _cohere(self, request: web.Request) -> web.Response:
        body = await self._common(request)
        if isinstance(body, web.Response):
            return body
        q, docs = body.get("query"), body.get("documents")
        if not isinstance(q, str) or not isinstance(docs, list):
            return web.json_response({"message": "query must be a string and documents a list"}, status=422)
        top_n = body.get("top_n", len(docs))
        pairs = [(i, overlap(q, d if isinstance(d, str) else d.get("text", "")) / 10) for i, d in enumerate(docs)]
        pairs = sorted(pairs, key=lambda p: -p[1])[:top_n]
        return self._reply(
            pairs,
            lambda xs: {
                "id": "rr-1",
                "results": [{"index": i, "relevance_score": s} for i, s in xs],
                "meta": {"billed_units": {"search_units": 1}},
            },
        )
