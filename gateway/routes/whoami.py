"""`GET /api/whoami`: what the caller's key may do, so `rag whoami` and the demo's badge can say it."""

from __future__ import annotations

from aiohttp import web

from ..access import KEY_ID, ROLE
from ..roles import Role, abilities
from ..state import API_KEYS

routes = web.RouteTableDef()


@routes.get("/api/whoami")
async def whoami(request: web.Request) -> web.Response:
    """{"auth": "keys"|"open", "role", "key_id" (the first 12 hex digits of the key's SHA-256),
    "can": {"ask", "read", "upload", "ingest", "delete_documents", "admin"}}."""
    role = request.get(ROLE, Role.ADMIN)
    return web.json_response(
        {
            "auth": "keys" if request.app[API_KEYS] else "open",
            "role": role.label,
            "key_id": request.get(KEY_ID, ""),
            "can": abilities(role),
        }
    )
