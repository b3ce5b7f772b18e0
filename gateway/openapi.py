"""The OpenAPI 3.1 description of the HTTP API, built from the real aiohttp routes.

Each route documents itself where it is written, so adding a route documents it:
- the handler's docstring: its first line is the summary, the rest the description (say the JSON
  body's fields there);
- query parameters: an optional module-level `PARAMS` dict in the route module,
  `{("GET", "/api/objects"): {"prefix": "what it does", ...}}`;
- the role a key needs comes from gateway/roles.py, path parameters from the pattern.

`problems(app)` lists what is missing or stale, in words that say exactly what to add;
tests/unit/test_openapi.py fails on any.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from aiohttp import web

from .roles import OPEN_ROUTES, required_role

# Routes that are not API operations (the page and its files).
SKIP = frozenset({("GET", "/"), ("GET", "/static/")})
_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def operations(app: web.Application) -> list[tuple[str, str, Any]]:
    """(method, pattern, handler) of every API route, in registration order."""
    out = []
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS") or route.resource is None:
            continue
        pattern = route.resource.canonical
        pattern = "/static/" if pattern.startswith("/static") else pattern
        if (route.method, pattern) in SKIP:
            continue
        out.append((route.method, pattern, route.handler))
    return out


def _module(handler: Any) -> Any:
    return importlib.import_module(handler.__module__)


def _params_of(handler: Any) -> dict[tuple[str, str], dict[str, str]]:
    return getattr(_module(handler), "PARAMS", {})


def problems(app: web.Application) -> list[str]:
    """What keeps the description complete and true, one sentence per problem."""
    out = []
    ops = operations(app)
    known = {(m, p) for m, p, _ in ops}
    modules = {}
    for method, pattern, handler in ops:
        modules[handler.__module__] = _module(handler)
        if not inspect.getdoc(handler):
            out.append(
                f"{method} {pattern} has no description: give its handler {handler.__module__}.{handler.__name__}"
                " a docstring (first line: what it does; then the body's fields and what it returns)"
            )
    for name, module in sorted(modules.items()):
        for method, pattern in getattr(module, "PARAMS", {}):
            if (method, pattern) not in known:
                out.append(
                    f"{name}.PARAMS documents {method} {pattern}, which the app does not serve:"
                    " fix the key or remove the entry"
                )
    return out


def build(app: web.Application, version: str = "1") -> dict[str, Any]:
    """The OpenAPI document of `app`'s routes."""
    paths: dict[str, dict[str, Any]] = {}
    for method, pattern, handler in operations(app):
        doc = inspect.getdoc(handler) or ""
        summary, _, rest = doc.partition("\n")
        key = (method, pattern)
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in _PATH_PARAM.findall(pattern)
        ]
        for name, text in _params_of(handler).get(key, {}).items():
            params.append(
                {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
            )
        role = None if (method, pattern) in OPEN_ROUTES else required_role(method, pattern).label
        op: dict[str, Any] = {
            "summary": summary.strip(),
            "description": rest.strip(),
            "operationId": f"{handler.__module__.rsplit('.', 1)[-1]}.{handler.__name__}",
            "tags": [handler.__module__.rsplit(".", 1)[-1]],
            "parameters": params,
            "responses": {
                "200": {"description": "success (JSON, or an SSE stream for /stream routes)"},
                "4XX": {"$ref": "#/components/responses/Error"},
                "5XX": {"$ref": "#/components/responses/Error"},
            },
            "x-required-role": role or "none",
        }
        if role is not None:
            op["security"] = [{"bearer": []}]
        paths.setdefault(_PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", pattern), {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Build.DDN.RAG gateway",
            "version": version,
            "description": "The HTTP API of the gateway: ask, search, upload and ingest, benchmark storage "
            'backends, browse the bucket. Every error is {"error": {status, reason, message}}. With API keys '
            "configured, send `Authorization: Bearer <key>`; `x-required-role` names the least role "
            "(reader < writer < admin).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": {
                    "description": "a refusal or failure, for people",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "error": {
                                        "type": "object",
                                        "properties": {
                                            "status": {"type": "integer"},
                                            "reason": {"type": "string"},
                                            "message": {"type": "string"},
                                        },
                                    }
                                },
                            }
                        }
                    },
                }
            },
        },
    }
