"""The API's own description: `/api/openapi.json`, and `/api/docs`, a page that renders it offline
(gateway/static/apidocs.html and js/apidocs.js; no CDN, no Swagger bundle)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ..openapi import build

routes = web.RouteTableDef()
STATIC = Path(__file__).resolve().parents[1] / "static"


@routes.get("/api/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of every route of this gateway, built from the routes themselves."""
    return web.json_response(build(request.app))


@routes.get("/api/docs")
async def docs_page(request: web.Request) -> web.FileResponse:
    """A readable page of the API description, rendered in the browser from /api/openapi.json."""
    return web.FileResponse(STATIC / "apidocs.html", headers={"Cache-Control": "no-cache"})
