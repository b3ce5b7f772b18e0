"""Every route of the gateway against every role: a key may call a route exactly when its role is
at least the route's (gateway/roles.py); a route missing from the table is a failure here, so a new
route gets a deliberate role. The count of wrong answers is `authz_matrix_violations`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.roles import OPEN_ROUTES, ROUTE_ROLES, Role
from testkit.faults.harness import record
from tests.integration.test_gateway_doubles import Doubles, doubles, make_app

__all__ = ["doubles"]

KEYS = {Role.READER: "k-reader", Role.WRITER: "k-writer", Role.ADMIN: "k-admin"}


def app_routes(cfg: GatewayConfig | None = None) -> set[tuple[str, str]]:
    app = create_app(cfg or GatewayConfig(port=0, auth="open"))
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS") or route.resource is None:
            continue
        canonical = route.resource.canonical
        out.add((route.method, "/static/" if canonical.startswith("/static") else canonical))
    return out


def test_every_route_has_a_role() -> None:
    routes = app_routes()
    missing = sorted(r for r in routes if r not in ROUTE_ROLES and r not in OPEN_ROUTES)
    assert not missing, f"routes with no role in gateway/roles.py: {missing}"
    stale = sorted(r for r in ROUTE_ROLES if r not in routes)
    assert not stale, f"gateway/roles.py names routes the app does not have: {stale}"


def _path(pattern: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", pattern)


async def _status(client: Any, method: str, path: str, key: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    kwargs: dict[str, Any] = {"headers": headers}
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        kwargs["json"] = {}
    async with client.request(method, path, **kwargs) as resp:
        reason = ""
        if resp.status in (401, 403) and resp.content_type == "application/json":
            reason = (await resp.json())["error"].get("reason", "")
        return resp.status, reason  # a stream is closed here, after its status


async def test_role_matrix(aiohttp_client, doubles: Doubles, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("".join(f"{k} role={r.label}\n" for r, k in KEYS.items()))
    client = await aiohttp_client(make_app(doubles, api_keys_file=str(keys_file), rate_limit_rps=0))
    violations: list[str] = []
    cells = 0
    for (method, pattern), need in sorted(ROUTE_ROLES.items()):
        path = _path(pattern)
        status, reason = await _status(client, method, path, None)
        cells += 1
        if status != 401:
            violations.append(f"{method} {path} without a key: {status}")
        for role, key in KEYS.items():
            cells += 1
            status, reason = await _status(client, method, path, key)
            forbidden = status == 403 and reason == "ROLE_FORBIDDEN"
            if role < need and not forbidden:
                violations.append(f"{method} {path} as {role.label} (needs {need.label}): {status}")
            if role >= need and (forbidden or status == 401):
                violations.append(f"{method} {path} as {role.label} refused: {status} {reason}")
    record("authz_matrix", {"authz_matrix_violations": len(violations), "authz_matrix_cells": cells})
    assert not violations, violations
    assert cells == 4 * len(ROUTE_ROLES)


async def test_whoami_says_what_a_key_may_do(aiohttp_client, doubles: Doubles, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("k-reader role=reader\nk-plain\nk-admin role=admin\n")
    client = await aiohttp_client(make_app(doubles, api_keys_file=str(keys_file)))
    me = await (await client.get("/api/whoami", headers={"Authorization": "Bearer k-reader"})).json()
    assert me["auth"] == "keys" and me["role"] == "reader"
    assert me["can"]["ask"] and not me["can"]["upload"] and not me["can"]["admin"]
    assert len(me["key_id"]) == 12 and "k-reader" not in str(me)
    plain = await (await client.get("/api/whoami", headers={"Authorization": "Bearer k-plain"})).json()
    assert plain["role"] == "reader"  # a key without role= gets the default role, reader
    admin = await (await client.get("/api/whoami", headers={"Authorization": "Bearer k-admin"})).json()
    assert all(admin["can"].values())
    open_app = await aiohttp_client(make_app(doubles))
    me = await (await open_app.get("/api/whoami")).json()
    assert me == {"auth": "open", "role": "admin", "key_id": "", "can": {k: True for k in me["can"]}}


async def test_default_role_is_configurable(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles, api_keys=("k-old",), api_keys_default_role="writer"))
    me = await (await client.get("/api/whoami", headers={"Authorization": "Bearer k-old"})).json()
    assert me["role"] == "writer"
    resp = await client.post("/api/cache/purge", headers={"Authorization": "Bearer k-old"})
    assert resp.status == 403
    body = await resp.json()
    assert "needs admin" in body["error"]["message"] and "role=" in body["error"]["message"]


async def test_rag_whoami_prints_the_role(aiohttp_client, doubles: Doubles, tmp_path: Path, capsys) -> None:
    import asyncio

    from cli.main import main

    keys_file = tmp_path / "keys"
    keys_file.write_text("k-writer role=writer\n")
    client = await aiohttp_client(make_app(doubles, api_keys_file=str(keys_file)))
    url = f"http://{client.server.host}:{client.server.port}"
    assert await asyncio.to_thread(main, ["whoami", "--gateway", url, "--api-key", "k-writer"]) == 0
    out = capsys.readouterr().out
    assert "writer" in out and "upload" in out and "admin" not in out.split("may:")[1]
    assert await asyncio.to_thread(main, ["whoami", "--gateway", url, "--api-key", "wrong"]) == 1
    assert "401" in capsys.readouterr().err
