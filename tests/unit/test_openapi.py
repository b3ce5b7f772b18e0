"""The OpenAPI description matches the real aiohttp routes: every route is described, every
documented route exists, and the served document is valid enough for a renderer."""

from __future__ import annotations

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.openapi import build, operations, problems


def test_every_route_is_documented_and_nothing_documented_is_missing() -> None:
    app = create_app(GatewayConfig(port=0, auth="open"))
    found = problems(app)
    assert not found, "the API description is incomplete (gateway/openapi.py says how):\n" + "\n".join(found)
    spec = build(app)
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    served = {(m, p) for m, p, _ in operations(app)}
    assert documented == served, (
        f"routes served but not in /api/openapi.json: {sorted(served - documented)}; "
        f"documented but not served: {sorted(documented - served)}"
    )
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["summary"], (method, path)
            assert op["x-required-role"] in ("none", "reader", "writer", "admin"), (method, path)
    assert spec["paths"]["/api/objects"]["get"]["x-required-role"] == "admin"
    assert {p["name"] for p in spec["paths"]["/api/objects"]["get"]["parameters"]} >= {"prefix", "page_token"}
    assert spec["paths"]["/api/collections/{name}"]["delete"]["parameters"][0]["in"] == "path"


def test_a_stale_params_entry_is_named() -> None:
    import gateway.routes.objects as objects

    app = create_app(GatewayConfig(port=0, auth="open"))
    objects.PARAMS[("GET", "/api/nowhere")] = {"x": "y"}
    try:
        found = problems(app)
    finally:
        del objects.PARAMS[("GET", "/api/nowhere")]
    assert any("GET /api/nowhere, which the app does not serve" in p for p in found), found
