"""OpenAI-compatible endpoints: `/v1/chat/completions` (streaming and not), `/v1/embeddings`,
`/v1/models`, so any OpenAI client can use the RAG stack.

Chat completions are grounded: the last user message is the question, answered by the
llm_gateway's `Answer` (retrieval + generation) like `/api/rag/stream`. The collection comes from
the extra field `collection`, or from the model name `ddnrag:<collection>`; `backend` (storage
backend) and `top_k` are extra fields too. Citations go in the extra field `citations` (on the
response, or on the last chunk of a stream), timings in `ddnrag`. The whole `messages` list is
used: the last user message is the question, and the user and assistant messages before it are
the history, from which the llm_gateway rewrites a follow-up into the standalone question it
searches (reported in `ddnrag.search_query`), and which an LLM backend sees as earlier turns.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from aiohttp import web

from ddnrag.llm.v1 import llm_service_pb2 as lpb

from ..errors import ApiError
from ..sse import Event, stream_events
from ..state import CONFIG, UPSTREAMS
from ..uploads import check_collection
from ..views import field_num, field_str, json_body
from .rag import Ask, answer_events

routes = web.RouteTableDef()

MODEL_PREFIX = "ddnrag"


def _text(content: Any) -> str | None:
    if isinstance(content, list):  # content parts: keep the text ones
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else None


def _conversation(messages: Any) -> tuple[str, tuple[lpb.ChatMessage, ...]]:
    """(the last user message, the user/assistant messages before it)."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content}")
    if len(messages) > 201:
        raise ApiError(400, f"messages has {len(messages)} entries; the limit is 201")
    for msg in messages:
        if not isinstance(msg, dict):
            raise ApiError(400, "each message must be an object with role and content")
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
    if last is None:
        raise ApiError(400, "messages has no user message to answer")
    content = _text(messages[last].get("content"))
    if content is None or not content.strip():
        raise ApiError(400, "the last user message has no text content")
    if len(content) > 4096:
        raise ApiError(400, "the question is longer than 4096 characters")
    history = []
    for i, msg in enumerate(messages[:last]):
        if msg.get("role") not in ("user", "assistant"):
            continue  # system and tool messages: the RAG prompt has its own instructions
        text = _text(msg.get("content"))
        if text is None:
            raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts")
        if len(text) > 16384:
            raise ApiError(400, f"messages[{i}] is longer than 16384 characters")
        history.append(lpb.ChatMessage(role=msg["role"], content=text))
    return content.strip(), tuple(history)


def _ask(request: web.Request, body: dict[str, Any]) -> tuple[Ask, str]:
    cfg = request.app[CONFIG]
    model = field_str(body, "model", MODEL_PREFIX, max_len=200) or MODEL_PREFIX
    collection = field_str(body, "collection", max_len=63)
    llm_model = ""
    if model == MODEL_PREFIX or model.startswith(MODEL_PREFIX + ":"):
        collection = collection or model.partition(":")[2]
    else:
        llm_model = model  # a generator model id from /v1/models
    top_k = int(field_num(body, "top_k", 5, 1, 20))
    limits = {"max_tokens": body.get("max_completion_tokens", body.get("max_tokens"))}
    question, history = _conversation(body.get("messages"))
    ask = Ask(
        question=question,
        history=history,
        collection=check_collection(collection or cfg.default_collection),
        backend=field_str(body, "backend", max_len=63),
        top_k=top_k,
        params=lpb.GenerationParams(
            model=llm_model,
            max_tokens=int(field_num(limits, "max_tokens", 0, 0, 8192)),
            temperature=float(field_num(body, "temperature", 0.0, 0.0, 2.0)),
        ),
    )
    return ask, model


def _usage(done: dict[str, Any]) -> dict[str, int]:
    u = done.get("usage") or {}
    p, c = int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _extras(done: dict[str, Any]) -> dict[str, Any]:
    return {
        "ttft_ms": done.get("ttft_ms"),
        "tokens_per_s": done.get("tokens_per_s"),
        "timings": done.get("timings"),
        "retrieval_timings": done.get("retrieval_timings"),
        "search_query": done.get("search_query"),
    }


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _refusal(refused: dict[str, Any]) -> str:
    return f"Refused by the {refused['guard']} guard ({refused['reason']}): {refused['message']}"


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """OpenAI-compatible chat completions, answered with retrieval (streamed when `stream` is true)."""
    body = await json_body(request)
    ask, model = _ask(request, body)
    cid = "chatcmpl-" + uuid.uuid4().hex[:24]
    created = int(time.time())
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await stream_events(
            request,
            _chunks(request, ask, cid, created, model, include_usage),
            terminal=frozenset({"end", "error"}),
            named=False,
            wrap_error=lambda p: {"error": {**p, "type": p.get("reason", "error").lower()}},
        )
    tokens: list[str] = []
    async for ev in answer_events(request, ask):
        if ev.name == "token":
            tokens.append(ev.data["text"])
        elif ev.name == "error":
            raise ApiError(ev.data["status"], ev.data["message"], ev.data["reason"])
        elif ev.name == "refused":  # a guard refused: OpenAI's refusal message, never an empty answer
            message = {"role": "assistant", "content": _refusal(ev.data), "refusal": ev.data["message"]}
            return web.json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "content_filter"}],
                    "ddnrag": {"refused": ev.data},
                }
            )
        elif ev.name == "done":
            done = ev.data
            return web.json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": done["text"] or "".join(tokens)},
                            "finish_reason": _finish(done["finish_reason"]),
                        }
                    ],
                    "usage": _usage(done),
                    "citations": done["citations"],
                    "ddnrag": _extras(done),
                }
            )
    raise ApiError(502, "the llm_gateway ended the answer without a result", "STREAM_ENDED")


async def _chunks(
    request: web.Request, ask: Ask, cid: str, created: int, model: str, include_usage: bool
) -> AsyncIterator[Event]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }

    async for ev in answer_events(request, ask):
        if ev.name == "start":
            yield Event("chunk", chunk({"role": "assistant", "content": ""}))
        elif ev.name == "token":
            yield Event("chunk", chunk({"content": ev.data["text"]}))
        elif ev.name == "error":
            yield Event("error", {"error": {**ev.data, "type": ev.data["reason"].lower()}})
            return
        elif ev.name == "refused":
            delta = {"role": "assistant", "content": _refusal(ev.data), "refusal": ev.data["message"]}
            yield Event("chunk", chunk(delta, "content_filter", ddnrag={"refused": ev.data}))
            yield Event("end", "[DONE]")
            return
        elif ev.name == "done":
            done = ev.data
            yield Event(
                "chunk",
                chunk({}, _finish(done["finish_reason"]), citations=done["citations"], ddnrag=_extras(done)),
            )
            if include_usage:
                last = chunk({}, None, usage=_usage(done))
                last["choices"] = []
                yield Event("chunk", last)
            yield Event("end", "[DONE]")
            return


@routes.post("/v1/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    """OpenAI-compatible embeddings from the embedder service."""
    body = await json_body(request)
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "input must be a string or a non-empty list of strings")
    if len(texts) > 2048:
        raise ApiError(400, "at most 2048 inputs per request")
    fmt = field_str(body, "encoding_format", "float") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, "encoding_format must be float or base64")
    embedder = request.app[UPSTREAMS].embedder
    info = await embedder.info()
    limit = max(1, info.max_batch_texts or 64)
    data: list[dict[str, Any]] = []
    tokens = 0  # as the embedder's tokenizer counted them, special tokens included
    for start in range(0, len(texts), limit):
        resp = await embedder.embed(texts[start : start + limit])
        for e in resp.embeddings:
            tokens += e.tokens
            value: Any = (
                base64.b64encode(np.asarray(e.values, dtype="<f4").tobytes()).decode()
                if fmt == "base64"
                else list(e.values)
            )
            data.append({"object": "embedding", "index": len(data), "embedding": value})
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": info.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    """`ddnrag` (default collection), `ddnrag:<collection>` for each collection, the generator
    models, and the embedding model."""
    up = request.app[UPSTREAMS]
    created = int(time.time())
    data = [{"id": MODEL_PREFIX, "object": "model", "created": created, "owned_by": "ddnrag"}]
    for c in await up.retriever.list_collections():
        data.append({"id": f"{MODEL_PREFIX}:{c.name}", "object": "model", "created": created, "owned_by": "ddnrag"})
    for m in (await up.llm.list_models()).models:
        data.append({"id": m.id, "object": "model", "created": created, "owned_by": m.backend or "ddnrag"})
    info = await up.embedder.info()
    data.append({"id": info.model_id, "object": "model", "created": created, "owned_by": "embedder"})
    return web.json_response({"object": "list", "data": data})
