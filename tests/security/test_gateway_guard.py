"""The gateway's front door: an empty key set never opens the API (finding 1), cross-site and
rebinding requests are refused (4), a CORS wildcard carries no credentials (9), streams per key
are capped and /api/health is rate-limited and names no internal address (8)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gateway.apikeys import ApiKeys, auth_mode
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.state import API_KEYS
from kernel.config import ConfigError, load_env
from testkit.faults.harness import record
from tests.integration.test_gateway_doubles import Doubles, doubles, make_app

__all__ = ["doubles"]

AUTH = {"Authorization": "Bearer k-admin"}


def _bump(f: Path, n: int) -> None:
    os.utime(f, ns=(f.stat().st_mtime_ns + n * 1_000_000, f.stat().st_mtime_ns + n * 1_000_000))


def test_an_empty_keys_file_refuses_to_start(doubles: Doubles, tmp_path: Path) -> None:
    opened = 0
    for text in ("", "# only a comment\n\n"):
        f = tmp_path / "keys"
        f.write_text(text)
        try:
            make_app(doubles, api_keys_file=str(f))
            opened += 1
        except ConfigError as err:
            assert "no key" in str(err) and "DDNRAG_GATEWAY_AUTH=open" in str(err)
    for value in (",", " , "):  # a variable that is set but holds no key, in a pod
        cfg = load_env(GatewayConfig, {"DDNRAG_GATEWAY_API_KEYS": value, "DDNRAG_GATEWAY_HOST": "0.0.0.0"})
        try:
            app = create_app(cfg)
            opened += not app[API_KEYS]
        except ConfigError:
            pass
    record("open_when_keys_configured_start", {"open_when_keys_configured": opened})
    assert opened == 0


def test_open_is_always_explicit() -> None:
    for host in ("127.0.0.1", "localhost", "0.0.0.0"):  # no keys and no setting: refused, loopback too
        with pytest.raises(ConfigError, match="DDNRAG_GATEWAY_AUTH=open"):
            auth_mode(GatewayConfig(host=host))
    assert auth_mode(GatewayConfig(host="127.0.0.1", auth="open")) == "open"
    assert auth_mode(GatewayConfig(host="0.0.0.0", auth="open")) == "open"
    with pytest.raises(ConfigError, match="keys are configured"):
        auth_mode(GatewayConfig(host="0.0.0.0", auth="open", api_keys=("k",)))
    with pytest.raises(ConfigError):
        auth_mode(GatewayConfig(auth="keys"))


async def test_revoking_the_last_key_keeps_the_previous_keys(aiohttp_client, doubles: Doubles, tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("k-admin role=admin\n")
    app = make_app(doubles, api_keys_file=str(f), api_keys_reload_s=0.05)
    client = await aiohttp_client(app)
    assert (await client.get("/api/models")).status == 401
    f.write_text("# every key removed\n")
    _bump(f, 1)
    await asyncio.sleep(0.5)
    no_key = (await client.get("/api/models")).status
    record("open_when_keys_configured_reload", {"open_when_keys_configured": int(no_key != 401)})
    assert no_key == 401  # still closed
    assert (await client.get("/api/models", headers=AUTH)).status == 200  # the previous keys hold
    assert len(app[API_KEYS]) == 1


def test_reload_of_an_empty_file_keeps_keys(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("k1\n")
    keys = ApiKeys((), str(f))
    f.write_text("")
    _bump(f, 1)
    assert keys.reload() is False and keys.match("k1") is not None


async def test_cross_site_simple_requests_are_refused(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))  # no keys: the local default
    purge = "/api/cache/purge?service=all"
    # A form or fetch() from another site: text/plain needs no preflight.
    r = await client.post("/api/rag/query", data="{}", headers={"Content-Type": "text/plain"})
    assert r.status == 415 and (await r.json())["error"]["reason"] == "UNSUPPORTED_MEDIA"
    r = await client.post(purge, headers={"Origin": "https://evil.example"})
    assert r.status == 403 and (await r.json())["error"]["reason"] == "ORIGIN_DENIED"
    form = await client.post(
        "/api/ingestion/jobs",
        data="collection=x",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"},
    )
    assert form.status == 403
    # A GET that runs a benchmark is state-changing too.
    r = await client.get("/api/benchmarks/stream?backends=default", headers={"Origin": "https://evil.example"})
    assert r.status == 403
    # The page itself (same origin) and non-browser callers (no Origin) still work.
    host = f"http://{client.server.host}:{client.server.port}"
    assert (await client.post(purge, headers={"Origin": host})).status == 200
    assert (await client.post(purge)).status == 200
    assert (await client.get("/api/models", headers={"Origin": "https://evil.example"})).status == 200  # reads


async def test_dns_rebinding_host_is_refused_without_keys(aiohttp_client, doubles: Doubles, tmp_path: Path) -> None:
    client = await aiohttp_client(make_app(doubles))
    r = await client.get("/api/documents", headers={"Host": "attacker.example:8080"})
    assert r.status == 403 and (await r.json())["error"]["reason"] == "HOST_DENIED"
    assert (await client.get("/api/documents", headers={"Host": "localhost:8080"})).status == 200
    assert (await client.get("/healthz", headers={"Host": "10.1.2.3:8080"})).status == 200  # probes by pod IP
    named = await aiohttp_client(make_app(doubles, allowed_hosts=("rag.internal",)))
    assert (await named.get("/api/documents", headers={"Host": "rag.internal"})).status == 200
    f = tmp_path / "keys"
    f.write_text("k-admin role=admin\n")
    keyed = await aiohttp_client(make_app(doubles, api_keys_file=str(f)))  # with keys the key decides
    assert (await keyed.get("/api/documents", headers={"Host": "rag.example.com", **AUTH})).status == 200


async def test_cors_wildcard_is_literal_and_without_credentials(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles, cors_origins=("*",)))
    r = await client.get("/api/models", headers={"Origin": "https://any.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in r.headers
    exact = await aiohttp_client(make_app(doubles, cors_origins=("https://app.example",)))
    r = await exact.get("/api/models", headers={"Origin": "https://app.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert r.headers["Access-Control-Allow-Credentials"] == "true"


def _keyed(doubles: Doubles, tmp_path: Path, **overrides: object):
    f = tmp_path / "keys"
    f.write_text("k-admin role=admin\n")
    return make_app(doubles, api_keys_file=str(f), **overrides)


async def test_health_is_rate_limited_and_names_no_address(aiohttp_client, doubles: Doubles, tmp_path: Path) -> None:
    client = await aiohttp_client(_keyed(doubles, tmp_path, health_rate_limit_rps=0.5))
    body = await (await client.get("/api/health")).text()
    for name in ("storage", "retriever", "embedder", "llm_gateway"):
        assert doubles.addr(name) not in body
    assert "127.0.0.1" not in body
    codes = [(await client.get("/api/health")).status for _ in range(25)]
    assert 429 in codes


def test_a_rate_limit_is_on_by_default() -> None:
    cfg = GatewayConfig()
    assert cfg.rate_limit_rps > 0 and cfg.health_rate_limit_rps > 0 and cfg.max_streams_per_key > 0


async def test_streams_per_key_are_capped(aiohttp_client, doubles: Doubles, tmp_path: Path) -> None:
    client = await aiohttp_client(_keyed(doubles, tmp_path, max_streams_per_key=2))
    held = [await client.get("/api/ingestion/stream/all", headers=AUTH) for _ in range(2)]
    assert [r.status for r in held] == [200, 200]
    third = await client.get("/api/ingestion/stream/all", headers=AUTH)
    assert third.status == 429 and (await third.json())["error"]["reason"] == "TOO_MANY_STREAMS"
    held[0].close()
    for _ in range(50):  # the server sees the disconnect
        await asyncio.sleep(0.05)
        r = await client.get("/api/ingestion/stream/all", headers=AUTH)
        if r.status == 200:
            r.close()
            break
    assert r.status == 200
    held[1].close()


async def test_the_local_loopback_stack_is_not_rate_limited(aiohttp_client, doubles: Doubles) -> None:
    """Without keys, on loopback, every caller is the one local user (and the load benchmarks)."""
    client = await aiohttp_client(make_app(doubles, rate_limit_rps=0.1, rate_limit_burst=1, max_streams_per_key=1))
    assert [(await client.get("/api/models")).status for _ in range(5)] == [200] * 5
    streams = [await client.get("/api/ingestion/stream/all") for _ in range(3)]
    assert [r.status for r in streams] == [200] * 3
    for r in streams:
        r.close()
