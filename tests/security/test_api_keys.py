"""Gateway API keys: held only as SHA-256 digests, a rate limit per key, and rotation of the keys
file without a restart (the gateway over in-process doubles of the services)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from gateway.access import ApiKeys, parse_keys_file
from gateway.state import API_KEYS
from tests.integration.test_gateway_doubles import Doubles, doubles, make_app

__all__ = ["doubles"]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_held_only_as_digests(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    hashed = hashlib.sha256(b"k-hashed-only").hexdigest()
    f.write_text(f"# comment\nk-plain-in-file rps=2 burst=3\nsha256:{hashed}\n")
    keys = ApiKeys(("k-from-env",), str(f))
    held = repr(vars(keys))
    for plain in ("k-from-env", "k-plain-in-file", "k-hashed-only"):
        assert plain not in held
        assert keys.match(plain) is not None
    assert keys.match("k-wrong") is None and keys.match("") is None
    policy = keys.match("k-plain-in-file")
    assert policy is not None and (policy.rps, policy.burst) == (2.0, 3)


def test_malformed_keys_file_lines_are_refused() -> None:
    for bad in ("sha256:abc", "key rps=fast", "key burst=1.5"):
        try:
            parse_keys_file(bad)
        except ValueError as err:
            assert "line 1" in str(err)
        else:
            raise AssertionError(f"{bad!r} was accepted")


async def test_per_key_rate_limit_from_the_keys_file(aiohttp_client, doubles: Doubles, tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("k-slow rps=0.1 burst=2\nk-fast\n")
    client = await aiohttp_client(make_app(doubles, api_keys_file=str(f), rate_limit_rps=100, rate_limit_burst=100))
    slow = [(await client.get("/api/models", headers=_auth("k-slow"))).status for _ in range(3)]
    assert slow == [200, 200, 429]
    fast = [(await client.get("/api/models", headers=_auth("k-fast"))).status for _ in range(10)]
    assert fast == [200] * 10


async def test_keys_rotate_without_a_restart(aiohttp_client, doubles: Doubles, tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("k-old\n")
    app = make_app(doubles, api_keys_file=str(f), api_keys_reload_s=0.1)
    client = await aiohttp_client(app)
    assert (await client.get("/api/models", headers=_auth("k-old"))).status == 200
    assert (await client.get("/api/models", headers=_auth("k-new"))).status == 401
    f.write_text("k-new\n")
    os.utime(f, ns=(f.stat().st_mtime_ns + 1_000_000, f.stat().st_mtime_ns + 1_000_000))
    for _ in range(50):  # bounded: 5 s
        if (await client.get("/api/models", headers=_auth("k-new"))).status == 200:
            break
        await asyncio.sleep(0.1)
    assert (await client.get("/api/models", headers=_auth("k-new"))).status == 200
    assert (await client.get("/api/models", headers=_auth("k-old"))).status == 401  # revoked
    # A broken edit keeps the current keys rather than locking everyone out.
    f.write_text("sha256:nothex\n")
    os.utime(f, ns=(f.stat().st_mtime_ns + 2_000_000, f.stat().st_mtime_ns + 2_000_000))
    await asyncio.sleep(0.4)
    assert (await client.get("/api/models", headers=_auth("k-new"))).status == 200
    assert len(app[API_KEYS]) == 1
