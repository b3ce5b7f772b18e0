"""One collection: what it holds (for the confirmation a clear asks for) and clearing it.

A clear goes to the retriever's DeleteCollection, which cancels the collection's jobs, unpublishes
its index first (so every replica stops serving it) and then deletes its index files, chunks, raw
documents and job records. Clearing needs the writer role, like deleting a document.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..convert import to_dict
from ..errors import ApiError
from ..state import UPSTREAMS
from ..uploads import check_collection

routes = web.RouteTableDef()


async def collection_info(request: web.Request, name: str) -> dict[str, Any]:
    for c in await request.app[UPSTREAMS].retriever.list_collections():
        if c.name == name:
            return to_dict(c)
    raise ApiError(
        404,
        f"collection {name!r} does not exist; GET /api/collections lists the collections",
        "COLLECTION_NOT_FOUND",
    )


@routes.get("/api/collections/{name}")
async def get_collection(request: web.Request) -> web.Response:
    """One collection: documents, chunks, live index version, last change (what a clear removes)."""
    name = check_collection(request.match_info["name"])
    return web.json_response({"collection": await collection_info(request, name)})


@routes.delete("/api/collections/{name}")
async def clear_collection(request: web.Request) -> web.Response:
    """Clears a collection: its documents, chunks, index and job records go (writer).

    Returns the counts of what went. `default` stays listed, empty. An unknown name is a 404."""
    name = check_collection(request.match_info["name"])
    resp = await request.app[UPSTREAMS].retriever.delete_collection(name)
    return web.json_response(
        {
            "cleared": name,
            "documents": resp.documents,
            "chunks": resp.chunks,
            "objects_deleted": resp.objects_deleted,
            "jobs_cancelled": resp.jobs_cancelled,
            "jobs_removed": resp.jobs_removed,
        }
    )
