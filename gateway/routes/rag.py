"""Questions: `GET /api/rag/stream` (SSE), `POST /api/rag/query` (JSON), and compare mode.

One `LlmService.Answer` call per question (per backend in compare mode): the llm_gateway does the
retrieval and generation; this module only turns its events into SSE/JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ddnrag.llm.v1 import llm_service_pb2 as lpb

from ..admission import answer_slot, hint_key
from ..convert import ns_to_ms, to_dict
from ..errors import ApiError, dumps, error_payload, json_error_payload
from ..sse import Event, stream_events
from ..state import ADMISSION, CONFIG, UPSTREAMS
from ..uploads import check_collection
from ..views import (
    citation_json,
    field_num,
    field_str,
    json_body,
    query_bool,
    query_float,
    query_int,
    question_text,
    status_json,
    timings_json,
)

routes = web.RouteTableDef()


@dataclass
class Ask:
    """One question, as parsed from the query string or a JSON body."""

    question: str
    collection: str
    backend: str
    top_k: int
    params: lpb.GenerationParams
    # The conversation this question continues (stored there), or prior turns given by the caller.
    conversation_id: str = ""
    history: tuple[lpb.ChatMessage, ...] = ()


def chunk_json(c: Any) -> dict[str, Any]:
    out = {
        "chunk_id": c.chunk_id,
        "document_id": c.document_id,
        "document_name": c.document_name,
        "collection": c.collection,
        "object_key": c.object_key,
        "text": c.text,
        "score": c.score,
        "bm25_rank": c.bm25_rank,
        "dense_rank": c.dense_rank,
        "position": c.position,
        "ok": c.status.code == 0,
    }
    if c.HasField("rerank_score"):  # only with a reranker configured (retriever rerank/)
        out["rerank_score"] = c.rerank_score
    return out


def retrieval_json(r: lpb.Retrieval | None) -> dict[str, Any] | None:
    if r is None:
        return None
    out = {
        "index_version": r.index_version,
        "cache_hit": r.cache_hit,
        "search_query": r.search_query,
        "rewrite": r.rewrite,
        "history_turns": r.history_turns,
        "history_turns_trimmed": r.history_turns_trimmed,
        "conversation_id": r.conversation_id,
        "timings": timings_json(r.timings),
        "chunks": [chunk_json(c) for c in r.chunks],
    }
    if r.HasField("rerank"):
        out["rerank"] = to_dict(r.rerank)
    return out


def done_json(d: lpb.Done, retrieval: lpb.Retrieval | None) -> dict[str, Any]:
    out = {
        "text": d.text,
        "finish_reason": d.finish_reason,
        "ttft_ms": ns_to_ms(d.rag_ttft_ns or d.ttft_ns),
        "llm_ttft_ms": ns_to_ms(d.ttft_ns),
        "generation_ms": ns_to_ms(d.generation_ns),
        "tokens_per_s": round(d.tokens_per_s, 2),
        "inter_token_p50_ms": ns_to_ms(d.inter_token_p50_ns),
        "inter_token_p99_ms": ns_to_ms(d.inter_token_p99_ns),
        "usage": to_dict(d.usage),
        "citations": [citation_json(c) for c in d.citations],
        "timings": timings_json(d.timings),
        "retrieval_timings": timings_json(retrieval.timings) if retrieval is not None else None,
        "search_query": retrieval.search_query if retrieval is not None else "",
        "conversation_id": d.conversation_id,
        "turn_index": d.turn_index,
    }
    if d.HasField("guards"):  # every guard verdict and the fail mode (llm_gateway checks.py)
        out["guards"] = to_dict(d.guards)
    return out


def ask_hint(ask: Ask) -> str:
    """The admission's cache-hit hint key of `ask` (gateway/admission.py); empty for a question
    that is never a cache hit (a conversation's, or one that skips the cache)."""
    p = ask.params
    if ask.conversation_id or ask.history or p.no_cache:
        return ""
    return hint_key(
        ask.question, ask.collection, ask.backend, ask.top_k, p.backend, p.model, p.max_tokens, p.temperature
    )


async def answer_events(request: web.Request, ask: Ask) -> AsyncIterator[Event]:
    """The Answer stream as `start`, `retrieval` (what was searched and found), `token`…, then
    `done` or `error`."""
    cfg = request.app[CONFIG]
    retrieval: lpb.Retrieval | None = None
    first = True
    async with answer_slot(request.app[ADMISSION], ask_hint(ask)) as slot:
        async for ev in request.app[UPSTREAMS].llm.answer(
            ask.question,
            collection=ask.collection,
            storage_backend=ask.backend,
            top_k=ask.top_k,
            params=ask.params,
            timeout=cfg.answer_timeout_s,
            conversation_id=ask.conversation_id,
            history=ask.history,
        ):
            kind = ev.WhichOneof("event")
            if kind == "token":  # the most frequent event first
                if first:
                    first = False
                    slot.first_token()
                tok = ev.token
                yield Event("token", {"text": tok.text, "index": tok.index})
            elif kind == "retrieval":
                retrieval = ev.retrieval
            elif kind == "start":
                slot.started(ev.start.cache_hit)
                found = retrieval_json(retrieval)
                found_raw = dumps(found)  # the chunks' texts, encoded once for both events
                head = {
                    "backend": ev.start.backend,
                    "model": ev.start.model,
                    "cache_hit": ev.start.cache_hit,
                    "storage_backend": ask.backend,
                    "collection": ask.collection,
                    "queue_ms": round(slot.queue_ms),
                }
                yield Event("start", {**head, "retrieval": found}, raw=f'{dumps(head)[:-1]},"retrieval":{found_raw}}}')
                # What was searched (the standalone question of a follow-up) and found. It comes
                # after `start` (whose `retrieval` field holds the same), so `start` stays first.
                yield Event("retrieval", found, raw=found_raw)
            elif kind == "verify":  # groundedness: per-sentence scores, answer score, repair
                yield Event("verify", to_dict(ev.verify))
            elif kind == "refused":  # a guard refused the question or the answer: the last event
                yield Event("refused", to_dict(ev.refused))
                return
            elif kind == "done":
                yield Event("done", done_json(ev.done, retrieval))
                return
            elif kind == "error":
                yield Event("error", status_json(ev.error))
                return


def parse_ask(request: web.Request, source: dict[str, Any]) -> Ask:
    cfg = request.app[CONFIG]
    collection = str(source.get("collection") or cfg.default_collection)
    return Ask(
        conversation_id=conversation_param(source.get("conversation_id") or source.get("conversation")),
        history=history_param(source.get("history")),
        question=question_text(source.get("q") or source.get("question")),
        collection=check_collection(collection),
        backend=str(source.get("backend") or ""),
        top_k=int(source.get("top_k") or 5),
        params=lpb.GenerationParams(
            backend=str(source.get("llm_backend") or ""),
            model=str(source.get("model") or ""),
            max_tokens=int(source.get("max_tokens") or 0),
            temperature=float(source.get("temperature") or 0.0),
            no_cache=bool(source.get("no_cache")),
        ),
    )


def _ask_from_query(request: web.Request) -> Ask:
    q = request.query
    return parse_ask(
        request,
        {
            "q": q.get("q", ""),
            "collection": q.get("collection", ""),
            "backend": q.get("backend", ""),
            "top_k": query_int(request, "top_k", 5, 1, 20),
            "llm_backend": q.get("llm_backend", ""),
            "model": q.get("model", ""),
            "max_tokens": query_int(request, "max_tokens", 0, 0, 8192),
            "temperature": query_float(request, "temperature", 0.0, 0.0, 2.0),
            "no_cache": query_bool(request, "no_cache"),
            "conversation": q.get("conversation", ""),
        },
    )


def conversation_param(raw: Any) -> str:
    if raw in (None, ""):
        return ""
    if not isinstance(raw, str) or len(raw) > 64:
        raise ApiError(400, "conversation must be a conversation id (32 hexadecimal characters)")
    return raw.strip()


def history_param(raw: Any) -> tuple[lpb.ChatMessage, ...]:
    """`history`: [{"role": "user"|"assistant", "content": "..."}, ...], oldest first."""
    if raw in (None, []):
        return ()
    if not isinstance(raw, list) or len(raw) > 200:
        raise ApiError(400, "history must be a list of at most 200 {role, content} messages, oldest first")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system"):
            raise ApiError(400, f"history[{i}] must be an object with role user or assistant, and content")
        content = m.get("content")
        if not isinstance(content, str):
            raise ApiError(400, f"history[{i}].content must be a string")
        out.append(lpb.ChatMessage(role=m["role"], content=content))
    return tuple(out)


def _compare_backends(raw: str) -> list[str]:
    names = [b.strip() for b in raw.split(",") if b.strip()]
    if len(names) != 2 or names[0] == names[1]:
        raise ApiError(400, "compare takes two different backend names: compare=ddn,s3")
    return names


@routes.get("/api/rag/stream")
async def rag_stream(request: web.Request) -> web.StreamResponse:
    """SSE: `start` (retrieval timings, chunks), `token`…, `done` (TTFT, tokens/s, citations) or `error`.

    With `compare=a,b` both backends answer at once; every event carries `lane` (the backend), each
    lane ends with `lane_done` or `lane_error`, and the stream ends with `done` holding both."""
    ask = _ask_from_query(request)
    compare = request.query.get("compare", "")
    if compare:
        return await stream_events(request, _compare_events(request, ask, _compare_backends(compare)))
    return await stream_events(request, answer_events(request, ask), status_from_first_error=True)


async def _compare_events(request: web.Request, ask: Ask, backends: list[str]) -> AsyncIterator[Event]:
    queue: asyncio.Queue[tuple[str, Event | None]] = asyncio.Queue()

    async def lane(name: str) -> None:
        lane_ask = Ask(ask.question, ask.collection, name, ask.top_k, ask.params)  # compare: no conversation
        try:
            async for ev in answer_events(request, lane_ask):
                await queue.put((name, ev))
        except Exception as err:  # noqa: BLE001 - the lane's failure is an event; the other lane goes on
            await queue.put((name, Event("error", error_payload(err))))
        finally:
            await queue.put((name, None))

    tasks = [asyncio.create_task(lane(b)) for b in backends]
    results: dict[str, Any] = {}
    try:
        open_lanes = len(tasks)
        yield Event("compare", {"backends": backends, "question": ask.question})
        while open_lanes:
            name, ev = await queue.get()
            if ev is None:
                open_lanes -= 1
                continue
            data = {"lane": name, **ev.data}
            if ev.name == "done":
                results[name] = data
                yield Event("lane_done", data)
            elif ev.name == "error":
                results[name] = {"lane": name, "error": ev.data}
                yield Event("lane_error", data)
            else:
                yield Event(ev.name, data)
        yield Event("done", {"lanes": results, "backends": backends})
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t


@routes.post("/api/rag/query")
async def rag_query(request: web.Request) -> web.Response:
    """JSON in: {"question", "collection", "backend", "top_k", "conversation_id", "history", ...};
    JSON out: the whole answer, with what was searched in `retrieval`."""
    body = await json_body(request)
    field_str(body, "question")
    field_num(body, "top_k", 5, 1, 20)
    field_num(body, "max_tokens", 0, 0, 8192)
    field_num(body, "temperature", 0.0, 0.0, 2.0)
    ask = parse_ask(request, body)
    start: dict[str, Any] | None = None
    retrieval: dict[str, Any] | None = None
    tokens: list[str] = []
    async for ev in answer_events(request, ask):
        if ev.name == "retrieval":
            retrieval = ev.data
        elif ev.name == "start":
            start = ev.data
        elif ev.name == "token":
            tokens.append(ev.data["text"])
        elif ev.name == "done":
            return web.json_response(
                {"answer": ev.data["text"] or "".join(tokens), "start": start, "retrieval": retrieval, **ev.data}
            )
        elif ev.name == "error":
            return json_error_payload(ev.data)
    raise ApiError(502, "the llm_gateway ended the answer without a result", "STREAM_ENDED")
