"""Conversations: `/api/conversations`, one llm_gateway call per request (the llm_gateway owns
them and keeps them in object storage).

Reads:  GET /api/conversations, GET /api/conversations/{id} (with turns; `?download=1` adds a
        Content-Disposition so the browser saves it as JSON).
Writes: POST /api/conversations, PATCH /api/conversations/{id} (rename),
        DELETE /api/conversations/{id}.
A question continues a conversation with `conversation=ID` on /api/rag/stream (or
`conversation_id` in the JSON of /api/rag/query).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ddnrag.llm.v1 import llm_service_pb2 as lpb

from ..convert import to_dict
from ..errors import ApiError
from ..state import UPSTREAMS
from ..views import field_str, json_body, query_bool, query_int

routes = web.RouteTableDef()


def conversation_json(c: lpb.Conversation, *, turns: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": c.id,
        "title": c.title,
        "collection": c.collection,
        "created_unix_ns": c.created_unix_ns,
        "updated_unix_ns": c.updated_unix_ns,
        "turn_count": c.turn_count,
    }
    if turns:
        out["turns"] = [to_dict(t) for t in c.turns]
    return out


def _id(request: web.Request) -> str:
    cid = request.match_info["conversation_id"]
    if len(cid) > 64:
        raise ApiError(400, "that is not a conversation id (32 hexadecimal characters)")
    return cid


@routes.get("/api/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    """Most recently updated first, without turns; `page_size` 1..200 (default 50); `page_token`
    is the `next_page_token` of the previous page (absent on the last page)."""
    size = query_int(request, "page_size", 50, 1, 200)
    token = request.query.get("page_token", "")
    if len(token) > 1024:
        raise ApiError(400, "page_token is not a token from a previous listing; omit it for the first page")
    resp = await request.app[UPSTREAMS].llm.list_conversations(size, token)
    out: dict[str, Any] = {"conversations": [conversation_json(c, turns=False) for c in resp.conversations]}
    if resp.next_page_token:
        out["next_page_token"] = resp.next_page_token
    return web.json_response(out)


@routes.post("/api/conversations")
async def create_conversation(request: web.Request) -> web.Response:
    """JSON in: {"title"?, "collection"?}; 201 with the new conversation."""
    body = await json_body(request)
    title = field_str(body, "title", max_len=200)
    collection = field_str(body, "collection", max_len=63)
    resp = await request.app[UPSTREAMS].llm.create_conversation(title, collection)
    return web.json_response(conversation_json(resp.conversation, turns=True), status=201)


@routes.get("/api/conversations/{conversation_id}")
async def get_conversation(request: web.Request) -> web.Response:
    """The conversation with every turn; 404 when the id is unknown."""
    resp = await request.app[UPSTREAMS].llm.get_conversation(_id(request))
    data = conversation_json(resp.conversation, turns=True)
    headers = {}
    if query_bool(request, "download"):
        headers["Content-Disposition"] = f'attachment; filename="conversation-{resp.conversation.id}.json"'
    return web.json_response(data, headers=headers)


@routes.patch("/api/conversations/{conversation_id}")
async def rename_conversation(request: web.Request) -> web.Response:
    """JSON in: {"title"} (1..200 characters)."""
    body = await json_body(request)
    title = field_str(body, "title", max_len=200)
    if not title.strip():
        raise ApiError(400, "title is empty; send 1 to 200 characters", "EMPTY_TITLE")
    resp = await request.app[UPSTREAMS].llm.update_conversation(_id(request), title)
    return web.json_response(conversation_json(resp.conversation, turns=False))


@routes.delete("/api/conversations/{conversation_id}")
async def delete_conversation(request: web.Request) -> web.Response:
    """Deletes a conversation (writer)."""
    cid = _id(request)
    await request.app[UPSTREAMS].llm.delete_conversation(cid)
    return web.json_response({"deleted": cid})
