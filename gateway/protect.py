"""Protection for `/api` and `/v1`: optional Bearer API keys, a CORS allowlist, a per-key rate limit.

- API keys: when any are configured, every `/api` and `/v1` request must carry
  `Authorization: Bearer <key>`; `/api/health`, `/healthz`, `/metrics` and the static demo stay
  open (probes and the page itself). Keys are held only as SHA-256 digests (the keys file may hold
  `sha256:<hex>` instead of the key), compared in constant time and never logged. A keys-file line
  may give the key its own limit: `<key or sha256:hex> rps=2 burst=10`. The file is re-read when
  it changes (a rotated Secret), so keys are added and revoked without a restart.
- CORS: only origins in the allowlist get `Access-Control-Allow-Origin`; a preflight from any
  other origin is refused with 403.
- Rate limit: a token bucket per API key (per client address without keys); over it -> 429 with
  `Retry-After`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from .config import GatewayConfig
from .errors import ApiError, Handler, json_error
from .state import API_KEYS, CONFIG, RATE_LIMITER

log = logging.getLogger(__name__)
OPEN_PATHS = frozenset({"/api/health", "/healthz", "/metrics"})
ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"


@dataclass(frozen=True)
class KeyPolicy:
    """One accepted key, by digest, with its own rate limit (None: the gateway's default)."""

    digest: str
    rps: float | None = None
    burst: int | None = None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_keys_file(text: str) -> list[KeyPolicy]:
    """Lines of `<key | sha256:<hex>> [rps=F] [burst=N]`; '#' comments and blank lines skipped."""
    out: list[KeyPolicy] = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        first, opts = parts[0], dict(p.partition("=")[::2] for p in parts[1:])
        if first.startswith("sha256:"):
            digest = first[7:].lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"API keys file line {n}: sha256: needs 64 hex digits")
        else:
            digest = _digest(first)
        try:
            rps = float(opts["rps"]) if "rps" in opts else None
            burst = int(opts["burst"]) if "burst" in opts else None
        except ValueError:
            raise ValueError(f"API keys file line {n}: rps must be a number and burst an integer") from None
        out.append(KeyPolicy(digest, rps, burst))
    return out


class ApiKeys:
    """The accepted keys as SHA-256 digests; `reload()` re-reads the keys file (rotation)."""

    def __init__(self, env_keys: tuple[str, ...] = (), path: str = "") -> None:
        self._env = [KeyPolicy(_digest(k)) for k in env_keys if k]
        self.path = path
        self.mtime_ns = 0
        self._keys: dict[str, KeyPolicy] = {}
        self.reload()

    def reload(self) -> bool:
        """Re-reads the file when it changed; True when the key set was replaced. A malformed or
        missing file keeps the previous keys (logged, without values)."""
        file_keys: list[KeyPolicy] = []
        if self.path:
            try:
                st = os.stat(self.path)
                if st.st_mtime_ns == self.mtime_ns and self._keys:
                    return False
                file_keys = parse_keys_file(Path(self.path).read_text())
                self.mtime_ns = st.st_mtime_ns
            except (OSError, ValueError) as err:
                if self._keys:
                    log.error("API keys file not reloaded; keeping the current keys", extra={"error": str(err)})
                    return False
                raise
        self._keys = {k.digest: k for k in [*self._env, *file_keys]}
        return True

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def match(self, token: str) -> KeyPolicy | None:
        """The key's policy, comparing the token's digest with every stored digest in constant time."""
        want = _digest(token).encode()
        found: KeyPolicy | None = None
        for digest, policy in self._keys.items():
            if hmac.compare_digest(want, digest.encode()):
                found = policy
        return found


def load_api_keys(cfg: GatewayConfig) -> ApiKeys:
    return ApiKeys(cfg.api_keys, cfg.api_keys_file)


async def api_keys_ctx(app: web.Application) -> AsyncIterator[None]:
    """Watches the API keys file (a mounted Secret) and swaps the key set when it changes."""
    keys = app[API_KEYS]
    interval = app[CONFIG].api_keys_reload_s
    task = None
    if keys.path and interval > 0:

        async def watch() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    if await asyncio.to_thread(keys.reload):
                        log.info("API keys reloaded", extra={"keys": len(keys)})
                except Exception:
                    log.exception("API keys reload failed")

        task = asyncio.create_task(watch())
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class RateLimiter:
    """Token buckets keyed by caller; `rps` 0 disables. Holds at most `max_keys` buckets (LRU)."""

    def __init__(self, rps: float, burst: int, max_keys: int = 10_000) -> None:
        self.rps = rps
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None, *, rps: float | None = None, burst: int | None = None) -> float:
        """Takes one token; returns 0 when allowed, else the seconds until one is available.
        `rps`/`burst` override the defaults for this key (a per-key limit)."""
        rps = self.rps if rps is None else rps
        cap = float(self.burst if burst is None else max(1, burst))
        if rps <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (cap, now))
        tokens = min(cap, tokens + (now - last) * rps)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / rps
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def _protected(path: str) -> bool:
    return (path.startswith("/api/") or path.startswith("/v1/")) and path not in OPEN_PATHS


def _bearer(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _cors_headers(request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin", "")
    allowed = request.app[CONFIG].cors_origins
    if origin and (origin in allowed or "*" in allowed):
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin",
        }
    return {}


@web.middleware
async def protect_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    cors = _cors_headers(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not cors:
            return json_error(ApiError(403, "this origin is not in the gateway's CORS allowlist", "CORS_DENIED"))
        return web.Response(
            status=204,
            headers={
                **cors,
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )
    if _protected(request.path):
        keys = request.app[API_KEYS]
        caller = request.remote or "unknown"
        policy: KeyPolicy | None = None
        if keys:
            token = _bearer(request)
            policy = keys.match(token) if token else None
            if policy is None:
                resp = json_error(
                    ApiError(401, "a valid API key is required: send 'Authorization: Bearer <key>'", "UNAUTHENTICATED")
                )
                resp.headers.update({**cors, "WWW-Authenticate": "Bearer"})
                return resp
            caller = "key:" + policy.digest[:16]
        wait = request.app[RATE_LIMITER].take(
            caller, rps=policy.rps if policy else None, burst=policy.burst if policy else None
        )
        if wait > 0:
            resp = json_error(ApiError(429, f"rate limit exceeded; retry in {wait:.1f} s", "RATE_LIMITED"))
            resp.headers.update({**cors, "Retry-After": str(max(1, math.ceil(wait)))})
            return resp
    return await handler(request)


async def cors_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Adds the CORS headers to every response of an allowed origin, streams included (their
    headers go out before the handler returns, so a middleware would be too late)."""
    cors = _cors_headers(request)
    for k, v in cors.items():
        response.headers.setdefault(k, v)
