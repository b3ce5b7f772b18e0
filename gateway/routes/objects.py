"""The bucket browser: list objects by prefix (size, time, paginated), download one, and clear a
prefix, all through the storage service (the gateway holds no store credentials).

Browsing shows every object, other services' internal state included (job records, leases, the
sealed backend registry), so these routes need the admin role (gateway/roles.py). Listing and
downloading change nothing. Clearing refuses the prefixes a collection or a service owns
(`MANAGED`): deleting part of them would leave an index naming chunks that are gone; a collection
is cleared as a whole with DELETE /api/collections/{name}.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web

from ddnrag.storage.v1 import storage_service_pb2 as spb

from ..errors import ApiError
from ..state import UPSTREAMS
from ..views import query_int

routes = web.RouteTableDef()

# Prefixes the platform manages: cleared only through their owner (a collection clear), never raw.
MANAGED = (
    "index/",
    "chunks/",
    "sentences/",
    "docs/",
    "collections/",
    "jobs/",
    "jobindex/",
    "leases/",
    "prefixwatches/",
    "_ddnrag/",
)
# Objects counted before a clear is confirmed; past this the count says "at least".
COUNT_LIMIT = 100_000

PARAMS = {
    ("GET", "/api/objects"): {
        "prefix": "only keys starting with this prefix (default: every key)",
        "backend": "the storage backend by name (default: the default backend)",
        "page_size": "objects per page, 1-1000 (default 100)",
        "page_token": "next_page_token of the previous page",
    },
    ("GET", "/api/objects/summary"): {
        "prefix": "the prefix to count (required)",
        "backend": "the storage backend by name (default: the default backend)",
    },
    ("GET", "/api/objects/download"): {
        "key": "the object's key (required)",
        "backend": "the storage backend by name (default: the default backend)",
    },
    ("DELETE", "/api/objects"): {
        "prefix": "the prefix to clear (required; not one a collection or service manages)",
        "backend": "the storage backend by name (default: the default backend)",
    },
}


def check_key_text(text: str, what: str) -> str:
    """The gateway's own check, so a person gets a plain message before any call is made."""
    if len(text.encode("utf-8", "surrogatepass")) > 1024:
        raise ApiError(400, f"the {what} is longer than 1024 bytes", "INVALID_KEY")
    if text.startswith("/"):
        raise ApiError(400, f"the {what} {text[:80]!r} is absolute; drop the leading '/'", "INVALID_KEY")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text) or "\\" in text:
        raise ApiError(400, f"the {what} contains control characters or a backslash", "INVALID_KEY")
    if any(seg in (".", "..") for seg in text.split("/")):
        raise ApiError(400, f"the {what} {text[:80]!r} contains a '.' or '..' segment", "INVALID_KEY")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"the {what} is not valid UTF-8", "INVALID_KEY") from None
    return text


def object_json(o: spb.ObjectInfo) -> dict[str, Any]:
    return {
        "key": o.key,
        "size_bytes": o.size_bytes,
        "last_modified_unix_ns": o.last_modified_unix_ns,
        "etag": o.etag,
        "content_type": o.content_type,
    }


def _backend(request: web.Request) -> str:
    name = request.query.get("backend", "")
    if len(name) > 63:
        raise ApiError(400, "backend is the name of a configured backend (at most 63 characters)")
    return name


@routes.get("/api/objects")
async def list_objects(request: web.Request) -> web.Response:
    """Lists the bucket's objects under a prefix: key, size, last modification time; one page at a time.

    `folders` are the next key segments below the prefix seen on this page, for browsing."""
    prefix = check_key_text(request.query.get("prefix", ""), "prefix")
    backend = _backend(request)
    resp = await request.app[UPSTREAMS].storage.list(
        prefix,
        backend=backend,
        page_size=query_int(request, "page_size", 100, 1, 1000),
        page_token=request.query.get("page_token", ""),
    )
    folders = sorted(
        {prefix + o.key[len(prefix) :].split("/", 1)[0] + "/" for o in resp.objects if "/" in o.key[len(prefix) :]}
    )
    return web.json_response(
        {
            "prefix": prefix,
            "backend": backend,
            "objects": [object_json(o) for o in resp.objects],
            "folders": folders,
            "next_page_token": resp.next_page_token,
        }
    )


@routes.get("/api/objects/summary")
async def summarize_prefix(request: web.Request) -> web.Response:
    """Counts the objects and bytes under a prefix: what a clear of that prefix would delete.

    `complete` is false when there are more than 100000 objects (the count stops there);
    `managed` names the owner when the prefix cannot be cleared raw."""
    prefix = _required_prefix(request)
    storage = request.app[UPSTREAMS].storage
    count = size = 0
    token = ""
    while True:
        page = await storage.list(prefix, backend=_backend(request), page_size=1000, page_token=token)
        count += len(page.objects)
        size += sum(o.size_bytes for o in page.objects)
        token = page.next_page_token
        if not token or count >= COUNT_LIMIT:
            break
    return web.json_response(
        {"prefix": prefix, "objects": count, "size_bytes": size, "complete": not token, "managed": _managed(prefix)}
    )


@routes.get("/api/objects/download")
async def download(request: web.Request) -> web.StreamResponse:
    """Downloads one object as an attachment (never rendered by the browser), streamed."""
    key = check_key_text(request.query.get("key", ""), "key")
    if not key or key.endswith("/"):
        raise ApiError(400, "key must name one object, e.g. docs/default/<id>/notes.md", "INVALID_KEY")
    stream = request.app[UPSTREAMS].storage.get_stream(key, backend=_backend(request))
    try:
        return await _send(request, key, stream)
    finally:
        await stream.aclose()  # cancels the Get call when the client went away


async def _send(request: web.Request, key: str, stream: AsyncGenerator[spb.GetResponse, None]) -> web.StreamResponse:
    first = await anext(stream)  # a missing object fails here, before the status is chosen
    name = key.rsplit("/", 1)[-1]
    ascii_name = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in name)[:100] or "object"
    resp = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name)}",
            "Cache-Control": "no-store",
        }
    )
    which = first.WhichOneof("part")
    if which == "whole":
        resp.content_length = len(first.whole.data)
        await resp.prepare(request)
        await resp.write(first.whole.data)
        return resp
    if which == "info":
        resp.content_length = first.info.size_bytes
    await resp.prepare(request)
    if which == "data":
        await resp.write(first.data)
    async for msg in stream:
        if msg.WhichOneof("part") == "data":
            await resp.write(msg.data)
    await resp.write_eof()
    return resp


@routes.delete("/api/objects")
async def clear_prefix(request: web.Request) -> web.Response:
    """Deletes every object under a prefix (admin). Refuses an empty prefix and the prefixes a
    collection or service manages; clear a collection with DELETE /api/collections/{name}."""
    prefix = _required_prefix(request)
    owner = _managed(prefix)
    if owner:
        raise ApiError(
            409, f"{prefix!r} holds {owner}; it is not cleared object by object. {_HOW[owner]}", "MANAGED_PREFIX"
        )
    resp = await request.app[UPSTREAMS].storage.delete(prefix=prefix, backend=_backend(request))
    return web.json_response({"prefix": prefix, "deleted": resp.deleted})


_HOW = {
    "a collection's data": "Clear the collection instead (DELETE /api/collections/{name}, `rag collections delete NAME`).",
    "the platform's own state": "It belongs to the services (jobs, leases, watches, the backend registry).",
}


def _managed(prefix: str) -> str:
    """Who owns `prefix` when it lies in (or contains) a managed area, else ""."""
    for m in MANAGED:
        if prefix.startswith(m) or m.startswith(prefix):
            return (
                "a collection's data"
                if m in ("index/", "chunks/", "sentences/", "docs/", "collections/")
                else "the platform's own state"
            )
    return ""


def _required_prefix(request: web.Request) -> str:
    prefix = check_key_text(request.query.get("prefix", ""), "prefix")
    if not prefix:
        raise ApiError(
            400,
            "give a prefix, e.g. prefix=auto_ingest/ (the whole bucket is never cleared at once)",
            "PREFIX_REQUIRED",
        )
    return prefix
